"""Multi-layer perceptrons, including LeNet-300-100 (LeCun et al. 1998)."""
from __future__ import annotations

import keras


def mlp(input_shape, num_classes, hidden=(300, 100), activation="relu", dtype=None, name="mlp"):
    """Flatten -> Dense(h, activation) for h in hidden -> Dense(num_classes) logits.

    Layers are named hidden_1, hidden_2, ... and logits (stable names for
    `tfgeo.hidden_metric` and --metric=hidden:hidden_1,...)."""
    hidden = tuple(int(h) for h in hidden)
    if any(h <= 0 for h in hidden):
        raise ValueError(f"hidden widths must be > 0, got {hidden}.")
    layers = [keras.Input(tuple(input_shape), dtype=dtype), keras.layers.Flatten(dtype=dtype)]
    layers += [keras.layers.Dense(h, activation=activation, dtype=dtype, name=f"hidden_{k}")
               for k, h in enumerate(hidden, start=1)]
    layers.append(keras.layers.Dense(int(num_classes), dtype=dtype, name="logits"))
    return keras.Sequential(layers, name=name)


def lenet_300_100(input_shape=(28, 28, 1), num_classes=10, dtype=None):
    """LeNet-300-100: 784-300-100-10 with ReLU (266,610 parameters on MNIST)."""
    return mlp(input_shape, num_classes, hidden=(300, 100), dtype=dtype, name="lenet_300_100")

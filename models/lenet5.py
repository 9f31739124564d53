"""LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling, logits out."""
from __future__ import annotations

import keras


def lenet5(input_shape=(28, 28, 1), num_classes=10, activation="relu", dtype=None):
    """conv 6@5x5 - pool - conv 16@5x5 - pool - 120 - 84 - num_classes.

    The original network reads 32x32 images; for 28x28 inputs (MNIST) the
    first convolution uses 'same' padding, which gives the same 5x5x16 feature
    map and so the same 61,706 parameters for 10 classes on 1-channel input.
    """
    first_padding = "same" if tuple(input_shape[:2]) == (28, 28) else "valid"
    return keras.Sequential([
        keras.Input(tuple(input_shape), dtype=dtype),
        keras.layers.Conv2D(6, 5, padding=first_padding, activation=activation, dtype=dtype,
                            name="conv1"),
        keras.layers.MaxPooling2D(2, dtype=dtype),
        keras.layers.Conv2D(16, 5, activation=activation, dtype=dtype, name="conv2"),
        keras.layers.MaxPooling2D(2, dtype=dtype),
        keras.layers.Flatten(dtype=dtype),
        keras.layers.Dense(120, activation=activation, dtype=dtype, name="fc1"),
        keras.layers.Dense(84, activation=activation, dtype=dtype, name="fc2"),
        keras.layers.Dense(int(num_classes), dtype=dtype, name="logits"),
    ], name="lenet5")

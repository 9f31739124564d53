"""What tfgeo accepts as a network and as inputs, checked once with one clear error."""
from __future__ import annotations

import keras
import tensorflow as tf


def check_network(model, argument: str = "model") -> None:
    """Raises unless `model` is a built Keras model with trainable weights and one
    output of logits (tfgeo's metrics and losses assume logits, not probabilities)."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"{argument} must be a keras.Model, got {type(model).__name__}.")
    if not model.built:
        raise ValueError(f"{argument} must be built (call it once or give it an Input).")
    if not model.trainable_variables:
        raise ValueError(f"{argument} has no trainable weights.")
    last = model.layers[-1] if getattr(model, "layers", None) else None
    activation = getattr(last, "activation", None)
    if activation is not None and getattr(activation, "__name__", "") in ("softmax", "sigmoid"):
        raise ValueError(
            f"{argument} ends in a {activation.__name__} activation (layer {last.name!r}); "
            "tfgeo's metrics and losses need logits: remove the final activation.")
    if last is not None and isinstance(last, keras.layers.Softmax):
        raise ValueError(f"{argument} ends in a Softmax layer ({last.name!r}); tfgeo's metrics "
                         "and losses need logits: remove it.")
    outputs = getattr(model, "outputs", None)
    if isinstance(outputs, (list, tuple)) and len(outputs) > 1:
        raise ValueError(f"{argument} has {len(outputs)} outputs; tfgeo needs one output of "
                         "logits: build a model that returns the one to keep.")


def check_inputs(inputs, argument: str = "inputs") -> None:
    """Raises for a batch with no examples (when its size is known): a metric or
    a distance over no inputs is not zero, it is undefined."""
    leaves = tf.nest.flatten(inputs)
    if not leaves:
        raise ValueError(f"{argument} is empty: no tensors.")
    n = getattr(leaves[0], "shape", None)
    if n is not None and len(n) > 0 and n[0] == 0:
        raise ValueError(f"{argument} holds no examples.")

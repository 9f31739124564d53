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
    for layer in _all_layers(model):
        policy = getattr(layer, "dtype_policy", None)
        compute = getattr(policy, "compute_dtype", None)
        if compute in ("float16", "bfloat16"):
            raise ValueError(
                f"{argument} computes in {compute} (layer {layer.name!r}, policy "
                f"{policy.name}); the metric's products, distances and solves lose too much "
                "in half precision: rebuild the model in float32 (keras.config."
                "set_dtype_policy('float32')) and copy the weights in.")
        if isinstance(layer, keras.layers.RNN) and not getattr(layer, "unroll", False):
            raise ValueError(
                f"{argument} has a recurrent layer {layer.name!r} ({type(layer).__name__}) "
                "that runs a while loop, through which forward-mode products cannot pass "
                "inside tf.function: rebuild it with unroll=True (fixed sequence length).")


def check_outputs(outputs, argument: str = "model") -> None:
    """Raises unless `outputs` (a model's outputs on a batch) is one tensor of logits
    [batch, classes] (a model whose class hides its outputs until called)."""
    if isinstance(outputs, (dict, list, tuple)):
        raise ValueError(f"{argument} returns a {type(outputs).__name__} of outputs; tfgeo "
                         "needs one output of logits: return the one to keep.")
    if len(getattr(outputs, "shape", ())) != 2:
        raise ValueError(f"{argument} returns outputs of shape {tuple(outputs.shape)}; tfgeo "
                         "needs logits [batch, classes].")


def _all_layers(model):
    # Nested models and wrappers (Bidirectional) included.
    flatten = getattr(model, "_flatten_layers", None)
    return list(flatten(include_self=False, recursive=True)) if flatten else []


def check_inputs(inputs, argument: str = "inputs", model=None) -> None:
    """Raises for a batch with no examples (when its size is known): a metric or
    a distance over no inputs is not zero, it is undefined. With `model`, also
    checks its outputs on the first example (`check_outputs`): a subclassed
    model shows them only when called."""
    leaves = tf.nest.flatten(inputs)
    if not leaves:
        raise ValueError(f"{argument} is empty: no tensors.")
    n = getattr(leaves[0], "shape", None)
    if n is not None and len(n) > 0 and n[0] == 0:
        raise ValueError(f"{argument} holds no examples.")
    if model is not None:
        output_classes(model, inputs)


def output_classes(model, inputs, argument: str = "model") -> int:
    """The number of logits `model` returns on the first example of `inputs`,
    after `check_outputs` (a subclassed model shows its outputs only when called)."""
    outputs = model(tf.nest.map_structure(lambda t: t[:1], inputs), training=False)
    check_outputs(outputs, argument)
    return int(outputs.shape[-1])

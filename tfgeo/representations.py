"""A network's weighted layers, and their inputs and pre-activations during a call.

Metrics pulled back from hidden layers and Kronecker-factored curvature need,
for each Dense or Conv2D layer l, its input a_l and its pre-activation
z_l = W_l a_l + b_l as tensors of the same forward pass that produces the
outputs (so that forward accumulators and tapes see them). `capture` records
them for any Keras model, functional, sequential or nested, by wrapping each
chosen layer's `call` (inputs) and `activation` (pre-activations) for the
duration of one call, and restoring both afterwards:

    layers = weighted_layers(model)
    with capture(layers) as seen:
        outputs = model(x)
    seen.preactivations["dense"], seen.inputs["dense"]
"""
from __future__ import annotations

import contextlib
from typing import NamedTuple

import keras
import tensorflow as tf

WEIGHTED = (keras.layers.Dense, keras.layers.Conv2D)
#: The name that stands for the model's outputs (logits) in a list of representations.
OUTPUTS = "logits"


class WeightedLayer(NamedTuple):
    name: str
    layer: keras.layers.Layer
    kernel: int  # index of the kernel in model.trainable_variables
    bias: int | None  # index of the bias, or None


def _flat_layers(model):
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.Model):
            yield from _flat_layers(layer)
        else:
            yield layer


def weighted_layers(model: keras.Model) -> list[WeightedLayer]:
    """The model's trainable Dense and Conv2D layers, in layer order, with the
    positions of their kernel and bias among `model.trainable_variables`."""
    index = {id(getattr(v, "value", v)): i for i, v in enumerate(model.trainable_variables)}
    out, seen = [], set()
    for layer in _flat_layers(model):
        if not isinstance(layer, WEIGHTED) or not layer.trainable:
            continue
        if layer.name in seen:
            raise ValueError(f"Two weighted layers are named {layer.name!r}; name them apart.")
        seen.add(layer.name)
        kernel = index[id(layer.kernel.value)]
        bias = index[id(layer.bias.value)] if layer.use_bias else None
        out.append(WeightedLayer(layer.name, layer, kernel, bias))
    if not out:
        raise ValueError(f"{model.name} has no trainable Dense or Conv2D layer.")
    return out


def select(model: keras.Model, names=None) -> list[WeightedLayer]:
    """The weighted layers called `names` (all when None); ValueError names an unknown one."""
    layers = weighted_layers(model)
    if names is None:
        return layers
    by_name = {w.name: w for w in layers}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"Unknown layer(s) {unknown}: the weighted layers of {model.name} are "
                         f"{sorted(by_name)} (and {OUTPUTS!r} for the outputs).")
    return [by_name[n] for n in names]


class Seen(NamedTuple):
    inputs: dict  # name -> the layer's input tensor (at its last call)
    preactivations: dict  # name -> W a + b, before the layer's activation
    calls: dict  # name -> how many times the layer was called (recorded with inputs)


@contextlib.contextmanager
def capture(layers, inputs: bool = True, preactivations: bool = True):
    """Records the inputs and/or pre-activations of `layers` (WeightedLayers)
    during the calls made inside the block; yields a `Seen`."""
    seen = Seen({}, {}, {})
    patched = []
    try:
        for w in layers:
            layer = w.layer
            own_call = "call" in layer.__dict__
            old_call, old_activation = layer.call, layer.activation
            patched.append((layer, own_call, old_call, old_activation))
            if inputs:
                layer.call = _recording_call(old_call, seen.inputs, seen.calls, w.name)
            if preactivations:
                layer.activation = _recording_activation(old_activation, seen.preactivations,
                                                         w.name)
        yield seen
    finally:
        for layer, own_call, old_call, old_activation in reversed(patched):
            if own_call:
                layer.call = old_call
            elif "call" in layer.__dict__:
                del layer.__dict__["call"]
            layer.activation = old_activation


def _recording_call(call, store, calls, name):
    def recording(x, *args, **kwargs):
        store[name] = x
        calls[name] = calls.get(name, 0) + 1
        return call(x, *args, **kwargs)

    return recording


def _recording_activation(activation, store, name):
    def recording(z):
        store[name] = z
        return activation(z)

    return recording


def conv_patches(layer: keras.layers.Conv2D, x: tf.Tensor) -> tf.Tensor:
    """The receptive fields of a Conv2D layer's output locations: [N, H', W', kh*kw*C_in],
    ordered like the kernel reshaped to [kh*kw*C_in, C_out]."""
    if layer.data_format != "channels_last":
        raise ValueError(f"{layer.name}: only channels_last convolutions are supported.")
    if layer.groups != 1:
        raise ValueError(f"{layer.name}: grouped convolutions are not supported.")
    kh, kw = layer.kernel_size
    sh, sw = layer.strides
    dh, dw = layer.dilation_rate
    patches = tf.image.extract_patches(
        x, sizes=[1, kh, kw, 1], strides=[1, sh, sw, 1], rates=[1, dh, dw, 1],
        padding=layer.padding.upper())
    return patches

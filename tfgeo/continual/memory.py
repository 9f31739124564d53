"""A fixed memory of M examples held in a Keras layer's non-trainable variables.

Rehearsal methods (`tfgeo.continual.replay`) and the restoring objective
(`tfgeo.continual.restoring`) keep inputs x~ [M, ...] (an array or a dict of arrays,
e.g. {"x": images, "task": ids}) and stored targets z~ [M, ...] (labels or
logits) inside the Keras object that uses them, so the memory is saved with
its weights in `.keras` files, and draw `b` distinct rows per step with
stateless random ops (the step compiles under XLA).

Integer and boolean arrays keep their dtype; float arrays take `float_dtype`.
A config records only shapes and dtypes (`spec`); `zeros(spec)` rebuilds a
zero-filled memory of those shapes, which loading the weights then fills.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def num_rows(inputs, targets, what: str = "targets") -> int:
    """M, the common leading size of `inputs` (array or dict) and `targets`; raises
    ValueError if they differ or are empty."""
    arrays = inputs.values() if isinstance(inputs, dict) else [inputs]
    sizes = {len(np.asarray(a)) for a in arrays} | {len(np.asarray(targets))}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"memory inputs and {what} must have the same number (> 0) of "
                         f"rows, got sizes {sorted(sizes)}.")
    return sizes.pop()


def store(layer: keras.layers.Layer, inputs, targets, float_dtype, targets_name: str):
    """(inputs, targets) as non-trainable variables of `layer` (`inputs` a dict of
    variables when given a dict)."""

    def variable(value, name):
        value = np.asarray(value)
        dtype = str(value.dtype) if value.dtype.kind in "iub" else float_dtype
        var = layer.add_weight(shape=value.shape, dtype=dtype, initializer="zeros",
                               trainable=False, name=name)
        var.assign(value.astype(dtype))
        return var

    if isinstance(inputs, dict):
        stored = {k: variable(inputs[k], f"memory_{k}") for k in sorted(inputs)}
    else:
        stored = variable(inputs, "memory_inputs")
    return stored, variable(targets, targets_name)


def sample_indices(size: int, batch_size: int, seed_generator) -> tf.Tensor:
    """[min(b, M)] distinct row indices in [0, M), uniformly random (int32)."""
    u = keras.random.uniform((size,), seed=seed_generator)
    return keras.ops.top_k(u, min(batch_size, size))[1]


def gather(inputs, targets, indices):
    """(inputs, targets) of the memory rows `indices`."""
    if isinstance(inputs, dict):
        return {k: tf.gather(v, indices) for k, v in inputs.items()}, tf.gather(targets, indices)
    return tf.gather(inputs, indices), tf.gather(targets, indices)


def to_arrays(values):
    """A variable, or a dict of variables, as numpy arrays."""
    if isinstance(values, dict):
        return {k: keras.ops.convert_to_numpy(v) for k, v in values.items()}
    return keras.ops.convert_to_numpy(values)


def spec(values):
    """{"shape", "dtype"} of a variable, or {name: spec} of a dict of variables."""
    if isinstance(values, dict):
        return {k: spec(v) for k, v in values.items()}
    return {"shape": [int(d) for d in values.shape], "dtype": str(values.dtype)}


def zeros(saved_spec):
    """Zero arrays of the shapes and dtypes in `saved_spec` (`spec`'s output)."""
    if isinstance(saved_spec.get("shape"), list):
        return np.zeros(saved_spec["shape"], saved_spec["dtype"])
    return {k: zeros(v) for k, v in saved_spec.items()}

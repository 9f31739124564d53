"""Arithmetic on weight-space vectors.

A weight-space vector is a list of tensors with the shapes of a model's
trainable variables (one entry per variable). Keeping vectors as lists, never
flattening them, avoids a concat/split copy per Krylov iteration.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

Vector = Sequence[tf.Tensor]


def scalar(value, dtype) -> tf.Tensor:
    """`value` as a scalar of `dtype`, without a float32 detour.

    `tf.cast(0.05, tf.float64)` first makes a float32 constant and so yields
    0.0500000007; a Python number is converted at `dtype` directly instead.
    """
    if isinstance(value, (int, float)):
        return tf.constant(value, dtype=dtype)
    return tf.cast(value, dtype)


def dense(a) -> list[tf.Tensor]:
    """`a` with every entry a dense tensor: a gradient through an Embedding
    lookup arrives as `tf.IndexedSlices`, and weight-space vectors are dense."""
    return [tf.convert_to_tensor(t) for t in a]


def dot(a: Vector, b: Vector) -> tf.Tensor:
    """<a, b> = sum_k sum(a_k * b_k), a scalar."""
    return tf.add_n([tf.reduce_sum(x * y) for x, y in zip(a, b, strict=True)])


def norm(a: Vector) -> tf.Tensor:
    """Euclidean norm ||a||."""
    return tf.sqrt(dot(a, a))


def scale(alpha, a: Vector) -> list[tf.Tensor]:
    """alpha * a."""
    return [alpha * x for x in a]


def axpy(alpha, x: Vector, y: Vector) -> list[tf.Tensor]:
    """alpha * x + y."""
    return [alpha * xi + yi for xi, yi in zip(x, y, strict=True)]


def add(a: Vector, b: Vector) -> list[tf.Tensor]:
    return [x + y for x, y in zip(a, b, strict=True)]


def subtract(a: Vector, b: Vector) -> list[tf.Tensor]:
    return [x - y for x, y in zip(a, b, strict=True)]


def multiply(a: Vector, b: Vector) -> list[tf.Tensor]:
    """Elementwise product (e.g. applying a 0/1 mask)."""
    return [x * y for x, y in zip(a, b, strict=True)]


def zeros_like(a: Vector) -> list[tf.Tensor]:
    return [tf.zeros_like(x) for x in a]


def all_finite(a: Vector) -> tf.Tensor:
    """True iff no entry of any tensor is NaN or Inf (scalar bool)."""
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(x)) for x in a])


def flatten(a: Vector) -> tf.Tensor:
    """Concatenate into one 1-D tensor of length sum_k size(a_k)."""
    return tf.concat([tf.reshape(x, [-1]) for x in a], axis=0)


def unflatten(flat: tf.Tensor, like: Vector) -> list[tf.Tensor]:
    """Inverse of `flatten` with the shapes of `like`."""
    sizes = [int(tf.size(x)) for x in like]
    parts = tf.split(flat, sizes)
    return [tf.reshape(p, tf.shape(x)) for p, x in zip(parts, like)]

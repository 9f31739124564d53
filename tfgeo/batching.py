"""Means over many inputs, computed chunk by chunk so memory stays that of one chunk.

A metric over thousands of calibration or memory inputs is the mean of the
metrics of their chunks (weighted by chunk size): `chunked_mean(fn, inputs,
chunk_size)` evaluates `fn` on equal chunks inside one `tf.while_loop` (one
traced body, any number of chunks) plus, if the size does not divide, one
last smaller chunk, and returns the example-weighted mean of the results.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf


def num_examples(inputs) -> int:
    """The leading dimension of an input batch (an array, a tensor or a dict of them)."""
    first = tf.nest.flatten(inputs)[0]
    n = first.shape[0]
    if n is None:
        raise ValueError("Chunked products need inputs with a static number of examples.")
    return int(n)


def take_rows(inputs, rows):
    """The rows `rows` (indices) of an input batch as NumPy arrays (an array or a
    dict of arrays): a calibration subset, a memory's share of a task."""
    return tf.nest.map_structure(lambda a: np.asarray(a)[rows], inputs)


def _slice(inputs, start, size):
    return tf.nest.map_structure(lambda a: a[start:start + size], inputs)


def chunked_mean(fn, inputs, chunk_size: int | None):
    """sum_k (n_k / N) fn(chunk_k) over chunks of at most `chunk_size` examples.

    `fn(chunk)` returns a tensor or a list of tensors (a mean over the chunk);
    with `chunk_size` None or >= N it is `fn(inputs)`.
    """
    if chunk_size is None:
        return fn(inputs)
    n = num_examples(inputs)
    if chunk_size >= n:
        return fn(inputs)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    inputs = tf.nest.map_structure(tf.convert_to_tensor, inputs)
    full, rest = divmod(n, chunk_size)
    first = fn(_slice(inputs, 0, chunk_size))
    structure = first
    total = tf.nest.flatten(first)

    def body(k, total):
        start = k * chunk_size
        chunk = tf.nest.map_structure(
            lambda a: tf.slice(a, tf.concat([[start], tf.zeros(tf.rank(a) - 1, tf.int32)], 0),
                               tf.concat([[chunk_size], tf.shape(a)[1:]], 0)), inputs)
        part = tf.nest.flatten(fn(chunk))
        return k + 1, [t + p for t, p in zip(total, part)]

    if full > 1:
        _, total = tf.while_loop(lambda k, _: k < full, body, (tf.constant(1), total))
    total = [t * (chunk_size / n) for t in total]
    if rest:
        last = tf.nest.flatten(fn(_slice(inputs, full * chunk_size, rest)))
        total = [t + p * (rest / n) for t, p in zip(total, last)]
    return tf.nest.pack_sequence_as(structure, total)

"""Datasets as `tf.data` pipelines.

`digits`: scikit-learn's bundled handwritten digits (1,797 real 8x8 images,
10 classes), needing no download: the offline default of every runner.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf


class ArraySplit(NamedTuple):
    x: np.ndarray  # [N, ...] float32 inputs
    y: np.ndarray  # [N] int32 labels


class ArrayDataset(NamedTuple):
    train: ArraySplit
    test: ArraySplit
    input_shape: tuple
    num_classes: int
    name: str


def load_digits(test_fraction: float = 0.25, seed: int = 0, flat: bool = True) -> ArrayDataset:
    """scikit-learn digits, scaled to [0, 1], split into train/test with a seeded shuffle.

    Returns inputs of shape [N, 64] (flat) or [N, 8, 8, 1].
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    from sklearn import datasets as sk_datasets  # local: only this loader needs sklearn

    bunch = sk_datasets.load_digits()
    x = (bunch.images / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    x = x.reshape(len(y), 64) if flat else x[..., None]
    n_test = int(round(test_fraction * len(y)))
    return ArrayDataset(
        train=ArraySplit(x[n_test:], y[n_test:]),
        test=ArraySplit(x[:n_test], y[:n_test]),
        input_shape=tuple(x.shape[1:]),
        num_classes=10,
        name="digits",
    )


def to_dataset(
    split: ArraySplit,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    drop_remainder: bool = False,
    repeat: bool = False,
) -> tf.data.Dataset:
    """(x, y) batches from arrays; seeded shuffle, optional static batch shape."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}.")
    ds = tf.data.Dataset.from_tensor_slices((split.x, split.y))
    if shuffle:
        ds = ds.shuffle(len(split.y), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)

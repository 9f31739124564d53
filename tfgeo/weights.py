"""A model's trainable weights: the variables tapes must watch, and their values as arrays.

Weight-space vectors (`tfgeo.vectors`) are lists shaped like
`model.trainable_variables`; these helpers read and write a model's point
in that space.
"""
from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf


def backing_variables(model: keras.Model) -> list[tf.Variable]:
    """The `tf.Variable`s behind `model.trainable_variables`.

    Keras 3 wraps each weight in a `keras.Variable`; tapes and forward
    accumulators must be given the backing `tf.Variable` (`.value`) or they
    do not see the reads the layers make.
    """
    return [getattr(w, "value", w) for w in model.trainable_variables]


def get_trainable(model: keras.Model) -> list[np.ndarray]:
    """The trainable weights as numpy arrays, in `model.trainable_variables` order."""
    return [w.numpy() for w in model.trainable_variables]


def set_trainable(model: keras.Model, weights: Sequence) -> None:
    """Assigns arrays (shaped like `model.trainable_variables`) to the trainable weights."""
    variables = model.trainable_variables
    if len(weights) != len(variables):
        raise ValueError(f"{len(weights)} arrays for {len(variables)} trainable variables.")
    for var, w in zip(variables, weights):
        if tuple(np.shape(w)) != tuple(var.shape):
            raise ValueError(f"An array of shape {tuple(np.shape(w))} for variable {var.path} "
                             f"of shape {tuple(var.shape)}.")
        var.assign(np.asarray(w, dtype=var.dtype))


def shapes(model: keras.Model) -> list[tuple]:
    return [tuple(int(d) for d in w.shape) for w in model.trainable_variables]


def check_vector(model: keras.Model, vector: Sequence) -> None:
    """Raises ValueError unless `vector` is shaped like `model.trainable_variables`."""
    variables = model.trainable_variables
    if len(vector) != len(variables):
        raise ValueError(
            f"Weight-space vector has {len(vector)} tensors but the model has "
            f"{len(variables)} trainable variables.")
    for v, w in zip(vector, variables):
        if tuple(v.shape) != tuple(w.shape):
            raise ValueError(f"Vector entry of shape {tuple(v.shape)} does not match variable "
                             f"{w.path} of shape {tuple(w.shape)}.")


def check_trainable(model: keras.Model, argument: str = "model") -> None:
    """Raises ValueError naming `argument` if the model has no trainable weights."""
    if not model.trainable_variables:
        raise ValueError(f"{argument} has no trainable weights: there is nothing to walk.")

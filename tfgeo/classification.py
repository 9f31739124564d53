"""Scores of a logits classifier: accuracy and mean cross-entropy, at given weights.

Used by the applications' calls (`tfgeo.continual.ContinualLearner.evaluate`,
`tfgeo.connect.Path.evaluate`) and by the experiment harness.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfgeo import weights as weights_lib


def predict_logits(model: keras.Model, x, batch_size: int = 1024) -> np.ndarray:
    """The model's outputs on `x` (an array or a dict of arrays), batch by batch, as float64.

    Calls the model, not `predict` (which retraces for every new model a study
    builds) nor `evaluate` (which resets the model's metric trackers, wiping
    the training logs when called inside `fit`).
    """
    n = len(tf.nest.flatten(x)[0])
    return np.concatenate([
        np.asarray(model(tf.nest.map_structure(lambda a: a[i:i + batch_size], x), training=False))
        for i in range(0, n, batch_size)]).astype(np.float64)


def scores(logits: np.ndarray, y) -> dict:
    """Accuracy and mean cross-entropy of logits [N, C] against integer labels [N]."""
    y = np.asarray(y).astype(np.int64)
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return {
        "accuracy": float(np.mean(np.argmax(logits, axis=1) == y)),
        "loss": float(-np.mean(log_p[np.arange(len(y)), y])),
    }


def evaluate_classifier(model: keras.Model, x, y, batch_size: int = 1024) -> dict:
    """Accuracy and mean cross-entropy of a logits classifier on (x, y)."""
    return scores(predict_logits(model, x, batch_size), y)


def evaluate_weights(model: keras.Model, weights, x, y, batch_size: int = 1024) -> dict:
    """`evaluate_classifier` with all `weights` loaded; restores the old weights."""
    old = model.get_weights()
    model.set_weights(weights)
    try:
        return evaluate_classifier(model, x, y, batch_size)
    finally:
        model.set_weights(old)


def evaluate_weights_trainable(model: keras.Model, weights, x, y, batch_size: int = 1024) -> dict:
    """`evaluate_classifier` with the trainable variables set to `weights`; restores them."""
    old = weights_lib.get_trainable(model)
    weights_lib.set_trainable(model, weights)
    try:
        return evaluate_classifier(model, x, y, batch_size)
    finally:
        weights_lib.set_trainable(model, old)




def logits_at(model: keras.Model, weights, x, batch_size: int = 1024) -> np.ndarray:
    """`predict_logits` with the trainable variables set to `weights`; restores them."""
    old = weights_lib.get_trainable(model)
    weights_lib.set_trainable(model, weights)
    try:
        return predict_logits(model, x, batch_size)
    finally:
        weights_lib.set_trainable(model, old)

"""Evaluating classifiers: accuracy and cross-entropy, at given weights, along a walk."""
from __future__ import annotations

import time

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


class PathRecorder(keras.callbacks.Callback):
    """Records evaluation results and walk diagnostics every `every` steps of a fit.

    Each record: step, wall time, the `GeodesicModel` logs of that batch
    (distance_to_target, path_length, ...) and `evaluate_classifier` on
    (x, y) as eval_accuracy / eval_loss.
    """

    def __init__(self, x, y, every: int = 10, batch_size: int = 1024):
        super().__init__()
        if every <= 0:
            raise ValueError(f"every must be > 0, got {every}.")
        self.x, self.y, self.every, self.batch_size = x, y, int(every), batch_size
        self.records = []
        self._step = 0
        self._start = None

    def _record(self, logs):
        results = evaluate_classifier(self.model, self.x, self.y, self.batch_size)
        entry = {"step": self._step, "seconds": time.time() - self._start}
        entry.update({k: float(v) for k, v in (logs or {}).items()})
        entry.update({f"eval_{k}": float(v) for k, v in results.items()})
        self.records.append(entry)

    def on_train_begin(self, logs=None):
        self._start = time.time()
        if not self.records:
            objective = self.model.objective
            self._record({"distance_to_target": float(objective.distance(self.model.model))}
                         if objective.has_distance else {})

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step % self.every == 0:
            self._record(logs)

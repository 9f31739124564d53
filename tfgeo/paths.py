"""Paths in weight space: straight lines and recording a walk as it happens."""
from __future__ import annotations

import time

import keras
import numpy as np


def interpolate(a, b, t: float) -> list[np.ndarray]:
    """(1 - t) a + t b for lists of arrays (t = 0 gives a, t = 1 gives b)."""
    return [((1.0 - t) * np.asarray(x) + t * np.asarray(y)).astype(np.asarray(x).dtype)
            for x, y in zip(a, b)]


def straight_point_at_distance(start, target, distance: float, start_distance: float):
    """The point on the segment start -> target whose distance to target is
    `distance`, given ||target - start|| = start_distance (masked or not):
    t = 1 - distance / start_distance."""
    t = 1.0 - distance / start_distance if start_distance > 0 else 1.0
    return interpolate(start, target, min(max(t, 0.0), 1.0))


def evaluate_classifier(model: keras.Model, x, y, batch_size=1024) -> dict:
    """Accuracy and mean cross-entropy of a logits classifier on (x, y).

    Calls the model batch by batch, not `evaluate` (which resets the model's
    metric trackers, wiping the training logs when called inside `fit`) nor
    `predict` (which retraces for every new model a study builds). `x` may
    be an array or a dict of arrays.
    """
    import tensorflow as tf

    n = len(y)
    logits = np.concatenate([
        np.asarray(model(tf.nest.map_structure(lambda a: a[i:i + batch_size], x), training=False))
        for i in range(0, n, batch_size)]).astype(np.float64)
    y = np.asarray(y).astype(np.int64)
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return {
        "accuracy": float(np.mean(np.argmax(logits, axis=1) == y)),
        "loss": float(-np.mean(log_p[np.arange(len(y)), y])),
    }


def evaluate_weights(model: keras.Model, weights, x, y, batch_size=1024) -> dict:
    """`evaluate_classifier` with `weights` loaded; restores the old weights."""
    old = model.get_weights()
    model.set_weights(weights)
    try:
        return evaluate_classifier(model, x, y, batch_size)
    finally:
        model.set_weights(old)


def evaluate_weights_trainable(model: keras.Model, weights, x, y, batch_size=1024) -> dict:
    """`evaluate_classifier` with the trainable variables set to `weights`; restores them."""
    old = [w.numpy() for w in model.trainable_variables]
    for var, w in zip(model.trainable_variables, weights):
        var.assign(np.asarray(w))
    try:
        return evaluate_classifier(model, x, y, batch_size)
    finally:
        for var, w in zip(model.trainable_variables, old):
            var.assign(w)


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
            self._record({"distance_to_target": float(self.model.objective.distance(self.model.model))}
                         if self.model.objective.has_distance else {})

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step % self.every == 0:
            self._record(logs)

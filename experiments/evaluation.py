"""Evaluating classifiers along a walk (the scores themselves: `tfgeo.classification`)."""
from __future__ import annotations

import time

import keras

from tfgeo import classification


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
        results = classification.evaluate_classifier(self.model, self.x, self.y, self.batch_size)
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

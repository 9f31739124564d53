"""Keras callbacks for walks: stop at a goal, stop on failures, count steps."""
from __future__ import annotations

import keras
from absl import logging


class StopAtDistance(keras.callbacks.Callback):
    """Stops a `GeodesicModel.fit` once `distance_to_target` <= `tolerance`."""

    def __init__(self, tolerance: float):
        super().__init__()
        if not tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}.")
        self.tolerance = float(tolerance)
        self.stopped_at = None

    def on_train_batch_end(self, batch, logs=None):
        distance = (logs or {}).get("distance_to_target")
        if distance is not None and float(distance) <= self.tolerance:
            self.stopped_at = batch
            self.model.stop_training = True


class StopOnFailedSteps(keras.callbacks.Callback):
    """Stops a `GeodesicModel.fit` after `patience` consecutive failed steps,
    logging why. Failed steps leave the weights unchanged, so the model keeps
    the last good weights."""

    def __init__(self, patience: int = 10):
        super().__init__()
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}.")
        self.patience = int(patience)
        self.stopped_at = None

    def on_train_batch_end(self, batch, logs=None):
        failures = float(self.model.backoff.consecutive_failures.numpy())
        if failures >= self.patience:
            self.stopped_at = batch
            logging.warning(
                "Stopping the walk: %d consecutive failed geodesic steps (conjugate gradient "
                "accepted no iteration or met non-finite values, even with extra damping "
                "%.3g); the weights are the last good ones.", int(failures),
                float(self.model.backoff.extra_damping.numpy()))
            self.model.stop_training = True


class StepCounter(keras.callbacks.Callback):
    """Counts the training steps (batches) a `fit` ran; with `limit`, stops it there."""

    def __init__(self, limit: int | None = None):
        super().__init__()
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}.")
        self.limit = limit
        self.count = 0

    def on_train_batch_end(self, batch, logs=None):
        self.count += 1
        if self.limit is not None and self.count >= self.limit:
            self.model.stop_training = True

"""Connecting two trained networks (application 3): the geodesic walk from A to B.

The geodesic path walks from A with v = w_B - w (`TowardTarget(w_B)`), each
step the least change of function for its length (metric on training
inputs), with the step shortened to the remaining distance near B. Once
||w_B - w|| <= tolerance * ||w_B - w_A|| the walk has reached B's
neighbourhood and a last straight step lands exactly on B. If the walk stops
short (step budget spent, or repeated failed steps), the last leg to B is a
straight segment of unknown quality: `geodesic_path` then samples it with
points spaced like the walk's, so it is evaluated like the rest of the path,
and reports `reached` False.

Scores of a path: its Euclidean length, its length in the metric
(sum over segments of sqrt(<dw, g(w) dw>)) and the loss barrier
max_t L(t) - (L(0) + L(1)) / 2.
"""
from __future__ import annotations

import math
import time

import keras
import numpy as np
import tensorflow as tf

from tfgeo import callbacks as callbacks_lib
from tfgeo import distribute
from tfgeo import geodesic_model
from tfgeo import metric
from tfgeo import objectives
from tfgeo.connect import paths
from tfgeo import weights as weights_lib


def loss_barrier(losses) -> float:
    """max_t L(t) - (L(0) + L(1)) / 2 for losses sampled along a path (endpoints included)."""
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 1 or losses.size < 2:
        raise ValueError(f"need a 1-d sequence of at least 2 losses, got shape {losses.shape}.")
    return float(losses.max() - 0.5 * (losses[0] + losses[-1]))


def lengths(model: keras.Model, points, inputs, output_metric: str = "fisher") -> dict:
    """Euclidean and metric length of the polygon through `points` (trainable
    weights); g(w) is taken at each segment's start on the fixed batch `inputs`."""
    old = weights_lib.get_trainable(model)
    euclid = metric_len = 0.0
    try:
        for p, q in zip(points, points[1:]):
            delta = [(np.asarray(b) - np.asarray(a)).astype(np.asarray(a).dtype)
                     for a, b in zip(p, q)]
            euclid += paths.distance(p, q)
            weights_lib.set_trainable(model, p)
            quad = float(distribute.on_one_replica(
                lambda x, d: metric.metric_quadratic_form(model, x, d, output_metric),
                tf.convert_to_tensor(inputs),
                [tf.convert_to_tensor(d, dtype=v.dtype)
                 for d, v in zip(delta, model.trainable_variables)]))
            metric_len += float(np.sqrt(max(quad, 0.0)))
    finally:
        weights_lib.set_trainable(model, old)
    return {"euclidean_length": euclid, "metric_length": metric_len}


class _Recorder(keras.callbacks.Callback):
    def __init__(self, every):
        super().__init__()
        self.every, self.points, self.steps = every, [], 0

    def on_train_begin(self, logs=None):
        if not self.points:
            self.points.append(weights_lib.get_trainable(self.model.model))

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps % self.every == 0:
            self.points.append(weights_lib.get_trainable(self.model.model))


def geodesic_path(model: keras.Model, target, metric_dataset, step_size: float = 0.05,
                  damping: float = 1e-3, output_metric: str = "fisher",
                  cg_max_iterations: int = 10, tolerance: float = 0.01, max_steps: int = 2000,
                  record_every: int = 10, jit_compile: bool = True, log_every: int = 100,
                  verbose: int = 2) -> dict:
    """Walks `model` from its weights (A) to `target` (B); see the module docstring.

    Returns {"points": [A, ..., B] (every `record_every` steps, the walk's end,
    then B; a straight last leg longer than the walk's spacing is sampled),
    "steps", "reached" (tolerance met), "final_distance" (before the last
    leg), "straight_leg_points" (points added on that leg), "metric_products"
    and "quadratic_forms" (the walk's compute, on the dataset's batches),
    "seconds"}.
    The model ends at B.
    """
    if not 0 <= tolerance < 1 or max_steps < 1 or record_every < 1:
        raise ValueError("need 0 <= tolerance < 1, max_steps >= 1, record_every >= 1.")
    target = [np.asarray(t) for t in target]
    objective = objectives.TowardTarget(target)
    walker = geodesic_model.GeodesicModel(
        model, objective, step_size=step_size, damping=damping, output_metric=output_metric,
        cg_max_iterations=cg_max_iterations, clip_to_distance=True)
    walker.compile(jit_compile=jit_compile)
    start_distance = float(objective.distance(model))
    stop = callbacks_lib.StopAtDistance(tolerance * start_distance)
    recorder = _Recorder(record_every)
    began = time.time()
    geodesic_model.walk(walker, metric_dataset, max_steps, log_every,
                        callbacks=[stop, recorder], verbose=verbose)
    final_distance = float(objective.distance(model))
    reached = final_distance <= tolerance * start_distance
    points = recorder.points
    if recorder.steps % record_every:  # the walk's last point, if not recorded yet
        points.append(weights_lib.get_trainable(model))
    # Sample an unwalked last leg as finely as the walk was sampled.
    spacing = step_size * record_every
    extra = max(0, math.ceil(final_distance / spacing) - 1)
    last = points[-1]
    points.extend(paths.interpolate(last, target, k / (extra + 1)) for k in range(1, extra + 1))
    points.append(target)
    weights_lib.set_trainable(model, target)
    return {"points": points, "steps": recorder.steps, "reached": reached,
            "start_distance": start_distance, "final_distance": final_distance,
            "straight_leg_points": extra,
            "metric_products": float(walker.metric_products.numpy()),
            "quadratic_forms": float(walker.quadratic_forms.numpy()),
            "seconds": time.time() - began}

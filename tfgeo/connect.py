"""Connecting two trained networks (application 3): geodesic and straight paths.

The geodesic path walks from A with v = w_B - w (`TowardTarget(w_B)`), each
step the least change of function for its length (metric on training
inputs), with the step shortened to the remaining distance near B; once
||w_B - w|| <= tolerance * ||w_B - w_A|| (or after max_steps) a last straight
step lands exactly on B. The baseline is the straight segment
(1 - t) w_A + t w_B at as many points.

Per path: test accuracy and loss at every point, Euclidean length, length in
the metric (sum over segments of sqrt(<dw, g(w) dw>), g on a fixed batch),
and the loss barrier max_t L(t) - (L(0) + L(1)) / 2.
"""
from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf

from tfgeo import distribute
from tfgeo import geodesic_model
from tfgeo import metric
from tfgeo import objectives
from tfgeo import paths
from tfgeo import vectors


def loss_barrier(losses) -> float:
    """max_t L(t) - (L(0) + L(1)) / 2 for losses sampled along a path (endpoints included)."""
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 1 or losses.size < 2:
        raise ValueError(f"need a 1-d sequence of at least 2 losses, got shape {losses.shape}.")
    return float(losses.max() - 0.5 * (losses[0] + losses[-1]))


def straight_path(a, b, num_points: int) -> list[list[np.ndarray]]:
    """num_points points of the segment a -> b, endpoints included, equally spaced."""
    if num_points < 2:
        raise ValueError(f"num_points must be >= 2, got {num_points}.")
    return [paths.interpolate(a, b, t) for t in np.linspace(0.0, 1.0, num_points)]


def euclidean_positions(points) -> np.ndarray:
    """Cumulative Euclidean arc length at each point, normalised to [0, 1]."""
    steps = [np.sqrt(sum(float(np.sum((np.asarray(q) - np.asarray(p)) ** 2))
                         for p, q in zip(a, b))) for a, b in zip(points, points[1:])]
    cumulative = np.concatenate([[0.0], np.cumsum(steps)])
    return cumulative / cumulative[-1] if cumulative[-1] > 0 else cumulative


def lengths(model: keras.Model, points, inputs, output_metric: str = "fisher") -> dict:
    """Euclidean and metric length of the polygon through `points` (trainable
    weights); g(w) is taken at each segment's start on the fixed batch `inputs`."""
    old = [w.numpy() for w in model.trainable_variables]
    euclid = metric_len = 0.0
    try:
        for p, q in zip(points, points[1:]):
            delta = [(np.asarray(b) - np.asarray(a)).astype(np.asarray(a).dtype)
                     for a, b in zip(p, q)]
            euclid += float(np.sqrt(sum(np.sum(d ** 2) for d in delta)))
            for var, w in zip(model.trainable_variables, p):
                var.assign(w)
            quad = float(distribute.on_one_replica(
                lambda x, d: metric.metric_quadratic_form(model, x, d, output_metric),
                tf.convert_to_tensor(inputs),
                [tf.convert_to_tensor(d, dtype=v.dtype) for d, v in zip(delta, model.trainable_variables)]))
            metric_len += float(np.sqrt(max(quad, 0.0)))
    finally:
        for var, w in zip(model.trainable_variables, old):
            var.assign(w)
    return {"euclidean_length": euclid, "metric_length": metric_len}


class _Recorder(keras.callbacks.Callback):
    def __init__(self, every):
        super().__init__()
        self.every, self.points, self.steps = every, [], 0

    def on_train_begin(self, logs=None):
        if not self.points:
            self.points.append([w.numpy() for w in self.model.model.trainable_variables])

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps % self.every == 0:
            self.points.append([w.numpy() for w in self.model.model.trainable_variables])


def geodesic_path(model: keras.Model, target, metric_dataset, step_size: float = 0.05,
                  damping: float = 1e-3, output_metric: str = "fisher",
                  cg_max_iterations: int = 10, tolerance: float = 0.01, max_steps: int = 2000,
                  record_every: int = 10, jit_compile: bool = True, log_every: int = 100,
                  verbose: int = 2) -> dict:
    """Walks `model` from its weights (A) to `target` (B); see the module docstring.

    Returns {"points": [A, ..., B] (every `record_every` steps, then B),
    "steps", "reached" (tolerance met before max_steps), "final_distance"
    (before the last straight step), "seconds"}. The model ends at B.
    """
    if not 0 <= tolerance < 1 or max_steps < 1 or record_every < 1:
        raise ValueError("need 0 <= tolerance < 1, max_steps >= 1, record_every >= 1.")
    objective = objectives.TowardTarget([np.asarray(t) for t in target])
    walker = geodesic_model.GeodesicModel(
        model, objective, step_size=step_size, damping=damping, output_metric=output_metric,
        cg_max_iterations=cg_max_iterations, clip_to_distance=True)
    walker.compile(jit_compile=jit_compile)
    start_distance = float(objective.distance(model))
    stop = geodesic_model.StopAtDistance(tolerance * start_distance)
    recorder = _Recorder(record_every)
    began = time.time()
    per_epoch = min(log_every, max_steps)
    walker.fit(metric_dataset, steps_per_epoch=per_epoch, epochs=-(-max_steps // per_epoch),
               callbacks=[stop, recorder, geodesic_model.StopOnFailedSteps(20)], verbose=verbose,
               shuffle=False)
    final_distance = float(objective.distance(model))
    points = recorder.points
    if recorder.steps % record_every:  # the walk's last point, if not recorded yet
        points.append([w.numpy() for w in model.trainable_variables])
    for var, t in zip(model.trainable_variables, target):
        var.assign(np.asarray(t))
    points.append([np.asarray(t) for t in target])
    return {"points": points, "steps": recorder.steps,
            "reached": final_distance <= tolerance * start_distance,
            "start_distance": start_distance, "final_distance": final_distance,
            "seconds": time.time() - began}


def evaluate_path(model: keras.Model, points, x, y, metric_inputs,
                  output_metric: str = "fisher") -> dict:
    """Accuracy/loss at every point, lengths, barrier, normalised positions."""
    scores = [paths.evaluate_weights_trainable(model, p, x, y) for p in points]
    losses = [s["loss"] for s in scores]
    return {
        "position": euclidean_positions(points).tolist(),
        "accuracy": [s["accuracy"] for s in scores],
        "loss": losses,
        "barrier": loss_barrier(losses),
        "max_loss": float(max(losses)),
        "min_accuracy": float(min(s["accuracy"] for s in scores)),
        **lengths(model, points, metric_inputs, output_metric),
        "points": len(points),
    }


def distance(a, b) -> float:
    return float(vectors.norm([np.asarray(y) - np.asarray(x) for x, y in zip(a, b)]))


def save_points(path: str, points) -> str:
    """Saves a path's points (lists of arrays) atomically as one .npz."""
    from tfgeo import results

    arrays = {f"point{k}/{i}": np.asarray(w) for k, p in enumerate(points) for i, w in enumerate(p)}
    return results.write_arrays(path, arrays)


def load_points(path: str) -> list[list[np.ndarray]]:
    """Inverse of `save_points`: the list of points, each a list of arrays."""
    with np.load(path) as npz:
        names = npz.files
        count = 1 + max(int(n.split("/")[0][5:]) for n in names)
        return [[npz[f"point{k}/{i}"] for i in range(sum(1 for n in names if n.startswith(f"point{k}/")))]
                for k in range(count)]

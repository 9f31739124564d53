"""Paths in weight space: points are lists of arrays shaped like a model's trainable weights."""
from __future__ import annotations

import numpy as np


def interpolate(a, b, t: float) -> list[np.ndarray]:
    """(1 - t) a + t b for lists of arrays (t = 0 gives a, t = 1 gives b)."""
    return [((1.0 - t) * np.asarray(x) + t * np.asarray(y)).astype(np.asarray(x).dtype)
            for x, y in zip(a, b)]


def distance(a, b) -> float:
    """Euclidean distance ||b - a|| between two points."""
    return float(np.sqrt(sum(float(np.sum((np.asarray(y, np.float64) - np.asarray(x, np.float64))
                                          ** 2)) for x, y in zip(a, b))))


def straight_point_at_distance(start, target, distance_left: float, start_distance: float):
    """The point on the segment start -> target whose distance to target is
    `distance_left`, given ||target - start|| = start_distance (masked or not):
    t = 1 - distance_left / start_distance."""
    t = 1.0 - distance_left / start_distance if start_distance > 0 else 1.0
    return interpolate(start, target, min(max(t, 0.0), 1.0))


def straight_path(a, b, num_points: int) -> list[list[np.ndarray]]:
    """num_points points of the segment a -> b, endpoints included, equally spaced."""
    if num_points < 2:
        raise ValueError(f"num_points must be >= 2, got {num_points}.")
    return [interpolate(a, b, t) for t in np.linspace(0.0, 1.0, num_points)]


def euclidean_positions(points) -> np.ndarray:
    """Cumulative Euclidean arc length at each point, normalised to [0, 1]."""
    steps = [distance(a, b) for a, b in zip(points, points[1:])]
    cumulative = np.concatenate([[0.0], np.cumsum(steps)])
    return cumulative / cumulative[-1] if cumulative[-1] > 0 else cumulative

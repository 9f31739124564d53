"""Scores of a continual learner (Lopez-Paz & Ranzato 2017) from its accuracy matrix.

R[i, j] is the accuracy on task j after learning tasks 0..i (T x T).
"""
from __future__ import annotations

import numpy as np


def average_accuracy(R) -> float:
    """mean_j R[T-1, j]: accuracy over all tasks after the last one."""
    R = _check_matrix(R)
    return float(R[-1].mean())


def backward_transfer(R) -> float:
    """(1 / (T-1)) sum_{j < T-1} (R[T-1, j] - R[j, j]); 0 for a single task."""
    R = _check_matrix(R)
    T = R.shape[0]
    if T < 2:
        return 0.0
    return float(np.mean([R[-1, j] - R[j, j] for j in range(T - 1)]))


def _check_matrix(R):
    R = np.asarray(R, dtype=np.float64)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] < 1:
        raise ValueError(f"R must be a square T x T matrix, got shape {R.shape}.")
    return R

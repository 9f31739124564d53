"""Magnitude pruning masks and exact projection onto them."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def prunable(weights: Sequence[np.ndarray]) -> list[bool]:
    """Default choice of prunable tensors: kernels (ndim >= 2), not biases."""
    return [np.ndim(w) >= 2 for w in weights]


def magnitude_masks(weights, sparsity: float, which: Sequence[bool] | None = None) -> list[np.ndarray]:
    """0/1 masks keeping the largest-|w| entries, ranked globally over `which`.

    Exactly round(sparsity * n) of the n prunable entries get mask 0 (ties are
    broken by position, so the count is exact); other tensors get all ones.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}.")
    which = prunable(weights) if which is None else list(which)
    if len(which) != len(weights):
        raise ValueError(f"`which` has {len(which)} entries for {len(weights)} tensors.")
    selected = [np.abs(np.asarray(w)).ravel() for w, p in zip(weights, which) if p]
    if not selected:
        raise ValueError("No prunable tensors selected.")
    flat = np.concatenate(selected)
    n_prune = int(round(sparsity * flat.size))
    keep = np.ones(flat.size, dtype=bool)
    keep[np.argsort(flat, kind="stable")[:n_prune]] = False
    masks, offset = [], 0
    for w, p in zip(weights, which):
        if p:
            size = np.size(w)
            masks.append(keep[offset:offset + size].reshape(np.shape(w)).astype(np.asarray(w).dtype))
            offset += size
        else:
            masks.append(np.ones(np.shape(w), dtype=np.asarray(w).dtype))
    return masks


def apply_masks(weights, masks) -> list[np.ndarray]:
    """w * m: exact zeros where the mask is 0."""
    return [np.asarray(w) * m for w, m in zip(weights, masks)]


def sparsity_of(weights, which: Sequence[bool] | None = None) -> float:
    """Fraction of exact zeros among the selected tensors."""
    which = prunable(weights) if which is None else list(which)
    total = sum(np.size(w) for w, p in zip(weights, which) if p)
    zeros = sum(int(np.sum(np.asarray(w) == 0)) for w, p in zip(weights, which) if p)
    return zeros / total

"""Magnitude pruning: masks, exact projection onto them, and sparsity schedules.

Weights are lists of arrays shaped like `model.trainable_variables`. A mask
is a 0/1 array per tensor; `which` (one bool per tensor) says which tensors
may be pruned at all. Masks are exact: `magnitude_masks(w, s)` zeroes
exactly round(s * n) of the n prunable entries, so sparsity is what was asked
for, not approximately so.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

SCOPES = ("global", "layer")


def prunable(weights: Sequence[np.ndarray], biases: bool = False,
             last_layer: bool = True) -> list[bool]:
    """Which tensors may be pruned: kernels (ndim >= 2); 1-d tensors (biases,
    normalisation scales) only if `biases`; the last kernel and the 1-d
    tensors after it (the output layer) only if `last_layer`."""
    which = [np.ndim(w) >= 2 or biases for w in weights]
    if not last_layer:
        kernels = [i for i, w in enumerate(weights) if np.ndim(w) >= 2]
        if kernels:
            for i in range(kernels[-1], len(weights)):
                which[i] = False
    if not any(which):
        raise ValueError("No tensor is prunable with these choices.")
    return which


def _check_sparsity(sparsity):
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}.")


def _keep_largest(magnitudes: np.ndarray, n_prune: int) -> np.ndarray:
    # Stable argsort: ties (e.g. entries already exactly zero) are broken by
    # position, so exactly n_prune entries are dropped.
    keep = np.ones(magnitudes.size, dtype=bool)
    keep[np.argsort(magnitudes, kind="stable")[:n_prune]] = False
    return keep


def magnitude_masks(weights, sparsity: float, which: Sequence[bool] | None = None,
                    scope: str = "global") -> list[np.ndarray]:
    """0/1 masks keeping the largest-|w| entries of the prunable tensors.

    scope='global' ranks all prunable entries together and drops exactly
    round(sparsity * n) of them; scope='layer' drops round(sparsity * n_l) in
    each prunable tensor. Non-prunable tensors get all-ones masks. Entries
    that are already zero rank first, so masks at increasing sparsity are
    nested when computed from projected weights.
    """
    _check_sparsity(sparsity)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}.")
    which = prunable(weights) if which is None else list(which)
    if len(which) != len(weights):
        raise ValueError(f"`which` has {len(which)} entries for {len(weights)} tensors.")
    if not any(which):
        raise ValueError("No prunable tensors selected.")
    masks = [np.ones(np.shape(w), dtype=np.asarray(w).dtype) for w in weights]
    if scope == "layer":
        for i, (w, p) in enumerate(zip(weights, which)):
            if p:
                flat = np.abs(np.asarray(w)).ravel()
                keep = _keep_largest(flat, int(round(sparsity * flat.size)))
                masks[i] = keep.reshape(np.shape(w)).astype(masks[i].dtype)
        return masks
    flat = np.concatenate([np.abs(np.asarray(w)).ravel() for w, p in zip(weights, which) if p])
    keep = _keep_largest(flat, int(round(sparsity * flat.size)))
    offset = 0
    for i, (w, p) in enumerate(zip(weights, which)):
        if p:
            size = np.size(w)
            masks[i] = keep[offset:offset + size].reshape(np.shape(w)).astype(masks[i].dtype)
            offset += size
    return masks


def apply_masks(weights, masks) -> list[np.ndarray]:
    """w * m: exact zeros where the mask is 0."""
    if len(weights) != len(masks):
        raise ValueError(f"{len(masks)} masks for {len(weights)} tensors.")
    return [np.asarray(w) * m for w, m in zip(weights, masks)]


def sparsity_of(weights, which: Sequence[bool] | None = None) -> float:
    """Fraction of exact zeros among the selected tensors."""
    which = prunable(weights) if which is None else list(which)
    total = sum(np.size(w) for w, p in zip(weights, which) if p)
    zeros = sum(int(np.sum(np.asarray(w) == 0)) for w, p in zip(weights, which) if p)
    return zeros / total


def stage_sparsities(final: float, stages: int, initial: float | None = None) -> list[float]:
    """Sparsity targets of a staged schedule, ending exactly at `final`.

    The density (1 - s) shrinks geometrically from 1 - initial to 1 - final,
    so each stage removes the same fraction of the weights still left; by
    default initial = 1 - (1 - final)^(1/stages), the first step of that
    geometric sequence from a dense network.
    """
    _check_sparsity(final)
    if stages < 1:
        raise ValueError(f"stages must be >= 1, got {stages}.")
    if initial is not None:
        _check_sparsity(initial)
        if initial > final:
            raise ValueError(f"initial sparsity {initial} exceeds final {final}.")
    if stages == 1:
        return [float(final)]
    if initial is None:
        initial = 1.0 - (1.0 - final) ** (1.0 / stages)
    densities = np.geomspace(1.0 - initial, 1.0 - final, stages)
    out = [float(1.0 - d) for d in densities]
    out[-1] = float(final)
    return out


def polynomial_decay_sparsity(step: int, initial: float, final: float, begin_step: int,
                              end_step: int, power: float = 3.0) -> float:
    """Zhu & Gupta (2017) gradual-pruning schedule (tfmot's `PolynomialDecay`):

        s_t = s_f + (s_i - s_f) (1 - (t - t_0) / (t_end - t_0))^power

    clamped to s_i before t_0 and s_f after t_end.
    """
    _check_sparsity(initial)
    _check_sparsity(final)
    if end_step < begin_step:
        raise ValueError(f"end_step {end_step} < begin_step {begin_step}.")
    if end_step == begin_step:
        return float(final if step >= end_step else initial)
    progress = (step - begin_step) / (end_step - begin_step)
    if progress <= 0 or progress >= 1:  # exact endpoints, no rounding
        return float(initial if progress <= 0 else final)
    return float(final + (initial - final) * (1.0 - progress) ** power)

"""Magnitude pruning: masks, exact projection onto them, and sparsity schedules.

Weights are lists of arrays shaped like `model.trainable_variables`. A mask
is a 0/1 array per tensor; `which` (one bool per tensor) says which tensors
may be pruned at all. Masks are exact: `magnitude_masks(w, s)` zeroes
exactly round(s * n) of the n prunable entries, so sparsity is what was asked
for, not approximately so.

Two calibration-based choices (unlabelled inputs, Dense/Conv2D kernels; X
the rows of a layer's input, `layerwise.layer_rows`: examples, or patches):
`wanda_masks` (Sun et al. 2023: |W_ij| ||X_i||, per output unit) and
`obs_masks` (SparseGPT, Frantar & Alistarh 2023: OBS saliency with the
sequential OBS update of the weights kept). `layerwise.reconstruct` refits
the kept weights of any of these masks by least squares.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tfgeo.sparsify import layerwise
from tfgeo import representations
from tfgeo import weights as weights_lib

SCOPES = ("global", "layer")


def prunable(weights: Sequence[np.ndarray], biases: bool = False,
             last_layer: bool = True) -> list[bool]:
    """Which tensors may be pruned: kernels (ndim >= 2); 1-d tensors (biases,
    normalisation scales) only if `biases`; the last kernel and the 1-d
    tensors after it (the output layer) only if `last_layer`."""
    return _which([np.ndim(w) >= 2 for w in weights], biases, last_layer)


def _which(kernel: list[bool], biases: bool, last_layer: bool) -> list[bool]:
    """Kernels, other tensors only if `biases`, nothing from the last kernel on
    unless `last_layer`; raises if that leaves nothing."""
    which = [k or biases for k in kernel]
    kernels = [i for i, k in enumerate(kernel) if k]
    if not last_layer and kernels:
        for i in range(kernels[-1], len(kernel)):
            which[i] = False
    if not any(which):
        raise ValueError("No tensor is prunable with these choices.")
    return which


def is_bias(variable) -> bool:
    """Whether a trainable variable is a bias or another per-unit vector (not a
    kernel): decided by its name, not its rank, since MultiHeadAttention's and
    GRU's biases are 2-d (e.g. "query/bias" [heads, dim], "gru_cell/bias" [2, 3u])."""
    name = getattr(variable, "path", None) or getattr(variable, "name", "")
    last = name.split("/")[-1].split(":")[0]
    return "bias" in last or len(variable.shape) < 2


def prunable_variables(model, biases: bool = False, last_layer: bool = True) -> list[bool]:
    """`prunable` for a model's trainable variables, biases told apart by name
    (`is_bias`): kernels always; biases and other per-unit vectors only if
    `biases`; the last kernel and what follows it only if `last_layer`."""
    return _which([not is_bias(v) for v in model.trainable_variables], biases, last_layer)


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
                    scope: str = "global", allocation=None) -> list[np.ndarray]:
    """0/1 masks keeping the largest-|w| entries of the prunable tensors.

    scope='global' ranks all prunable entries together and drops exactly
    round(sparsity * n) of them; scope='layer' drops round(sparsity * n_l) in
    each prunable tensor. Non-prunable tensors get all-ones masks. Entries
    that are already zero rank first, so masks at increasing sparsity are
    nested when computed from projected weights.

    `allocation` (weights of the same shapes, e.g. the dense start) overrides
    `scope`: tensor l drops as many entries n_l as a global ranking of
    `allocation` at `sparsity` would, and they are the n_l smallest |w| of
    `weights` in that tensor. A network whose layers were rescaled since (a
    projection grows the kept weights) then keeps its layer-wise densities;
    the n_l grow with the sparsity, so the masks still nest.
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
    counts = None
    if allocation is not None:
        if [np.shape(a) for a in allocation] != [np.shape(w) for w in weights]:
            raise ValueError("`allocation` must have the shapes of `weights`.")
        ref = magnitude_masks(allocation, sparsity, which, "global")
        counts = [int(np.size(m) - np.count_nonzero(m)) for m in ref]
    elif scope == "layer":
        counts = [int(round(sparsity * np.size(w))) for w in weights]
    if counts is not None:
        for i, (w, p) in enumerate(zip(weights, which)):
            if p:
                flat = np.abs(np.asarray(w)).ravel()
                keep = _keep_largest(flat, counts[i])
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


def _calibration_setup(model, weights, which):
    """(weights, which, {tensor index: WeightedLayer}) for the calibration-based masks."""
    weights = (weights_lib.get_trainable(model) if weights is None
               else layerwise.check_arrays(model, weights, "arrays"))
    kernels = {w.kernel: w for w in representations.weighted_layers(model)}
    which = [i in kernels for i in range(len(weights))] if which is None else list(which)
    if len(which) != len(weights):
        raise ValueError(f"`which` has {len(which)} entries for {len(weights)} tensors.")
    if not any(which):
        raise ValueError("No prunable tensors selected.")
    other = [i for i, p in enumerate(which) if p and i not in kernels]
    if other:
        raise ValueError(f"Tensors {other} are not Dense/Conv2D kernels: calibration-based "
                         "masks prune kernels only.")
    return weights, which, kernels


def wanda_masks(model, inputs, sparsity: float, which: Sequence[bool] | None = None,
                weights=None, chunk_size: int = 512) -> list[np.ndarray]:
    """Wanda (Sun et al. 2023): per output unit, keep the largest |W_ij| ||X_i||_2.

    ||X_i||_2 is the norm of input feature i (Conv2D: patch feature i) over
    all rows of the calibration `inputs`, on the network at `weights`
    (default: the model's own, the dense network). Each output unit (a column
    of the kernel as [fan_in, d_out]) of each prunable kernel loses exactly
    round(sparsity * fan_in) weights (ties broken by position). `which`
    (default: every Dense/Conv2D kernel) may select kernels only; biases and
    other tensors get all-ones masks.
    """
    _check_sparsity(sparsity)
    weights, which, kernels = _calibration_setup(model, weights, which)
    names = [kernels[i].name for i, p in enumerate(which) if p]
    norms = layerwise.input_grams(model, inputs, weights, names, diagonal=True,
                                  chunk_size=chunk_size)
    masks = [np.ones(np.shape(w), dtype=np.asarray(w).dtype) for w in weights]
    for i, p in enumerate(which):
        if not p:
            continue
        kernel = np.reshape(np.asarray(weights[i]), (-1, np.shape(weights[i])[-1]))
        scores = np.abs(kernel) * np.sqrt(norms[kernels[i].name])[:, None]
        n_prune = int(round(sparsity * kernel.shape[0]))
        keep = np.stack([_keep_largest(scores[:, j], n_prune) for j in range(kernel.shape[1])],
                        axis=1)
        masks[i] = keep.reshape(np.shape(weights[i])).astype(masks[i].dtype)
    return masks


def obs_masks(model, inputs, sparsity: float, which: Sequence[bool] | None = None,
              weights=None, damp: float = 0.01, block_size: int = 128,
              sequential: bool = True, chunk_size: int = 512):
    """SparseGPT (Frantar & Alistarh 2023) without lazy batching: OBS masks and updates.

    Per prunable kernel, as W = kernel^T [d_out, d] (rows: output units,
    columns: input features / patch features), with
    H = X^T X + damp * mean(diag(X^T X)) I over the calibration rows X and U
    the upper Cholesky factor of H^{-1} (U_jj^2 = [H_F^{-1}]_jj, F = the
    columns j, j+1, ... not yet processed), the columns are processed left
    to right in blocks of `block_size`:

    * at a block's start, the mask of its columns drops the entries with the
      smallest OBS saliency w_rj^2 / U_jj^2 (current, updated weights); block
      k drops round(s c_k d_out) - round(s c_{k-1} d_out) entries, c_k the
      columns up to its end, so the kernel loses exactly round(s * d * d_out);
    * column by column, q = w_:j * mask_:j, and the remaining columns take the
      OBS update W[:, j:] -= ((w_:j - q) / U_jj) U[j, j:], which is the
      least-squares-optimal change of the columns not yet processed for
      fixing column j at q; then W[:, j] = q (pruned entries exactly 0).

    With `sequential`, layer l's X comes from the network whose earlier
    layers are already pruned and updated (as in SparseGPT), else from the
    network at `weights`. Biases and non-selected tensors are unchanged.
    `which` as in `wanda_masks`.

    Returns (masks, new weights), both shaped like `weights`.
    """
    _check_sparsity(sparsity)
    if damp < 0:
        raise ValueError(f"damp must be >= 0, got {damp}.")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}.")
    weights, which, kernels = _calibration_setup(model, weights, which)
    new = [np.array(w, copy=True) for w in weights]
    masks = [np.ones(np.shape(w), dtype=np.asarray(w).dtype) for w in weights]
    chosen = [i for i, p in enumerate(which) if p]
    grams = None
    if not sequential:
        grams = layerwise.input_grams(model, inputs, weights, [kernels[i].name for i in chosen],
                                      chunk_size=chunk_size)
    for i in chosen:
        name = kernels[i].name
        gram = (grams[name] if grams is not None else
                layerwise.input_grams(model, inputs, new, [name], chunk_size=chunk_size)[name])
        shape = np.shape(weights[i])
        w = np.reshape(np.asarray(weights[i], np.float64), (-1, shape[-1])).T
        updated, keep = _sparsegpt(w, gram, sparsity, damp, block_size)
        new[i] = updated.T.reshape(shape).astype(np.asarray(weights[i]).dtype)
        masks[i] = keep.T.reshape(shape).astype(masks[i].dtype)
    return masks, new


def _sparsegpt(w: np.ndarray, gram: np.ndarray, sparsity: float, damp: float, block_size: int):
    """One layer of `obs_masks`: W [d_out, d], X^T X [d, d] -> (updated W, keep [d_out, d])."""
    w = w.copy()
    d_out, d = w.shape
    mean = float(np.mean(np.diag(gram)))
    h = gram + damp * mean * np.eye(d) if mean > 0 else np.eye(d)
    h = h + (np.diag(h) == 0) * np.eye(d)  # dead inputs (with damp = 0)
    chol = np.linalg.cholesky(h)  # H = L L^T
    inv_l = np.linalg.solve(chol, np.eye(d))
    u = np.linalg.cholesky(inv_l.T @ inv_l).T  # H^{-1} = U^T U, U upper
    keep = np.ones((d_out, d), dtype=bool)
    total, done = int(round(sparsity * d * d_out)), 0  # pruned so far
    for start in range(0, d, block_size):
        end = min(start + block_size, d)
        # Entries pruned once this block is done: about s * (entries so far),
        # within what this block can give and what the rest can still take.
        size = (end - start) * d_out
        target = int(np.clip(round(sparsity * end * d_out),
                             max(done, total - (d - end) * d_out), done + size))
        count, done = target - done, target
        saliency = w[:, start:end] ** 2 / np.diag(u)[start:end][None, :] ** 2
        keep[:, start:end] = _keep_largest(saliency.ravel(), count).reshape(d_out, end - start)
        for j in range(start, end):
            q = w[:, j] * keep[:, j]
            err = (w[:, j] - q) / u[j, j]
            w[:, j:] -= err[:, None] * u[j, j:][None, :]
            w[:, j] = q
    return w, keep

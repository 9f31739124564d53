"""Layer-wise least-squares reconstruction of a pruned network from unlabelled inputs.

The label-free peer of geodesic pruning: given 0/1 kernel masks, refit each
weighted layer's kept weights so that its pre-activation matches the dense
network's on calibration inputs (as in OBC/SparseGPT-style "layer-wise
reconstruction", here solved exactly). For weighted layer l (in
`representations.weighted_layers` order) write

    X_l : [M, d]      the *pruned* network's input to layer l (layers < l
                      already pruned and refit: the pruned network's own
                      inputs), one row per example (Dense) or per output
                      location (Conv2D: `representations.conv_patches`,
                      d = kh*kw*C_in),
    Y_l : [M, d_out]  the *dense* network's pre-activation W a + b of layer l,

and X~ = [X, 1]. For every output unit j (a Dense column, a Conv2D output
channel) with kept rows K_j = {i : mask_ij = 1} the new weights are

    [w_Kj; b_j] = argmin ||X~_[Kj, bias] [w; b] - Y_j||^2 + lambda ||w - w0_Kj||^2,
    lambda = ridge * mean(diag(X^T X)),

with w0 the masked (one-shot) weights: the ridge pulls toward them, not toward
zero, so a weight whose input never fires on the calibration set (a blank
MNIST border pixel) keeps its trained value instead of being zeroed, and a
pruned network has exactly as many zeros as its mask asks for

the pruned weights stay exactly zero, and with `refit_bias=False` the bias
keeps its value (the target becomes Y_j - b_j). Only the Gram matrix
G~ = X~^T X~ ([d+1, d+1]), C~ = X~^T Y ([d+1, d_out]) and sum(Y^2) are
accumulated, chunk by chunk over the calibration set, so memory is that of
one chunk plus O(d^2 + d d_out) (under MultiWorkerMirroredStrategy each
worker sums its share of the inputs and one all-reduce totals them,
`distribute.worker_rows`); each unit then solves the principal
subsystem G~[K, K] beta = C~[K, j] (units with identical kept sets share one
solve). The reconstruction error of any weights W~ = [W; b] follows from the
same statistics: ||X~ W~_j - Y_j||^2 = sum(Y_j^2) - 2 W~_j^T C~_j + W~_j^T G~ W~_j.

Forward passes use `model.stateless_call`, so the model's variables are
only written when asked (`apply=True`). A layer called more than once in a
forward pass is seen at its last call.
"""
from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfgeo import batching
from tfgeo import distribute
from tfgeo import representations
from tfgeo import weights as weights_lib


def layer_rows(w: representations.WeightedLayer, x) -> tf.Tensor:
    """The regressor rows of a weighted layer's input x: [M, d_in].

    Dense: x reshaped to [-1, d_in] (one row per example); Conv2D: the
    receptive fields at every output location, [N*H'*W', kh*kw*C_in], ordered
    like the kernel reshaped to [kh*kw*C_in, C_out].
    """
    if isinstance(w.layer, keras.layers.Conv2D):
        x = representations.conv_patches(w.layer, x)
    return tf.reshape(x, [-1, tf.shape(x)[-1]])


def _num_examples(inputs) -> int:
    n = batching.num_examples(inputs)
    if n == 0:
        raise ValueError("The calibration inputs are empty.")
    return n


def _chunks(inputs, chunk_size: int):
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    n = _num_examples(inputs)
    for start in range(0, n, chunk_size):
        yield tf.nest.map_structure(lambda a: a[start:start + chunk_size], inputs)


class _Forward:
    """Forward passes of `model` at given trainable values, recording chosen layers."""

    def __init__(self, model: keras.Model):
        self.model = model
        self.non_trainable = [v.value for v in model.non_trainable_variables]
        self.dtypes = [v.dtype for v in model.trainable_variables]

    def values(self, weights):
        return [tf.convert_to_tensor(np.asarray(w), dtype=d) for w, d in zip(weights, self.dtypes)]

    def __call__(self, values, x, layers, inputs=True, preactivations=True):
        with representations.capture(layers, inputs, preactivations) as seen:
            self.model.stateless_call(values, self.non_trainable, x, training=False)
        return seen


def check_arrays(model: keras.Model, arrays, what: str = "arrays") -> list[np.ndarray]:
    """`arrays` as numpy arrays; ValueError (naming them `what`) unless shaped like
    `model.trainable_variables`."""
    variables = model.trainable_variables
    if len(arrays) != len(variables):
        raise ValueError(f"{len(arrays)} {what} for {len(variables)} trainable variables.")
    out = []
    for a, v in zip(arrays, variables):
        a = np.asarray(a)
        if tuple(a.shape) != tuple(v.shape):
            raise ValueError(f"{what}: an array of shape {tuple(a.shape)} for variable "
                             f"{v.path} of shape {tuple(v.shape)}.")
        out.append(a)
    return out


def check_masks(model: keras.Model, masks) -> list[np.ndarray]:
    """`masks` as arrays; ValueError unless shaped like the trainable variables and 0/1."""
    masks = check_arrays(model, masks, "masks")
    for m, v in zip(masks, model.trainable_variables):
        if not np.all((m == 0) | (m == 1)):
            raise ValueError(f"The mask of {v.path} is not binary (0/1).")
    return masks


def input_grams(model: keras.Model, inputs, weights=None, names: Sequence[str] | None = None,
                diagonal: bool = False, chunk_size: int = 512) -> dict:
    """X^T X of the chosen weighted layers' input rows (`layer_rows`) over all of
    `inputs`, in float64: {name: [d_in, d_in]}, or {name: [d_in]} (the
    squared feature norms ||X_i||^2) with `diagonal`. Sums, not means.

    The network runs at `weights` (default: the model's own).
    """
    layers = representations.select(model, names)
    forward = _Forward(model)
    values = forward.values(weights_lib.get_trainable(model) if weights is None
                            else check_arrays(model, weights, "arrays"))
    out = {}
    for chunk in _chunks(distribute.worker_rows(inputs), chunk_size):
        seen = forward(values, chunk, layers, preactivations=False)
        for w in layers:
            x = layer_rows(w, seen.inputs[w.name]).numpy().astype(np.float64)
            part = np.sum(x * x, axis=0) if diagonal else x.T @ x
            out[w.name] = part if w.name not in out else out[w.name] + part
    return dict(zip(out, distribute.sum_over_workers(list(out.values()))))


def _matrix(kernel: np.ndarray) -> np.ndarray:
    """A kernel as [fan_in, d_out] (Conv2D: [kh*kw*C_in, C_out])."""
    return np.reshape(kernel, (-1, np.shape(kernel)[-1]))


def _relative(err: np.ndarray, yy: np.ndarray) -> float:
    err, total = max(float(np.sum(err)), 0.0), float(np.sum(yy))
    if total == 0.0:
        return 0.0 if err == 0.0 else float("inf")
    return err / total


def _solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    try:
        x = np.linalg.solve(a, b)
        if np.all(np.isfinite(x)):
            return x
    except np.linalg.LinAlgError:
        pass
    return np.linalg.lstsq(a, b, rcond=None)[0]  # singular (ridge = 0): minimum-norm


def reconstruct(model: keras.Model, masks, inputs, ridge: float = 1e-4, refit_bias: bool = True,
                chunk_size: int = 512, apply: bool = False):
    """Prunes `model` with `masks` and refits each layer by least squares (module docstring).

    Args:
      model: a built Keras model (functional, sequential or nested) whose
        Dense/Conv2D layers are refit; its current weights are the dense network.
      masks: 0/1 arrays shaped like `model.trainable_variables` (ones: kept).
        Kernel zeros are pruned; a bias whose mask is 0 stays exactly 0.
        Other trainable variables (e.g. BatchNormalization) are returned as
        w * mask (unchanged with the usual all-ones masks).
      inputs: unlabelled calibration inputs, an array [N, ...] or a dict of them.
      ridge: lambda = ridge * mean(diag(X^T X)) on the kernel rows (not the bias).
      refit_bias: also solve for the biases (else they keep their values).
      chunk_size: examples per forward pass.
      apply: assign the new weights to the model.

    Returns:
      (weights, report): the new weights (arrays shaped like the trainable
      variables, pruned entries exactly 0) and {layer name: {"before",
      "masked", "after"}}, relative squared errors ||Y - Y_hat||^2 / ||Y||^2
      of the layer's pre-activation against the dense network's over the
      calibration set: "before" of the one-shot network (all masks applied,
      no refit, its own inputs), "masked" of the masked weights on the
      reconstructed network's inputs X_l (the least-squares objective at its
      start; "after" <= "masked" up to the ridge), "after" of the
      reconstructed network.
    """
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}.")
    _num_examples(inputs)
    masks = check_masks(model, masks)
    layers = representations.weighted_layers(model)
    dense = weights_lib.get_trainable(model)
    one_shot = [(w * m).astype(w.dtype) for w, m in zip(dense, masks)]
    forward = _Forward(model)
    _warn_unrefit(model, layers, masks, forward, forward.values(dense), inputs)
    report = {w.name: {} for w in layers}

    # "before": the one-shot network against the dense one, every layer in one pass.
    dense_values, one_shot_values = forward.values(dense), forward.values(one_shot)
    err = {w.name: 0.0 for w in layers}
    norm = {w.name: 0.0 for w in layers}
    for chunk in _chunks(distribute.worker_rows(inputs), chunk_size):
        target = forward(dense_values, chunk, layers, inputs=False).preactivations
        pruned = forward(one_shot_values, chunk, layers, inputs=False).preactivations
        for w in layers:
            y = target[w.name].numpy().astype(np.float64)
            err[w.name] += float(np.sum((y - pruned[w.name].numpy()) ** 2))
            norm[w.name] += float(np.sum(y ** 2))
    totals = distribute.sum_over_workers([np.array([err[w.name], norm[w.name]]) for w in layers])
    for w, (e, n) in zip(layers, totals):
        report[w.name]["before"] = _relative(float(e), float(n))

    new = [np.array(w, copy=True) for w in one_shot]
    for w in layers:
        current = forward.values(new)  # layers < l refit, the rest one-shot
        gram, cross, yy = _statistics(forward, dense_values, current, w, inputs, chunk_size)
        kernel_mask = _matrix(masks[w.kernel])
        d = kernel_mask.shape[0]
        masked_tilde = _tilde(_matrix(one_shot[w.kernel]),
                              None if w.bias is None else one_shot[w.bias])
        report[w.name]["masked"] = _relative(_errors(masked_tilde, gram, cross, yy), yy)
        bias_free = np.zeros(kernel_mask.shape[1], bool)
        if w.bias is not None and refit_bias:
            bias_free = masks[w.bias] == 1
        fixed_bias = masked_tilde[d]
        solved = _refit(gram, cross, kernel_mask, bias_free, fixed_bias, ridge,
                        masked_tilde[:d])
        report[w.name]["after"] = _relative(_errors(solved, gram, cross, yy), yy)
        new[w.kernel] = solved[:d].reshape(np.shape(dense[w.kernel])).astype(dense[w.kernel].dtype)
        if w.bias is not None:
            new[w.bias] = solved[d].astype(dense[w.bias].dtype)
    if apply:
        weights_lib.set_trainable(model, new)
    return new, report


def _warn_unrefit(model, layers, masks, forward, values, inputs) -> None:
    """Logs one warning naming the layers this reconstruction cannot do justice
    to: pruned tensors outside Dense/Conv2D layers (depthwise, separable,
    embedding, attention, recurrent kernels), which keep their masked values,
    and shared layers, which are refit to their last call only.

    A layer is shared when one forward pass (of the first input) calls it more
    than once. Keras's node count cannot tell: a loaded `Sequential` model
    holds one inbound node per layer for every rebuild of its graph (23 on the
    first conv of a loaded VGG11), and a layer reused in another model has
    nodes there too."""
    refit = {i for w in layers for i in (w.kernel, w.bias) if i is not None}
    variables = model.trainable_variables
    masked = sorted({v.path.rsplit("/", 1)[0] for i, (v, m) in enumerate(zip(variables, masks))
                     if i not in refit and not np.all(m)})
    calls = forward(values, next(_chunks(inputs, 1)), layers,
                    preactivations=False).calls
    shared = [w.name for w in layers if calls.get(w.name, 0) > 1]
    if masked:
        logging.warning("layerwise.reconstruct refits Dense and Conv2D layers only; %s keep "
                        "their masked (one-shot) values.", ", ".join(masked))
    if shared:
        logging.warning("layerwise.reconstruct refits the shared layer(s) %s to their last "
                        "call in the forward pass only.", ", ".join(shared))


def _tilde(kernel: np.ndarray, bias) -> np.ndarray:
    """[W; b] as [d+1, d_out] float64 (b = 0 without a bias)."""
    bias = np.zeros(kernel.shape[1]) if bias is None else np.asarray(bias)
    return np.concatenate([kernel, bias[None, :]], axis=0).astype(np.float64)


def _statistics(forward, dense_values, current_values, w, inputs, chunk_size):
    """G~ = X~^T X~ [d+1, d+1], C~ = X~^T Y [d+1, d_out], sum(Y^2) [d_out] for layer w:
    X from the network at `current_values`, Y from the dense network."""
    gram = cross = yy = None
    for chunk in _chunks(distribute.worker_rows(inputs), chunk_size):
        y = forward(dense_values, chunk, [w], inputs=False).preactivations[w.name]
        x = forward(current_values, chunk, [w], preactivations=False).inputs[w.name]
        x = layer_rows(w, x).numpy().astype(np.float64)
        y = tf.reshape(y, [-1, tf.shape(y)[-1]]).numpy().astype(np.float64)
        x = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
        parts = (x.T @ x, x.T @ y, np.sum(y * y, axis=0))
        if gram is None:
            gram, cross, yy = parts
        else:
            gram, cross, yy = gram + parts[0], cross + parts[1], yy + parts[2]
    # Under MultiWorkerMirroredStrategy each worker summed its share of the rows.
    gram, cross, yy = distribute.sum_over_workers([gram, cross, yy])
    return gram, cross, yy


def _errors(tilde, gram, cross, yy) -> np.ndarray:
    """||X~ W~_j - Y_j||^2 per unit j, from the accumulated statistics."""
    return yy - 2.0 * np.sum(tilde * cross, axis=0) + np.sum(tilde * (gram @ tilde), axis=0)


def _refit(gram, cross, kernel_mask, bias_free, fixed_bias, ridge, prior) -> np.ndarray:
    """[W; b] [d+1, d_out] solving each unit's principal subsystem (module docstring);
    prior [d, d_out]: the masked weights the ridge pulls toward."""
    d, d_out = kernel_mask.shape
    lam = ridge * float(np.mean(np.diag(gram)[:d]))
    out = np.zeros((d + 1, d_out))
    out[d] = fixed_bias
    groups = {}
    for j in range(d_out):
        key = (kernel_mask[:, j].astype(bool).tobytes(), bool(bias_free[j]))
        groups.setdefault(key, []).append(j)
    for (kept_bytes, free), units in groups.items():
        kept = np.flatnonzero(np.frombuffer(kept_bytes, dtype=bool))
        rows = np.concatenate([kept, [d]]) if free else kept
        if rows.size == 0:
            continue
        a = gram[np.ix_(rows, rows)].copy()
        a[np.arange(kept.size), np.arange(kept.size)] += lam
        b = cross[np.ix_(rows, units)].copy()
        b[:kept.size] += lam * prior[np.ix_(kept, units)]
        if not free:  # target Y_j - b_j: C~ - b_j X^T 1
            b = b - gram[rows, d][:, None] * fixed_bias[units][None, :]
        out[np.ix_(rows, units)] = _solve(a, b)
    return out

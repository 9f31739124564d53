"""Output-space distances between two networks' predictions, and FIP's first-order
continual-learning model.

`bhattacharyya_distance` between rows of two logits matrices [N, C]:

    D(p, q) = (1/N) sum_i -log sum_k sqrt(p_ik q_ik + eps),
    p = softmax(p_logits), q = softmax(q_logits),

the form of Guruprasad & Thomson's FIP code (eps inside the square root,
so the gradient is finite where p_ik q_ik = 0). It is symmetric and, for
eps = 0, zero exactly when p = q; with eps > 0, D(p, p) lies in
[-log(1 + C sqrt(eps)), 0] (about -C sqrt(eps) when probabilities vanish,
below 1e-6 in magnitude when every p_ik >> sqrt(eps)).

`FIPModel` is the authors' first-order algorithm (public PyTorch code,
FlexibleMachineLearning): each step minimises

    L = CE(y, f_w(x)) + alpha * D(f_w(x~), f_{w_prev}(x~))

on a new-task batch (x, y) and a batch x~ of earlier-task inputs (no
labels), w_prev being the network before this task. The previous network's
outputs on the memory are precomputed (`replay.network_logits`), which is
the same memory mechanism as DER (`tfgeo.continual.replay`) with D in place of the
squared error; precomputing equals evaluating w_prev live when the network
is deterministic in inference mode (no dropout or batch statistics).

Differences from the authors' code: they sum D's rows over the memory batch
(alpha = b with the mean here) and use eps = max(1e-10, 1e-3 min q) from
the previous network on the new batch; they train with SGD with momentum 0.9
(lr 1e-3 on MNIST -> Fashion-MNIST; a warm-up cosine schedule, weight decay
and gradient clipping for ViT), which here is the caller's `compile` choice,
e.g. `keras.optimizers.SGD(1e-3, momentum=0.9)`.
"""
from __future__ import annotations

import keras
import numpy as np

from tfgeo.continual import replay


def bhattacharyya_distance(p_logits, q_logits, eps: float = 1e-8):
    """Mean over rows of -log sum_k sqrt(p_k q_k + eps), p, q the softmax of the
    [N, C] logits (a scalar tensor)."""
    p = keras.ops.softmax(p_logits, axis=-1)
    q = keras.ops.softmax(keras.ops.cast(q_logits, p.dtype), axis=-1)
    coefficient = keras.ops.sum(keras.ops.sqrt(p * q + eps), axis=-1)
    return keras.ops.mean(-keras.ops.log(coefficient))


@keras.saving.register_keras_serializable(package="tfgeo")
class FIPModel(replay.MemoryModel):
    """`model` trained on the compiled loss plus alpha times the Bhattacharyya
    distance to the previous network's outputs on a memory batch.

    Args:
      model: a built Keras model that outputs logits (w = w_prev at the start).
      memory_inputs: an array or dict of arrays [M, ...] of earlier-task inputs.
      memory_logits: [M, C] logits of the previous network on them
        (`replay.network_logits(model, memory_inputs)` before training).
      alpha, memory_batch_size, seed: as `replay.MemoryModel`.
      eps: the distance's eps.

    The distance (before alpha) is tracked as `fip_distance`.
    """

    config_keys = ("eps", *replay.MemoryModel.config_keys)
    term_name = "fip_distance"
    targets_argument = "memory_logits"

    def __init__(self, model: keras.Model, memory_inputs, memory_logits, alpha: float = 1.0,
                 memory_batch_size: int = 32, seed: int | None = None, eps: float = 1e-8,
                 **kwargs):
        if not (np.isfinite(eps) and eps >= 0):
            raise ValueError(f"eps must be a finite number >= 0, got {eps}.")
        self.eps = float(eps)
        super().__init__(model, memory_inputs, memory_logits, alpha=alpha,
                         memory_batch_size=memory_batch_size, seed=seed, **kwargs)

    def check_targets(self, targets):
        if targets.ndim != 2 or targets.dtype.kind != "f":
            raise ValueError(f"memory_logits must be [M, C] float logits, got shape "
                             f"{targets.shape} of {targets.dtype}.")

    def memory_term(self, logits, targets):
        return bhattacharyya_distance(logits, targets, self.eps)

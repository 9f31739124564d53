"""Label-free distillation onto a mask: the first-order optimiser of the projection's objective.

The Gauss-Newton projection (`projection.gauss_newton_projection`) minimises
the functional distance to the dense network on unlabelled calibration inputs,

    D(w) = sum_l c_l (1/N) sum_i D_l(z_l(x_i; w), z_l(x_i; w0)),

by damped Gauss-Newton steps. `distill` minimises the same D (the same
representations, output metric and weights c_l, `projection.functional_distance`)
with masked Adam on mini-batches of the calibration inputs: after every step
w <- m * w, so the mask's zeros hold exactly. It is the peer that tells
whether the Gauss-Newton solver is worth its compute.

Inside `strategy.scope()` each batch is split over the replicas (and
workers), whose gradients are summed: the single-device step on the same
batch, as long as the batch is a multiple of the replicas.

Compute, in gradients on batches of `batch_size`: one gradient per step, plus
one forward pass over the N calibration inputs for the reference z_l(X; w0).

Early stopping without labels: given `held_out` rows (kept out of the
descent), D on them is measured `checks` times along the descent and the
weights with the smallest held-out D are kept; with schedule "restarts" each
check ends a cosine cycle. Why: distilled 4,000 steps per stage through 80
-> 98% on 8,192 CIFAR-10 images, a VGG11 ends with 2.2x less D on them than
at 1,000 steps per stage, and 3.1 points less validation accuracy. Measured
(sparsification docs, "Stopping early without labels"), it recovers part of
that at 98% and costs 0.1-0.6 points on the MNIST networks, so `prune` does
not stop early by default.
"""
from __future__ import annotations

import logging
import math
import time

import keras
import numpy as np
import tensorflow as tf

from tfgeo import batching
from tfgeo import distribute
from tfgeo import output_metrics
from tfgeo import vectors
from tfgeo import weights as weights_lib
from tfgeo.sparsify import projection

SCHEDULES = ("constant", "cosine", "restarts")


class _PerCallTracing(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning for
    `distill`'s own functions. Each call builds its step and distance functions
    (they close over that call's optimizer, masks and reference) and traces
    each once; TensorFlow keys its retracing counter by code object, so a
    staged `prune` (or its rate probes) reads to it as retracing."""

    def filter(self, record) -> bool:
        text = record.getMessage()
        return not ("triggered tf.function retracing" in text
                    and ("distill.<locals>" in text or "_mean_distance.<locals>" in text))


tf.get_logger().addFilter(_PerCallTracing())


def distill(model: keras.Model, mask, inputs, steps: int = 4000, batch_size: int = 256,
            learning_rate: float = 3e-3, schedule: str = "cosine", layers=None,
            output_metric="fisher", logits_weight: float = 1.0, start=None, seed: int = 0,
            jit_compile: bool = False, chunk_size: int = 512, reference_weights=None,
            held_out=None, checks: int = 8, on_check=None) -> dict:
    """Masked Adam on D, starting from `start` (default m w0; w0 the model's
    weights at the call, or `reference_weights`, whose function D keeps).

    mask: 0/1 arrays shaped like the trainable weights (1 = kept).
    inputs: calibration inputs [N, ...] (an array or a dict of arrays), no labels.
    steps: Adam steps, each on `min(batch_size, N)` inputs drawn without
      replacement per epoch (shuffled by `seed`). The defaults (steps,
      batch_size, schedule) are `prune`'s `Distillation()`; the rate is the
      smaller of its candidates (`prune` probes them; this call takes one).
    schedule: "constant", "cosine" (decay to 0 over `steps`) or "restarts"
      (cosine decay to 0 over each of `checks` cycles of ceil(steps /
      checks) steps, restarting at the rate: each held-out check then sees
      annealed weights, as a run of that many steps would end).
    layers: as `projection.gauss_newton_projection` (None: the outputs only;
      "hidden": every weighted layer's pre-activation too).
    held_out: rows of `inputs` (M indices) kept out of the descent, or None.
      Given, D on them is measured at the start and every ceil(steps /
      `checks`) steps (and at the last), and the weights with the smallest
      held-out D are the result: early stopping without labels. The descent
      then draws from the other N - M inputs; the reference and "distance"
      still cover all N.
    on_check: called as on_check(step, held_out_distance) after each check,
      the model holding that step's weights (e.g. to log or evaluate them).
    Assigns the result to the model; returns {"distance" (D over all N at the
    end), "history" (D every 10% of the steps), "steps", "gradients",
    "forwards" (passes over all N), "batch", "examples" (N), "seconds"}; with
    `held_out`, also "held_out_history" ([step, D] at each check),
    "best_step", "held_out_distance" (its D), "held_out_forwards" (one per
    check) and "held_out_examples" (M).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}.")
    if not (isinstance(steps, (int, np.integer)) and steps >= 0):
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}.")
    if not learning_rate > 0 or not math.isfinite(learning_rate):
        raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r}.")
    if not (isinstance(checks, (int, np.integer)) and checks >= 1):
        raise ValueError(f"checks must be an integer >= 1, got {checks!r}.")
    n = batching.num_examples(inputs)
    fit, held = _split(n, held_out)
    began = time.time()
    if reference_weights is not None:
        weights_lib.set_trainable(model, reference_weights)
    w0 = weights_lib.get_trainable(model)
    ref = projection.reference(model, inputs, layers, logits_weight, chunk_size)
    start = w0 if start is None else start
    weights_lib.set_trainable(model, [np.asarray(s) * np.asarray(k) for s, k in zip(start, mask)])
    metric = output_metrics.get(output_metric)
    run = projection.representation_fn(model, ref.names)
    variables = weights_lib.backing_variables(model)
    dtype = model.trainable_variables[0].dtype
    masks = [tf.constant(np.asarray(m), dtype) for m in mask]
    batch = min(int(batch_size), len(fit))
    between = max(1, -(-steps // checks))  # steps between checks: a cycle of "restarts"
    rate = learning_rate
    if schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, max(steps, 1))
    elif schedule == "restarts":
        rate = keras.optimizers.schedules.CosineDecayRestarts(learning_rate, between,
                                                              t_mul=1.0, m_mul=1.0)
    optimizer = keras.optimizers.Adam(rate)
    optimizer.build(model.trainable_variables)
    fitting = (inputs, tuple(ref.values))
    if held is not None:
        fitting = batching.take_rows(fitting, fit)
    data = tf.data.Dataset.from_tensor_slices(fitting).shuffle(
        len(fit), seed=seed, reshuffle_each_iteration=True)
    data = data.repeat().batch(batch, drop_remainder=True)

    strategy = tf.distribute.get_strategy()
    replicas = int(strategy.num_replicas_in_sync)
    replicated = distribute.under_strategy()
    if replicated and batch % replicas:
        raise ValueError(f"Under a strategy of {replicas} replicas the distillation's batch "
                         f"({batch}) must be a multiple of {replicas}.")

    def descend(x, refs, scale):
        """One masked Adam step on the batch's mean D (times `scale`: 1/R on each
        of R replicas, whose gradients Keras's optimizer sums)."""
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            loss = projection.functional_distance(ref, metric, run(x), list(refs)) * scale
        grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        optimizer.apply_gradients(zip([g * m for g, m in zip(vectors.dense(grads), masks)],
                                      model.trainable_variables))
        # Adam's moments would otherwise revive pruned weights.
        distribute.apply_to_variables(variables, masks, lambda v, m: v.assign(v * m))
        return loss

    @tf.function(jit_compile=jit_compile and not replicated)
    def step(x, refs):
        if not replicated:
            return descend(x, refs, 1.0)
        # Each replica descends its rows' mean D times 1/R: the batch's mean D.
        return distribute.split_batch(
            strategy, lambda rows, weight: descend(rows[0], rows[1], weight),
            (x, tuple(refs)), batch)

    full = _mean_distance(ref, metric, run, inputs, ref.values, chunk_size)
    check = None if held is None else _HeldOutCheck(
        model, _mean_distance(ref, metric, run, batching.take_rows(inputs, held),
                              batching.take_rows(ref.values, held), chunk_size),
        len(held), on_check)
    history, forwards = [], 1  # the reference's forward pass over the N inputs
    every = max(1, steps // 10)
    if check is not None:
        check(0)
    for k, (x, refs) in enumerate(data.take(steps)):
        loss = step(x, refs)
        if (k + 1) % every == 0:
            history.append(float(loss))
        if check is not None and ((k + 1) % between == 0 or k + 1 == steps):
            check(k + 1)
    extra = {}
    if check is not None:
        extra = check.best()
    distance = float(full())
    forwards += 1
    return {"distance": distance, "history": history, "steps": int(steps),
            "gradients": int(steps), "forwards": forwards, "batch": batch, "examples": n,
            "seconds": time.time() - began, **extra}


def _split(n: int, held_out):
    """(rows the descent draws from, held-out rows or None), each sorted."""
    if held_out is None:
        return np.arange(n), None
    held = np.unique(np.asarray(held_out, dtype=np.int64).ravel())
    if held.size != np.size(held_out) or held.size == 0 or held[0] < 0 or held[-1] >= n:
        raise ValueError(f"held_out must be distinct row indices in [0, {n}), at least one; "
                         f"got {np.size(held_out)} of them.")
    fit = np.setdiff1d(np.arange(n), held)
    if fit.size == 0:
        raise ValueError(f"held_out holds every one of the {n} inputs: none left to descend on.")
    return fit, held


def _mean_distance(ref, metric, run, inputs, values, chunk_size):
    """A tf.function: D over `inputs` (rows whose reference is `values`), with
    `ref`'s names and weights c_l (so D on a subset shares the full set's scale)."""
    values = [tf.constant(v) for v in values]
    return tf.function(lambda: batching.chunked_mean(
        lambda c: projection.functional_distance(ref, metric, run(c["x"]), c["ref"]),
        {"x": inputs, "ref": values}, chunk_size))


class _HeldOutCheck:
    """D on held-out inputs at each call (after step k); keeps the weights with
    the smallest, and restores them on `best()`. A non-finite D never wins
    (but the start is kept if nothing else is finite)."""

    def __init__(self, model, distance, examples, on_check=None):
        self.model, self.distance, self.examples = model, distance, examples
        self.on_check = on_check
        self.history, self.weights, self.step, self.value = [], None, 0, math.inf

    def __call__(self, k: int):
        d = float(self.distance())
        self.history.append([int(k), d])
        if self.weights is None or (math.isfinite(d) and d < self.value):
            self.weights, self.step = weights_lib.get_trainable(self.model), k
            self.value = d if math.isfinite(d) else math.inf
        if self.on_check is not None:
            self.on_check(int(k), d)

    def best(self) -> dict:
        weights_lib.set_trainable(self.model, self.weights)
        return {"held_out_history": self.history, "best_step": self.step,
                "held_out_distance": self.value, "held_out_forwards": len(self.history),
                "held_out_examples": self.examples}

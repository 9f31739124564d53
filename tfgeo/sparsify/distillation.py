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

SCHEDULES = ("constant", "cosine")


class _PerCallTracing(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning for
    `distill`'s own functions. Each call builds its step and distance functions
    (they close over that call's optimizer, masks and reference) and traces
    each once; TensorFlow keys its retracing counter by code object, so a
    staged `prune` (or its rate probes) reads to it as retracing."""

    def filter(self, record) -> bool:
        text = record.getMessage()
        return not ("triggered tf.function retracing" in text and "distill.<locals>" in text)


tf.get_logger().addFilter(_PerCallTracing())


def distill(model: keras.Model, mask, inputs, steps: int = 4000, batch_size: int = 256,
            learning_rate: float = 3e-3, schedule: str = "cosine", layers=None,
            output_metric="fisher", logits_weight: float = 1.0, start=None, seed: int = 0,
            jit_compile: bool = False, chunk_size: int = 512, reference_weights=None) -> dict:
    """Masked Adam on D, starting from `start` (default m w0; w0 the model's
    weights at the call, or `reference_weights`, whose function D keeps).

    mask: 0/1 arrays shaped like the trainable weights (1 = kept).
    inputs: calibration inputs [N, ...] (an array or a dict of arrays), no labels.
    steps: Adam steps, each on `min(batch_size, N)` inputs drawn without
      replacement per epoch (shuffled by `seed`). The defaults (steps,
      batch_size, schedule) are `prune`'s `Distillation()`; the rate is the
      smaller of its candidates (`prune` probes them; this call takes one).
    schedule: "constant" or "cosine" (decay to 0 over `steps`).
    layers: as `projection.gauss_newton_projection` (None: the outputs only;
      "hidden": every weighted layer's pre-activation too).
    Assigns the result to the model; returns {"distance" (D over all N at the
    end), "history" (D every 10% of the steps), "steps", "gradients",
    "forwards", "batch", "examples", "seconds"}.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}.")
    if not (isinstance(steps, (int, np.integer)) and steps >= 0):
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}.")
    if not learning_rate > 0 or not math.isfinite(learning_rate):
        raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r}.")
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
    n = batching.num_examples(inputs)
    batch = min(int(batch_size), n)
    rate = (keras.optimizers.schedules.CosineDecay(learning_rate, max(steps, 1))
            if schedule == "cosine" else learning_rate)
    optimizer = keras.optimizers.Adam(rate)
    optimizer.build(model.trainable_variables)
    data = tf.data.Dataset.from_tensor_slices(
        (inputs, tuple(ref.values))).shuffle(n, seed=seed, reshuffle_each_iteration=True)
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

    full = tf.function(lambda: batching.chunked_mean(
        lambda c: projection.functional_distance(ref, metric, run(c["x"]), c["ref"]),
        {"x": inputs, "ref": [tf.constant(v) for v in ref.values]}, chunk_size))
    history, forwards = [], 1  # the reference's forward pass over the N inputs
    every = max(1, steps // 10)
    for k, (x, refs) in enumerate(data.take(steps)):
        loss = step(x, refs)
        if (k + 1) % every == 0:
            history.append(float(loss))
    distance = float(full())
    forwards += 1
    return {"distance": distance, "history": history, "steps": int(steps),
            "gradients": int(steps), "forwards": forwards, "batch": batch, "examples": n,
            "seconds": time.time() - began}

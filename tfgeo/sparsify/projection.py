"""Projecting a network onto a sparsity mask while keeping its function, without labels.

Given the dense network w0, calibration inputs X (no labels) and a 0/1 mask m
(1 = kept), the result has exactly the mask's zeros and stays close to w0
*as a function*, measured on representations z_l of X (the outputs, named
"logits", and/or Dense/Conv2D pre-activations) by

    D(w) = sum_l c_l (1/N) sum_i D_l(z_l(x_i; w), z_l(x_i; w0)),

D_l the output metric's divergence for the outputs (`OutputMetric.divergence`,
e.g. KL for the Fisher) and half the squared distance for hidden layers,
c_l = logits_weight or 1, divided by the reference's mean squared norm
(fixed at w0). Its Gauss-Newton matrix at w is the hidden-representation
metric g(w) with the same representations and weights (`tfgeo.hidden_metric`).

* `linear_projection`: one step at w0, w = m (w0 + u) with
  (m g m + lambda I) u = m g ((1 - m) w0): the metric-minimal correction of
  the kept weights for zeroing the others, measured from the dense point.
  Error adds up when the move is large (95-98% of the weights), because g is
  the metric at w0 only.
* `gauss_newton_projection`: from a masked start (default m w0), damped
  Gauss-Newton steps on the kept weights that drive D to its minimum,
  re-linearised at every iterate:
  delta = -(m g(w) m + lambda I)^{-1} m grad D(w). A step is kept only if D
  falls; otherwise it is halved (up to `halvings` times) and then lambda is
  raised tenfold (Levenberg-Marquardt). Each solve is CG, preconditioned by
  K-FAC of the same metric over X when asked.

Both stream over X in chunks, so memory stays that of one chunk, and count
their compute (products, gradients and forward passes over X; products and
quadratic forms over the first `Solver.curvature_size` inputs when that is set,
reported as `curvature_examples`). Inside `strategy.scope()` of a strategy
(one replica or several, across workers too), X is sharded over them and every mean is
all-reduced once (`tfgeo.distribute.ShardedMean`); CG runs on the reduced
vectors, so all replicas take the same steps.
"""
from __future__ import annotations

import time
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from tfgeo import model_checks
from tfgeo import batching
from tfgeo import distribute
from tfgeo import hidden_metric
from tfgeo import kfac
from tfgeo import krylov
from tfgeo import linear_operator
from tfgeo import output_metrics
from tfgeo import representations
from tfgeo import vectors
from tfgeo import weights as weights_lib

OUTPUTS = representations.OUTPUTS


class Reference(NamedTuple):
    """The dense network's representations of the calibration inputs."""
    names: list  # representation names ("logits" for the outputs)
    values: list  # one array [N, ...] per name
    weights: list  # c_l


def _names(model, layers):
    if layers == "hidden":
        return hidden_metric.representation_names(model, None)
    if layers is None:
        return [OUTPUTS]
    return hidden_metric.representation_names(model, list(layers))


def representation_fn(model, names):
    """x -> [z_l(x; w)] for the representation `names` at the model's current weights."""
    hidden = representations.select(model, [n for n in names if n != OUTPUTS])

    def run(x):
        with representations.capture(hidden, inputs=False) as seen:
            outputs = model(x, training=False)
        return [outputs if n == OUTPUTS else seen.preactivations[n] for n in names]

    return run


def reference(model: keras.Model, inputs, layers=None, logits_weight: float = 1.0,
              chunk_size: int = 512) -> Reference:
    """z_l(X; w0) for the representations `layers` (None: the outputs only;
    "hidden": every weighted layer's pre-activation but the last, and the
    outputs; or a list of names), with c_l = logits_weight (outputs) or 1,
    over the reference's mean squared norm."""
    names = _names(model, layers)
    # Eager: a few forward passes, once per call; a fresh tf.function per call
    # (per stage and method) would only trace again and warn of retracing.
    run = representation_fn(model, names)
    n = batching.num_examples(inputs)
    parts = [run(tf.nest.map_structure(lambda a: a[s:s + chunk_size], inputs))
             for s in range(0, n, chunk_size)]
    values = [np.concatenate([p[k].numpy() for p in parts]) for k in range(len(names))]
    weights = []
    for name, v in zip(names, values):
        scale = float(np.sum(np.square(v, dtype=np.float64)) / n)
        weights.append((logits_weight if name == OUTPUTS else 1.0) / max(scale, 1e-12))
    return Reference(names, values, weights)


def functional_distance(ref: Reference, metric, zs, refs) -> tf.Tensor:
    """D on one batch: sum_l c_l mean_i D_l(z_l(x_i; w), z_l(x_i; w0)), with `zs` the
    representations at w and `refs` the reference's, in `ref.names` order (the
    objective of both the projection and label-free distillation)."""
    metric = output_metrics.get(metric)
    out = []
    for name, z, r, c in zip(ref.names, zs, refs, ref.weights):
        if name == OUTPUTS:
            d = metric.divergence(z, tf.cast(r, z.dtype))
        else:
            d = 0.5 * tf.reduce_sum(tf.reshape(tf.square(z - tf.cast(r, z.dtype)),
                                               [tf.shape(z)[0], -1]), -1)
        out.append(c * tf.reduce_mean(d))
    return tf.add_n(out)


class Solver(NamedTuple):
    """How each linear system is solved."""
    damping: float = 1e-3  # lambda, relative to the metric's mean diagonal (the initial one for GN)
    max_iterations: int = 200  # CG iterations per solve
    tolerance: float = 1e-2  # CG relative residual
    preconditioner: str = "none"  # or "kfac"
    jit_compile: bool = False
    chunk_size: int = 512
    # Inputs the metric products see (the first ones; 0: all). As in Hessian-free
    # optimisation, the curvature may come from a subset while the residual (the
    # right-hand side) and the accept/reject distance use every input: a cheaper
    # step that the step rule still judges on the whole set.
    curvature_size: int = 0


class _Objective:
    """D(w), grad D(w), and solves with the metric g(w) restricted to a mask,
    for a model, its calibration inputs and a Reference; every function is
    traced once and reads the model's current weights."""

    def __init__(self, model, inputs, ref: Reference, mask, output_metric, solver: Solver):
        self.model, self.inputs, self.ref, self.solver = model, inputs, ref, solver
        size = solver.curvature_size
        self.curvature_inputs = inputs if not 0 < size < batching.num_examples(inputs) else (
            tf.nest.map_structure(lambda a: a[:size], inputs))
        self.metric = output_metrics.get(output_metric)
        self.output_metric = output_metric
        self.run = representation_fn(model, ref.names)
        self.data = {"x": inputs, "ref": [tf.constant(v) for v in ref.values]}
        self.variables = weights_lib.backing_variables(model)
        self.dtype = model.trainable_variables[0].dtype
        self.mask = _masks(mask, self.dtype)
        chunk, jit = solver.chunk_size, solver.jit_compile
        self.hidden = None if ref.names == [OUTPUTS] else ref.names
        self.strategy = tf.distribute.get_strategy()
        self.replicated = distribute.under_strategy()
        if self.replicated:
            # Inside `strategy.scope()`: the inputs sharded over replicas (and
            # workers), every mean all-reduced once; CG runs eagerly on the
            # reduced vectors, the same iterations on every replica.
            if solver.preconditioner != "none":
                raise ValueError(f"preconditioner={solver.preconditioner!r} is not distributed; "
                                 f"under a strategy use preconditioner='none'.")
            data = distribute.ShardedMean(self.strategy, self.data)
            curvature = distribute.ShardedMean(self.strategy, self.curvature_inputs)
            self._distance = data.function(
                lambda d: batching.chunked_mean(self._chunk_distance, d, chunk))
            self._gradient = data.function(
                lambda d: batching.chunked_mean(self._chunk_gradient, d, chunk))
            self._quadratic = curvature.function(lambda x, v: self.operator(x).quadratic_form(v))
            self._product = curvature.function(lambda x, v: self.operator(x).matvec(v))
            product = distribute.FunctionOperator(
                self._product, [v.shape for v in self.variables], self.dtype)
            self._solve = lambda rhs, damping, eigen: krylov.conjugate_gradient(  # eager
                product.restricted(self.mask), rhs, damping=damping,
                max_iterations=solver.max_iterations, tolerance=solver.tolerance)
            return
        self._distance = tf.function(
            lambda: batching.chunked_mean(self._chunk_distance, self.data, chunk), jit_compile=jit)
        self._gradient = tf.function(
            lambda: batching.chunked_mean(self._chunk_gradient, self.data, chunk), jit_compile=jit)
        self._quadratic = tf.function(lambda v: self.operator().quadratic_form(v),
                                      jit_compile=jit)
        self._product = tf.function(lambda v: self.operator().matvec(v), jit_compile=jit)
        self._factors = tf.function(lambda x, seed: kfac.factors_on_batch(
            model, x, output_metric, seed, hidden=self.hidden))
        self._eigen = tf.function(kfac.eigendecompose)
        self._solve = tf.function(self._solve_fn, jit_compile=jit)

    def _chunk_distance(self, chunk):
        return functional_distance(self.ref, self.metric, self.run(chunk["x"]), chunk["ref"])

    def _chunk_gradient(self, chunk):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(self.variables)
            zs = self.run(chunk["x"])
        cotangents = []
        for name, z, r, c in zip(self.ref.names, zs, chunk["ref"], self.ref.weights):
            n = tf.cast(tf.shape(z)[0], z.dtype)
            res = self.metric.residual(z, tf.cast(r, z.dtype)) if name == OUTPUTS else z - r
            cotangents.append(tf.stop_gradient(c * res / n))
        return vectors.dense(tape.gradient(zs, self.variables, output_gradients=cotangents,
                                           unconnected_gradients=tf.UnconnectedGradients.ZERO))

    def distance(self) -> float:
        return float(self._distance())

    def gradient(self) -> list:
        return list(self._gradient())

    def operator(self, inputs=None) -> linear_operator.LinearOperator:
        """g at the current weights (the Gauss-Newton matrix of D) on `inputs`
        (default: the curvature inputs)."""
        order = [n for n in self.ref.names if n != OUTPUTS] + (
            [OUTPUTS] if OUTPUTS in self.ref.names else [])
        weights = [self.ref.weights[self.ref.names.index(n)] for n in order]
        return hidden_metric.HiddenMetricOperator(
            self.model, self.curvature_inputs if inputs is None else inputs, order,
            self.output_metric, weights=weights, chunk_size=self.solver.chunk_size)

    def mean_diagonal(self, probes: int = 4, seed: int = 0) -> float:
        """trace(g) / P by Hutchinson's estimator with Rademacher probes."""
        rng = np.random.default_rng(seed)
        size = sum(int(np.prod(v.shape)) for v in self.variables)
        total = 0.0
        for _ in range(probes):
            v = [tf.constant(rng.choice([-1.0, 1.0], size=tuple(w.shape)), self.dtype)
                 for w in self.variables]
            total += float(self._quadratic(v))
        return total / probes / size

    def eigen(self, seed: int) -> list:
        """K-FAC of this metric over the calibration inputs, eigendecomposed."""
        n = batching.num_examples(self.inputs)
        chunk = self.solver.chunk_size
        total = None
        for k, start in enumerate(range(0, n, chunk)):
            x = tf.nest.map_structure(lambda a: a[start:start + chunk], self.inputs)
            part = self._factors(x, tf.constant([seed, k], tf.int32))
            w = batching.num_examples(x) / n
            part = [[t * w for t in ts] for ts in part]
            total = part if total is None else [[t + p for t, p in zip(ts, ps)]
                                                for ts, ps in zip(total, part)]
        return self._eigen(kfac.Factors(*total))

    def _solve_fn(self, rhs, damping, eigen):
        pre = None
        if eigen is not None:
            p = kfac.KFACOperator(self.model, eigen=eigen, damping=damping)
            pre = linear_operator.RestrictedPreconditioner(p, self.mask, damping)
        return krylov.conjugate_gradient(
            self.operator().restricted(self.mask), rhs, damping=damping,
            max_iterations=self.solver.max_iterations, tolerance=self.solver.tolerance,
            preconditioner=pre)

    def solve(self, rhs, damping, seed, counts):
        eigen = None
        if self.solver.preconditioner == "kfac":
            eigen = self.eigen(seed)
            counts["curvature"] += 1
        result = self._solve(rhs, tf.constant(damping, self.dtype), eigen)
        counts["products"] += int(result.products)
        counts["cg_iterations"] += int(result.iterations)
        return result


def _masks(mask, dtype):
    return [tf.constant(np.asarray(m), dtype) for m in mask]


def _counts():
    return {"products": 0, "cg_iterations": 0, "curvature": 0, "gradients": 0, "forwards": 0,
            "quadratic_forms": 0}


def linear_projection(model: keras.Model, mask, inputs, layers=None, output_metric="fisher",
                      solver: Solver = Solver(), logits_weight: float = 1.0) -> dict:
    """Projects `model` (its weights are w0) onto `mask` by one metric-minimal
    correction; assigns the result to the model and returns a report."""
    began = time.time()
    model_checks.check_network(model)
    model_checks.check_inputs(inputs, model=model)
    w0 = weights_lib.get_trainable(model)
    ref = reference(model, inputs, layers, logits_weight, solver.chunk_size)
    objective = _Objective(model, inputs, ref, mask, output_metric, solver)
    counts = _counts()
    lam = solver.damping * objective.mean_diagonal()
    counts["quadratic_forms"] += 4
    pruned = [tf.constant(w * (1.0 - np.asarray(k)), objective.dtype) for w, k in zip(w0, mask)]
    rhs = vectors.multiply(objective.mask, objective._product(pruned))
    counts["products"] += 1
    result = objective.solve(rhs, lam, 0, counts)
    weights_lib.set_trainable(model, [np.asarray(k) * (w + u.numpy())
                                      for w, k, u in zip(w0, mask, result.solution)])
    counts["forwards"] += 1
    return {**counts, "distance": objective.distance(), "damping": lam,
            "cg_status": krylov.status_name(result.status),
            "examples": batching.num_examples(inputs),
            "curvature_examples": batching.num_examples(objective.curvature_inputs),
            "seconds": time.time() - began}


def levenberg_marquardt(distance, gradient, solve, get, put, damping: float, steps: int,
                        halvings: int = 6, max_damping: float = 1e6,
                        min_decrease: float = 1e-4, on_step=None) -> tuple[float, list, int]:
    """Damped Gauss-Newton with a step rule that keeps only steps lowering D.

    Args:
      distance(): D at the current point; gradient(): grad D there;
      solve(rhs, lam): the damped Gauss-Newton solve, returns delta;
      get() / put(point): read / set the current point (lists of arrays).
      damping: lambda at the start; /3 after a full step, x10 after a rejection.
    A trial delta is tried at alpha = 1, 1/2, ... (`halvings` times) and kept at
    the first alpha where D falls; if none, the point stays and lambda grows.
    Stops after `steps` accepted steps, a relative decrease below
    `min_decrease`, or lambda above `max_damping` x its start.
    Returns (D, history, accepted steps).
    """
    d = distance()
    history = [{"step": 0, "distance": d, "damping": damping}]
    lam, accepted = float(damping), 0
    while accepted < steps and lam <= max_damping * damping:
        current = get()
        delta = solve([-g for g in gradient()], lam)
        new_d, alpha = None, 1.0
        for _ in range(halvings + 1):
            put([w + alpha * u for w, u in zip(current, delta)])
            trial = distance()
            if np.isfinite(trial) and trial < d:
                new_d = trial
                break
            alpha /= 2.0
        if new_d is None:
            put(current)
            lam *= 10.0
            history.append({"step": accepted, "distance": d, "damping": lam, "rejected": True})
            continue
        accepted += 1
        decrease = (d - new_d) / max(d, 1e-30)
        d = new_d
        history.append({"step": accepted, "distance": d, "damping": lam, "alpha": alpha})
        if on_step is not None:
            on_step(history[-1])
        if alpha == 1.0:
            lam = max(lam / 3.0, damping * 1e-3)
        if decrease < min_decrease:
            break
    return d, history, accepted


def gauss_newton_projection(model: keras.Model, mask, inputs, layers=None,
                            output_metric="fisher", steps: int = 10, solver: Solver = Solver(),
                            start=None, logits_weight: float = 1.0, halvings: int = 6,
                            max_damping: float = 1e6, min_decrease: float = 1e-4,
                            on_step=None) -> dict:
    """Projects `model` (its weights are w0) onto `mask` by damped Gauss-Newton
    steps on D (module docstring), starting from `start` (default m w0).
    Assigns the result to the model; returns a report with D per step.

    lambda starts at `solver.damping` times the metric's mean diagonal at the
    start; the step rule is `levenberg_marquardt`'s.
    """
    began = time.time()
    model_checks.check_network(model)
    model_checks.check_inputs(inputs, model=model)
    w0 = weights_lib.get_trainable(model)
    ref = reference(model, inputs, layers, logits_weight, solver.chunk_size)
    start = [w * np.asarray(k) for w, k in zip(w0, mask)] if start is None else [
        np.asarray(s) * np.asarray(k) for s, k in zip(start, mask)]
    weights_lib.set_trainable(model, start)
    objective = _Objective(model, inputs, ref, mask, output_metric, solver)
    counts = _counts()
    lam0 = solver.damping * objective.mean_diagonal()
    counts["quadratic_forms"] += 4
    rounds = [0]

    def distance():
        counts["forwards"] += 1
        return objective.distance()

    def gradient():
        counts["gradients"] += 1
        return vectors.multiply(objective.mask, objective.gradient())

    def solve(rhs, lam):
        result = objective.solve(rhs, lam, rounds[0], counts)
        rounds[0] += 1
        return [u.numpy() for u in result.solution]

    d, history, accepted = levenberg_marquardt(
        distance, gradient, solve, lambda: weights_lib.get_trainable(model),
        lambda w: weights_lib.set_trainable(model, w), lam0, steps, halvings, max_damping,
        min_decrease, on_step)
    return {**counts, "distance": d, "history": history, "steps": accepted,
            "examples": batching.num_examples(inputs),
            "curvature_examples": batching.num_examples(objective.curvature_inputs),
            "seconds": time.time() - began}

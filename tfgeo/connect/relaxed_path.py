"""A geodesic between two fixed networks as a boundary-value problem: a relaxed path.

`tfgeo.connect.geodesic_walk.geodesic_path` shoots from A toward B and lands with a last
straight step. A geodesic between two fixed points is a boundary-value
problem instead: discretise the path as w_0 = A, w_1..w_K (free), w_{K+1} = B
and relax the K inner points to minimise the path's energy (the string /
nudged-elastic-band approach), every point seeing a fresh batch each
iteration:

    energy="divergence" (default), the discrete geodesic energy

        E = (K + 1) sum_k 2 mean_x D_sym(f(x; w_k), f(x; w_{k+1})),

      D_sym the symmetrised divergence of the output metric (`fisher`: KL
      between the softmaxes; `euclidean`: half the squared logit distance),
      whose Hessian is M, so E -> int_0^1 <w', g(w) w'> dt as the points
      get dense. Its gradient is exact (it includes how g changes along the
      path) and costs one forward and one backward pass per inner point.
      With `representations` ("hidden"), each weighted layer's pre-activations
      count too, each scaled by its mean squared norm at A and B (the
      hidden-representation metric of `tfgeo.hidden_metric`, discretised).

    energy="metric", the quadratic-form energy E = (K + 1) sum_k <dw_k, g(w_k) dw_k>
      (dw_k = w_{k+1} - w_k), descended with the metric held fixed at each
      point: the force on w_k is 2 (K + 1) g(w_k) (2 w_k - w_{k-1} - w_{k+1}),
      one metric-vector product per inner point, batched over the points
      (`laplacian_products`). It ignores how g changes along the path (the
      Christoffel term), which the divergence energy keeps.

Loss-aware: `loss_weight` beta adds beta * mean_k L(w_k; x, y) (cross-entropy
on the batch's labels at the inner points), which bridges the metric energy
to what a trained mode-connecting curve minimises. Its gradient shares each
point's backward pass (one VJP with the summed cotangents).

Parametrisation: "points" relaxes the K inner points themselves (a polygon,
nodes at t_k = k / (K + 1)); "bezier" relaxes the bends of a Bezier curve
w(t) = sum_j c_j(t) P_j (`tfgeo.connect.curves`, A and B its fixed end nodes), the
energy's nodes placed at t_k = (k - 1 + u) / K with one u ~ U(0, 1) drawn
per iteration (stratified: every t is visited), each segment weighted by
1 / (t_{k+1} - t_k). Every node's gradient then reaches the same few bends,
so the path pools all its samples (a free polygon gives each point only its
own), and with a large `loss_weight` the objective becomes Garipov et al.'s
E_t L(w(t)) with stratified t, plus the metric energy of the curve.

The variables are updated by the caller's optimizer (Adam by default) on the
force; A and B are never written, so the endpoints stay exactly A and B.

Compute per iteration on a batch of b inputs, counted in `counts`:
divergence: K gradients (forward + backward at each inner point) and 2
forward passes (A and B); metric: K metric-vector products (forward + JVP +
backward at each inner point, the loss's cotangent in the same backward).
"""
from __future__ import annotations

import math
import time

import keras
import numpy as np
import tensorflow as tf

from tfgeo.connect import curves
from tfgeo import distribute
from tfgeo import model_checks
from tfgeo import output_metrics
from tfgeo.connect import paths
from tfgeo import representations as representations_lib
from tfgeo import weights as weights_lib

ENERGIES = ("divergence", "metric")
REPRESENTATIONS = ("logits", "hidden")
PARAMETRIZATIONS = ("points", "bezier")
#: Segments shorter than this in t are weighted as if this long (float32 cancellation).
_MIN_DT = 1e-3


def _sym_divergence(metric, p, q):
    """mean_x (D(p, q) + D(q, p)) / 2 over the batch; D's Hessian is M."""
    return tf.reduce_mean(0.5 * (metric.divergence(p, q) + metric.divergence(q, p)))


class RelaxedPath:
    """A discretised path A -> B whose K inner points are relaxed (module docstring).

    Args:
      network: a built Keras model with logits outputs (only its architecture
        and non-trainable state are used; its weights are untouched).
      a, b: the endpoints (lists shaped like `network.trainable_variables`).
      num_points: K >= 1 inner points.
      energy: "divergence" or "metric".
      output_metric: the output metric M (its divergence for energy="divergence").
      representations: "logits" (the outputs only) or "hidden" (also every
        weighted layer's pre-activations; divergence energy only).
      loss_weight: beta >= 0 of the loss-aware term.
      initial: K inner points to start from (default: equally spaced on the
        segment A -> B; parametrization "points" only).
      parametrization: "bezier" (default: what won on validation) or "points"
        ("bezier" needs the divergence energy).
      num_bends: bends of the Bezier parametrisation (start on the segment).
      seed: seed of the nodes' random shift (parametrization "bezier").
      optimizer: a Keras optimizer (default Adam(1e-3)).
      jit_compile: XLA for the iteration (else graph mode).
    """

    def __init__(self, network: keras.Model, a, b, num_points: int = 4,
                 energy: str = "divergence", output_metric: str = "fisher",
                 representations: str = "logits", loss_weight: float = 0.0, initial=None,
                 optimizer=None, jit_compile: bool = True, parametrization: str = "bezier",
                 num_bends: int = 1, seed: int | None = 0):
        model_checks.check_network(network, "network")
        curves.check_no_batch_norm(network)
        if isinstance(num_points, bool) or int(num_points) != num_points or num_points < 1:
            raise ValueError(f"num_points must be an integer >= 1, got {num_points!r}.")
        if energy not in ENERGIES:
            raise ValueError(f"Unknown energy {energy!r}; expected one of {ENERGIES}.")
        if representations not in REPRESENTATIONS:
            raise ValueError(f"Unknown representations {representations!r}; expected one of "
                             f"{REPRESENTATIONS}.")
        if representations == "hidden" and energy != "divergence":
            raise ValueError("representations='hidden' needs energy='divergence'.")
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"Unknown parametrization {parametrization!r}; expected one of "
                             f"{PARAMETRIZATIONS}.")
        if parametrization == "bezier":
            if energy != "divergence":
                raise ValueError("parametrization='bezier' needs energy='divergence'.")
            if initial is not None:
                raise ValueError("initial points are for parametrization='points'.")
            if isinstance(num_bends, bool) or int(num_bends) != num_bends or num_bends < 1:
                raise ValueError(f"num_bends must be an integer >= 1, got {num_bends!r}.")
        if not (np.isfinite(loss_weight) and loss_weight >= 0):
            raise ValueError(f"loss_weight must be a finite number >= 0, got {loss_weight!r}.")
        self.network = network
        self.num_points, self.energy = int(num_points), energy
        self.output_metric = output_metrics.get(output_metric)
        self.representations, self.loss_weight = representations, float(loss_weight)
        variables = network.trainable_variables
        dtypes = [v.dtype for v in variables]
        for point in (a, b):
            weights_lib.check_vector(network, [np.asarray(w) for w in point])
        self.a = [np.asarray(w, dtype=d) for w, d in zip(a, dtypes)]
        self.b = [np.asarray(w, dtype=d) for w, d in zip(b, dtypes)]
        self._a = [tf.constant(w) for w in self.a]
        self._b = [tf.constant(w) for w in self.b]
        k = self.num_points
        self.parametrization = parametrization
        self.num_bends = int(num_bends) if parametrization == "bezier" else 0
        if parametrization == "bezier":  # bends start on the segment, as in tfgeo.connect.curves
            initial = [paths.interpolate(self.a, self.b, j / (self.num_bends + 1))
                       for j in range(1, self.num_bends + 1)]
            prefix = "bend"
        else:
            prefix = "point"
            if initial is None:
                initial = [paths.interpolate(self.a, self.b, j / (k + 1))
                           for j in range(1, k + 1)]
            if len(initial) != k:
                raise ValueError(f"initial has {len(initial)} points for num_points={k}.")
        self.inner = []  # the variables: inner points, or bends
        for j, point in enumerate(initial):
            weights_lib.check_vector(network, [np.asarray(w) for w in point])
            self.inner.append([keras.Variable(np.asarray(w, dtype=d), dtype=d,
                                              name=f"{prefix}{j + 1}_{i}")
                               for i, (w, d) in enumerate(zip(point, dtypes))])
        self._rng = np.random.default_rng(seed)
        self.optimizer = optimizer or keras.optimizers.Adam(1e-3)
        self.layers = (representations_lib.weighted_layers(network)[:-1]
                       if representations == "hidden" else [])
        self.iterations = 0
        self.counts = {"gradients": 0.0, "forwards": 0.0, "metric_products": 0.0}
        if distribute.under_strategy():
            if self.layers:
                raise ValueError("representations='hidden' is not distributed (its scales are "
                                 "batch statistics); under a strategy use 'logits'.")
            # Variables may not be created inside a replica's step.
            self.optimizer.build([v for p in self.inner for v in p])
            self._step = tf.function(self._replicated_iteration)
        else:
            self._step = tf.function(self._iteration, jit_compile=jit_compile)
        self._energy = tf.function(self._divergence_energy, jit_compile=jit_compile)

    # -- the points -------------------------------------------------------------------
    def _variable_tensors(self):
        return [[tf.convert_to_tensor(getattr(v, "value", v)) for v in p] for p in self.inner]

    def _inner_tensors(self, ts=None, variables=None):
        """The inner nodes as tensors (for "bezier", at the node times `ts[1:-1]`)."""
        variables = self._variable_tensors() if variables is None else variables
        if self.parametrization == "points":
            return variables
        if ts is None:
            ts = tf.constant(self.node_times(), dtype=self._a[0].dtype)
        return [curves.curve_point("bezier", ts[j], self._a, variables, self._b)
                for j in range(1, self.num_points + 1)]

    def _all_tensors(self):
        return [self._a, *self._inner_tensors(), self._b]

    def node_times(self, shift: float | None = None) -> np.ndarray:
        """t_0 = 0, t_1..t_K, t_{K+1} = 1: k / (K + 1) for "points" (and for
        "bezier" without a shift), else (k - 1 + shift) / K."""
        k = self.num_points
        if self.parametrization == "points" or shift is None:
            return np.linspace(0.0, 1.0, k + 2)
        return np.concatenate([[0.0], (np.arange(k) + shift) / k, [1.0]])

    def bend_points(self) -> list:
        """The Bezier bends [M_1, ..., M_n] (parametrization "bezier")."""
        if self.parametrization != "bezier":
            raise ValueError("bend_points: the path is not a Bezier curve.")
        return [[v.numpy() for v in p] for p in self.inner]

    def points(self) -> list:
        """[A, w_1, ..., w_K, B] as lists of numpy arrays (A and B exactly); for
        "bezier", the curve at t = k / (K + 1)."""
        inner = ([[v.numpy() for v in p] for p in self.inner]
                 if self.parametrization == "points" else
                 [curves.curve_point("bezier", float(t), self.a, self.bend_points(), self.b)
                  for t in self.node_times()[1:-1]])
        return ([[np.array(w, copy=True) for w in self.a]] + inner
                + [[np.array(w, copy=True) for w in self.b]])

    # -- running the network at a point ----------------------------------------------
    def _run(self, point, x):
        """(logits, {layer: pre-activations}) at `point` (tensors), without writing weights."""
        net = self.network
        if not self.layers:
            return net.stateless_call(point, list(net.non_trainable_variables), x,
                                      training=False)[0], {}
        with representations_lib.capture(self.layers, inputs=False) as seen:
            out = net.stateless_call(point, list(net.non_trainable_variables), x,
                                     training=False)[0]
        return out, dict(seen.preactivations)

    def _segment_energy(self, run_p, run_q, scales):
        """2 D_sym between two points' outputs (+ scaled pre-activation distances)."""
        (fp, zp), (fq, zq) = run_p, run_q
        e = 2.0 * _sym_divergence(self.output_metric, fp, fq)
        for layer in self.layers:
            diff = zp[layer.name] - zq[layer.name]
            n = tf.cast(tf.shape(diff)[0], diff.dtype)
            e += scales[layer.name] * tf.reduce_sum(tf.square(diff)) / n
        return e

    def _scales(self, run_a, run_b):
        out = {}
        for layer in self.layers:
            za, zb = run_a[1][layer.name], run_b[1][layer.name]
            n = tf.cast(tf.shape(za)[0], za.dtype)
            mean_sq = 0.5 * (tf.reduce_sum(tf.square(za)) + tf.reduce_sum(tf.square(zb))) / n
            out[layer.name] = tf.stop_gradient(1.0 / tf.maximum(mean_sq, 1e-12))
        return out

    def _losses(self, outputs, y):
        return [tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            y, f, from_logits=True)) for f in outputs]

    # -- energies ---------------------------------------------------------------------
    def _energy_of(self, runs, ts):
        scales = self._scales(runs[0], runs[-1])
        dts = tf.maximum(ts[1:] - ts[:-1], tf.cast(_MIN_DT, ts.dtype))
        return tf.add_n([self._segment_energy(p, q, scales) / tf.cast(dts[j], p[0].dtype)
                         for j, (p, q) in enumerate(zip(runs, runs[1:]))])

    def _divergence_energy(self, x):
        """E of the divergence energy on the batch x at the current points."""
        runs = [self._run(p, x) for p in self._all_tensors()]
        return self._energy_of(runs, tf.constant(self.node_times(), dtype=self._a[0].dtype))

    def divergence_energy(self, x) -> float:
        """The divergence energy on x (forward passes only; not counted)."""
        return float(self._energy(tf.convert_to_tensor(x)))

    def laplacian_products(self, x, points=None) -> list:
        """[g(w_k) (2 w_k - w_{k-1} - w_{k+1}) for k = 1..K]: the metric-energy force's
        products, one JVP and one VJP per inner point, batched in one call.
        `points` (K + 2 points, default the current path) may be given."""
        pts = self._all_tensors() if points is None else [
            [tf.convert_to_tensor(w, dtype=v.dtype) for w, v in
             zip(p, self.network.trainable_variables)] for p in points]
        return [self._product(pts[k], self._tangent(pts, k), x, None, 0.0)[0]
                for k in range(1, len(pts) - 1)]

    @staticmethod
    def _tangent(pts, k):
        return [2.0 * c - p - n for p, c, n in zip(pts[k - 1], pts[k], pts[k + 1])]

    def _product(self, point, tangent, x, y, loss_scale):
        """(g(point) tangent [+ loss_scale dL/dw], outputs): forward + JVP + one backward."""
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(point)
            with tf.autodiff.ForwardAccumulator(point, tangent) as acc:
                outputs, _ = self._run(point, x)
            jv = acc.jvp(outputs, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            loss = (tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                y, outputs, from_logits=True)) if y is not None else None)
        n = tf.cast(tf.shape(outputs)[0], outputs.dtype)
        cotangent = tf.stop_gradient(self.output_metric.apply(outputs, jv) / n)
        if y is not None and loss_scale:
            # d(loss_scale * L)/d logits, added to the same backward pass.
            p = tf.nn.softmax(outputs, -1)
            onehot = tf.one_hot(tf.cast(y, tf.int32), tf.shape(outputs)[-1], dtype=outputs.dtype)
            cotangent += tf.cast(loss_scale, outputs.dtype) * (p - onehot) / n
        grads = tape.gradient(outputs, point, output_gradients=cotangent,
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return grads, loss

    # -- one iteration ------------------------------------------------------------------
    def _replicated_iteration(self, x, y, ts):
        """`_iteration` inside `strategy.scope()`: each replica takes its rows of
        the batch and weighs its gradients by 1/R (Keras's optimizer sums them):
        the single-device iteration on the whole batch."""
        return distribute.split_batch(
            tf.distribute.get_strategy(),
            lambda rows, weight: self._iteration(rows[0], rows[1], ts, weight), (x, y),
            int(x.shape[0]))

    def _iteration(self, x, y, ts, weight=1.0):
        """One optimizer step on the batch's energy; returns weight * (energy, mean loss)."""
        k = self.num_points
        variables = [v for p in self.inner for v in p]
        if self.energy == "divergence":
            free = self._variable_tensors()
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(free)
                inner = self._inner_tensors(ts, free)
                runs = ([self._run(self._a, x)] + [self._run(p, x) for p in inner]
                        + [self._run(self._b, x)])
                energy = self._energy_of(runs, ts)
                losses = self._losses([r[0] for r in runs[1:-1]], y)
                loss = tf.add_n(losses) / tf.cast(k, energy.dtype)
                total = energy + tf.cast(self.loss_weight, energy.dtype) * loss
            grads = tape.gradient(total, free)
            grads = [g for p in grads for g in p]
        else:
            pts = self._all_tensors()
            scale = 2.0 * (k + 1)
            grads, losses = [], []
            for j in range(1, k + 1):
                g, l = self._product(pts[j], self._tangent(pts, j), x, y,
                                     self.loss_weight / (scale * k))
                grads.extend(scale * t for t in g)
                losses.append(l)
            loss = tf.add_n(losses) / tf.cast(k, losses[0].dtype)
            energy = tf.constant(float("nan"), loss.dtype)  # not computed (it would cost more)
        if weight != 1.0:
            grads = [g * tf.cast(weight, g.dtype) for g in grads]
            energy, loss = energy * tf.cast(weight, energy.dtype), loss * tf.cast(weight, loss.dtype)
        self.optimizer.apply(grads, variables)
        return energy, loss

    def step(self, x, y) -> dict:
        """One relaxation iteration on the batch (x, y); returns its energy and mean loss."""
        shift = self._rng.uniform() if self.parametrization == "bezier" else None
        ts = tf.constant(self.node_times(shift), dtype=self._a[0].dtype)
        energy, loss = self._step(tf.convert_to_tensor(x), tf.convert_to_tensor(y), ts)
        self.iterations += 1
        k = self.num_points
        if self.energy == "divergence":
            self.counts["gradients"] += k
            self.counts["forwards"] += 2
        else:
            self.counts["metric_products"] += k
        return {"energy": float(energy), "loss": float(loss)}


def relax_path(network: keras.Model, a, b, dataset, iterations: int, num_points: int = 4,
               energy: str = "divergence", output_metric: str = "fisher",
               representations: str = "logits", loss_weight: float = 0.0, optimizer=None,
               initial=None, jit_compile: bool = True, log_every: int = 100,
               callback=None, parametrization: str = "bezier", num_bends: int = 1,
               seed: int | None = 0) -> dict:
    """Relaxes a `RelaxedPath` for `iterations` iterations on an endless `dataset`
    of (x, y) batches.

    `callback(path, iteration)` is called every `log_every` iterations.
    Returns {"points": [A, w_1..w_K, B], "bends" (parametrization "bezier",
    else None), "iterations", "batch", "counts"
    (gradients, forwards, metric_products on batches of "batch" inputs),
    "energy" and "loss" (the last iteration's), "history" (every
    `log_every` iterations), "seconds", "path" (the `RelaxedPath`)}.
    """
    if iterations < 1 or log_every < 1:
        raise ValueError(f"iterations and log_every must be >= 1, got {iterations}, {log_every}.")
    path = RelaxedPath(network, a, b, num_points=num_points, energy=energy,
                       output_metric=output_metric, representations=representations,
                       loss_weight=loss_weight, initial=initial, optimizer=optimizer,
                       jit_compile=jit_compile, parametrization=parametrization,
                       num_bends=num_bends, seed=seed)
    began = time.time()
    history, last, batch = [], {}, None
    for i, (x, y) in enumerate(dataset.take(iterations)):
        batch = int(x.shape[0])
        last = path.step(x, y)
        if (i + 1) % log_every == 0 or i + 1 == iterations:
            history.append({"iteration": i + 1, **last})
            if callback is not None:
                callback(path, i + 1)
    if path.iterations < iterations:
        raise ValueError(f"dataset ended after {path.iterations} of {iterations} iterations; "
                         "give an endless (repeated) dataset.")
    bends = path.bend_points() if path.parametrization == "bezier" else None
    return {"points": path.points(), "bends": bends, "iterations": path.iterations,
            "batch": batch,
            "counts": dict(path.counts), "energy": last.get("energy", math.nan),
            "loss": last.get("loss", math.nan), "history": history,
            "seconds": time.time() - began, "path": path}

"""Parametric curves between two trained networks (Garipov et al. 2018, "Loss
surfaces, mode connectivity, and fast ensembling of DNNs"): the mode-connectivity
baseline for `tfgeo.connect`.

A curve w(t), t in [0, 1], runs from w(0) = A to w(1) = B through n bends
M_1..M_n; each point is a list shaped like the network's trainable
variables. With nodes P_0 = A, P_j = M_j (1 <= j <= n), P_{n+1} = B:

    bezier:     w(t) = sum_j C(n+1, j) t^j (1 - t)^(n+1-j) P_j
                (n = 1: (1-t)^2 A + 2 t (1-t) M + t^2 B)
    polychain:  w(t) = sum_j max(0, 1 - |(n+1) t - j|) P_j
                (linear between P_j at t = j / (n+1); n = 1: A -> M at t = 0.5 -> B)

`CurveModel` trains the bends with A and B frozen, minimising
E_{t ~ U(0,1)} L(w(t)) stochastically as the reference implementation does:
each step samples one t for the batch, runs the network at w(t) as a
differentiable function of the bends (`keras.layers.Layer.stateless_call`
with w(t) as its trainable variables; the network's own variables are never
written) and applies the caller's optimizer to dL/dM. Bends start on the
segment, M_j = A + j/(n+1) (B - A) (the midpoint for n = 1).

Compute: a step is one forward and one backward pass on its batch, one
gradient (`CurveModel.gradients`), by the package's fixed rule (a forward
pass is 1/3 of a gradient); evaluating the finished curve is not counted.

Batch normalisation is out of scope: its statistics depend on t (the
reference implementation recomputes them at every evaluated t), so networks
with BatchNormalization layers are refused. Other non-trainable state (e.g.
dropout's seed) is carried through. The network's own regularisers and
activity losses are not applied; use `weight_decay`.
"""
from __future__ import annotations

import math
import time

import keras
import numpy as np
import tensorflow as tf

from tfgeo import callbacks as callbacks_lib
from tfgeo import distribute
from tfgeo import losses
from tfgeo import model_checks
from tfgeo.connect import paths
from tfgeo import weights as weights_lib

KINDS = ("bezier", "polychain")


def _check_kind(kind: str, num_bends) -> None:
    if kind not in KINDS:
        raise ValueError(f"Unknown curve kind {kind!r}; expected one of {KINDS}.")
    if isinstance(num_bends, bool) or int(num_bends) != num_bends or num_bends < 1:
        raise ValueError(f"num_bends must be an integer >= 1, got {num_bends!r}.")


def coefficients(kind: str, t, num_bends: int = 1) -> list:
    """The n + 2 node weights c_j(t) of w(t) = sum_j c_j(t) P_j (see the module
    docstring). t: a Python float (numpy float64 results) or a scalar tensor."""
    _check_kind(kind, num_bends)
    degree = int(num_bends) + 1
    symbolic = tf.is_tensor(t) or isinstance(t, tf.Variable)
    if not symbolic:
        t = float(t)
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"t must be in [0, 1], got {t}.")
    if kind == "bezier":
        return [math.comb(degree, j) * t ** j * (1.0 - t) ** (degree - j)
                for j in range(degree + 1)]
    maximum, absolute = (tf.maximum, tf.abs) if symbolic else (np.maximum, np.abs)
    return [maximum(0.0, 1.0 - absolute(degree * t - j)) for j in range(degree + 1)]


def curve_point(kind: str, t, a, bends, b) -> list:
    """w(t) for endpoints a, b and bends [M_1, ..., M_n] (lists shaped alike).

    A Python float t gives numpy arrays in a's dtypes, computed in float64; a
    node whose weight is exactly 1 (t = 0, t = 1, a polychain's bends) is
    returned exactly. A tensor t gives tensors, differentiable in the bends.
    """
    nodes = [a, *bends, b]
    c = coefficients(kind, t, len(bends))
    if tf.is_tensor(t) or isinstance(t, tf.Variable):
        out = []
        for i in range(len(a)):
            dtype = tf.convert_to_tensor(a[i]).dtype
            out.append(tf.add_n([tf.cast(cj, dtype) * tf.convert_to_tensor(node[i], dtype)
                                 for cj, node in zip(c, nodes)]))
        return out
    live = [(float(cj), node) for cj, node in zip(c, nodes) if cj != 0.0]
    if len(live) == 1 and live[0][0] == 1.0:
        return [np.array(w, copy=True) for w in live[0][1]]
    return [sum(cj * np.asarray(node[i], np.float64) for cj, node in live)
            .astype(np.asarray(a[i]).dtype) for i in range(len(a))]


def _layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _layers(layer)


def check_no_batch_norm(network: keras.Model, argument: str = "network") -> None:
    """Raises ValueError if `network` (or a nested model) has a BatchNormalization layer."""
    for layer in _layers(network):
        if isinstance(layer, keras.layers.BatchNormalization):
            raise ValueError(
                f"{argument} has a BatchNormalization layer ({layer.name!r}); curves do not "
                "support batch normalisation (its statistics would have to be recomputed at "
                "every t): use a network without it.")


class _Untracked:
    """Holds the network outside Keras's tracking, so the curve's trainable
    variables are its bends only."""

    def __init__(self, network):
        self.network = network


class CurveModel(keras.Model):
    """A curve A -> B whose bends `fit` trains (see the module docstring).

        curve = CurveModel(network, a, b, kind="bezier")
        curve.compile(optimizer=keras.optimizers.Adam(1e-2))  # loss: cross-entropy on logits
        curve.fit(dataset_of_x_y_batches, ...)
        points = curve.points(11)  # [A, ..., B]

    Args:
      network: a built Keras model with logits outputs; only its architecture
        and non-trainable state are used (its trainable weights are untouched).
      a, b: the endpoints, lists of arrays shaped like
        `network.trainable_variables` (frozen).
      kind: "bezier" or "polychain".
      num_bends: n >= 1 trainable bends.
      weight_decay: adds (weight_decay / 2) ||w(t)||^2 to the loss (Garipov et
        al.'s L2 on the curve point; 0 by default).
      seed: seed of the t samples.

    Calling the curve runs the network at w(t_eval) (`t_eval`, default the
    middle 0.5); `call_at(t, x)` at any t. `gradients` counts the training
    steps (one gradient each). Only `points` are meant to be kept: the curve
    is not saved as a Keras file.
    """

    def __init__(self, network: keras.Model, a, b, kind: str = "bezier", num_bends: int = 1,
                 weight_decay: float = 0.0, seed: int | None = None, t_eval: float = 0.5,
                 **kwargs):
        super().__init__(**kwargs)
        model_checks.check_network(network, "network")
        check_no_batch_norm(network)
        _check_kind(kind, num_bends)
        if not (np.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}.")
        if not 0.0 <= t_eval <= 1.0:
            raise ValueError(f"t_eval must be in [0, 1], got {t_eval}.")
        variables = network.trainable_variables
        for point in (a, b):
            weights_lib.check_vector(network, [np.asarray(w) for w in point])
        self._held = _Untracked(network)
        self.kind, self.num_bends = kind, int(num_bends)
        self.weight_decay, self.t_eval = float(weight_decay), float(t_eval)

        def frozen(prefix, values):
            out = []
            for i, (v, w) in enumerate(zip(variables, values)):
                var = self.add_weight(name=f"{prefix}_{i}", shape=tuple(v.shape), dtype=v.dtype,
                                      initializer="zeros", trainable=False)
                var.assign(np.asarray(w, dtype=v.dtype))
                out.append(var)
            return out

        self.start = frozen("start", a)
        self.end = frozen("end", b)
        a_np = [v.numpy() for v in self.start]
        b_np = [v.numpy() for v in self.end]
        self.bends = []
        for j in range(1, self.num_bends + 1):
            init = paths.interpolate(a_np, b_np, j / (self.num_bends + 1))
            bend = []
            for i, (v, w) in enumerate(zip(variables, init)):
                var = self.add_weight(name=f"bend{j}_{i}", shape=tuple(v.shape), dtype=v.dtype,
                                      initializer="zeros", trainable=True)
                var.assign(w)
                bend.append(var)
            self.bends.append(bend)
        self.gradients = self.add_weight(name="gradients", shape=(), dtype="float64",
                                         initializer="zeros", trainable=False,
                                         aggregation="only_first_replica")
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    @property
    def network(self) -> keras.Model:
        return self._held.network

    def compile(self, optimizer="adam", loss=None, **kwargs):
        """`keras.Model.compile` with cross-entropy on logits as the default loss."""
        super().compile(optimizer=optimizer,
                        loss=losses.classification_loss() if loss is None else loss, **kwargs)

    def point_tensors(self, t) -> list:
        """w(t) as tensors, differentiable in the bends; t a float or scalar tensor."""
        t = tf.convert_to_tensor(t, dtype=self.bends[0][0].dtype)
        read = lambda vs: [tf.convert_to_tensor(getattr(v, "value", v)) for v in vs]
        return curve_point(self.kind, t, read(self.start), [read(m) for m in self.bends],
                           read(self.end))

    def _run(self, point, x, training):
        net = self.network
        return net.stateless_call(point, list(net.non_trainable_variables), x, training=training)

    def call_at(self, t, inputs, training=False):
        """The network's outputs at w(t)."""
        return self._run(self.point_tensors(t), inputs, training)[0]

    def call(self, inputs, training=False):
        return self.call_at(self.t_eval, inputs, training)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        dtype = self.bends[0][0].dtype
        t = keras.random.uniform((), dtype=dtype, seed=self.seed_generator)
        bends = [getattr(v, "value", v) for v in self.trainable_variables]
        with tf.GradientTape() as tape:
            point = self.point_tensors(t)
            y_pred, state = self._run(point, x, True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                     training=True)
            total = loss
            if self.weight_decay:
                # Divided by the replica count like `compute_loss`: the gradients
                # summed over replicas weigh it once.
                total += 0.5 * self.weight_decay / distribute.num_replicas() * tf.add_n(
                    [tf.reduce_sum(tf.square(tf.cast(w, loss.dtype))) for w in point])
        grads = tape.gradient(total, bends)
        self.optimizer.apply(grads, self.trainable_variables)
        for var, value in zip(self.network.non_trainable_variables, state):
            var.assign(value)
        self.gradients.assign_add(tf.constant(1.0, tf.float64))
        mean_loss = loss * tf.cast(distribute.num_replicas(), loss.dtype)
        for tracker in self.metrics:
            if tracker.name == "loss":
                tracker.update_state(mean_loss, sample_weight=tf.shape(y_pred)[0])
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def bend_points(self) -> list:
        """[M_1, ..., M_n], each a list of numpy arrays."""
        return [[v.numpy() for v in bend] for bend in self.bends]

    def points(self, num_points: int = 11) -> list:
        """w(t) at num_points equally spaced t in [0, 1] (numpy arrays); the first
        is exactly A, the last exactly B."""
        if num_points < 2:
            raise ValueError(f"num_points must be >= 2, got {num_points}.")
        a = [v.numpy() for v in self.start]
        b = [v.numpy() for v in self.end]
        bends = self.bend_points()
        return [curve_point(self.kind, float(t), a, bends, b)
                for t in np.linspace(0.0, 1.0, num_points)]


def train_curve(network: keras.Model, a, b, dataset, steps: int, kind: str = "bezier",
                num_bends: int = 1, optimizer=None, num_points: int = 11,
                weight_decay: float = 0.0, seed: int | None = None, jit_compile: bool = True,
                log_every: int = 100, verbose: int = 0) -> dict:
    """Trains a `CurveModel` for `steps` steps on an endless `dataset` of (x, y)
    batches and samples it.

    `optimizer` defaults to Adam(1e-3). Returns {"points": num_points points
    [A, ..., B] equally spaced in t, "steps", "gradients" (one per step, each
    on one batch of `dataset`), "loss" (the last logged epoch's mean training
    loss at the sampled t), "seconds", "curve" (the trained `CurveModel`)}.
    """
    if steps < 1 or log_every < 1:
        raise ValueError(f"steps and log_every must be >= 1, got {steps}, {log_every}.")
    curve = CurveModel(network, a, b, kind=kind, num_bends=num_bends,
                       weight_decay=weight_decay, seed=seed)
    curve.compile(optimizer=optimizer or keras.optimizers.Adam(1e-3), jit_compile=jit_compile)
    per_epoch = min(log_every, steps)
    counter = callbacks_lib.StepCounter(limit=steps)
    began = time.time()
    history = distribute.fit(curve, dataset, epochs=math.ceil(steps / per_epoch),
                             steps_per_epoch=per_epoch, callbacks=[counter], verbose=verbose)
    seconds = time.time() - began
    return {"points": curve.points(num_points), "steps": counter.count,
            "gradients": float(curve.gradients.numpy()),
            "loss": float(history["loss"][-1]), "seconds": seconds, "curve": curve}

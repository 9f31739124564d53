"""Metrics and preconditioners by name, and the curvature a walk carries between steps.

Metric specs (`make_metric`, `GeodesicModel(metric=...)`, the runners' --metric):

  logits                         g pulled back from the outputs with the output metric
  hidden                         every weighted layer's pre-activations and the outputs
                                 (`tfgeo.hidden_metric`)
  hidden:dense,dense_1,logits    the named layers' pre-activations (and "logits")
  kfac                           the Kronecker-factored approximation of the logit metric
                                 (`tfgeo.kfac`), from factors averaged over the walk's batches
  diagonal                       the diagonal of that approximation

Preconditioners (--preconditioner): none, kfac, diagonal. In a walk the
factors are an exponential moving average over the metric batches seen so
far (so they see far more inputs than one batch), refreshed every step, and
their eigendecompositions every `inverse_every` steps (`CurvatureState`).
"""
from __future__ import annotations

import keras
import tensorflow as tf

from tfgeo import distribute
from tfgeo import hidden_metric
from tfgeo import kfac
from tfgeo import linear_operator
from tfgeo import metric as metric_lib
from tfgeo import representations

METRICS = ("logits", "hidden", "kfac", "diagonal")
PRECONDITIONERS = ("none", "kfac", "diagonal")


def parse_metric(spec: str) -> tuple[str, list | None]:
    """(kind, layers) of a metric spec; ValueError names a bad one."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"metric must be a name from {METRICS}, got {spec!r}.")
    kind, _, rest = spec.partition(":")
    if kind not in METRICS:
        raise ValueError(f"Unknown metric {spec!r}; expected one of {METRICS} "
                         "(hidden:<layer>,<layer>,... names layers).")
    if rest and kind != "hidden":
        raise ValueError(f"Metric {kind!r} takes no layer list ({spec!r}).")
    layers = [n.strip() for n in rest.split(",")] if rest else None
    if layers is not None and not all(layers):
        raise ValueError(f"Empty layer name in {spec!r}.")
    return kind, layers


def check_preconditioner(name: str) -> str:
    if name not in PRECONDITIONERS:
        raise ValueError(f"Unknown preconditioner {name!r}; expected one of {PRECONDITIONERS}.")
    return name


def needs_curvature(metric: str, preconditioner: str) -> bool:
    """Whether a walk with these settings carries Kronecker factors between steps."""
    return parse_metric(metric)[0] in ("kfac", "diagonal") or preconditioner != "none"


def make_metric(spec: str, model: keras.Model, inputs, output_metric="fisher",
                chunk_size: int | None = None, curvature: "CurvatureState | None" = None):
    """The metric operator named by `spec` at the model's current weights on `inputs`.

    `kfac` and `diagonal` use `curvature` (a walk's `CurvatureState`) when
    given, else Kronecker factors computed from `inputs` now.
    """
    kind, layers = parse_metric(spec)
    if kind == "logits":
        return metric_lib.MetricOperator(model, inputs, output_metric, chunk_size=chunk_size)
    if kind == "hidden":
        return hidden_metric.HiddenMetricOperator(model, inputs, layers, output_metric,
                                                  chunk_size=chunk_size)
    eigen = (curvature.eigen() if curvature is not None else kfac.eigendecompose(
        kfac.factors(model, inputs, output_metric, chunk_size=chunk_size or 256)))
    op = kfac.KFACOperator(model, eigen=eigen)
    return op if kind == "kfac" else kronecker_diagonal(op)


def kronecker_diagonal(op: kfac.KFACOperator, floor=0.0) -> linear_operator.DiagonalOperator:
    """diag(A (x) G) = diag(A) (x) diag(G) per layer (+ floor), 0 (+ floor) elsewhere."""
    diag = [None] * len(op.shapes)
    for w, e in zip(op.layers, op.eigen):
        a = tf.reduce_sum(tf.square(e.a_vectors) * e.a_values[None, :], axis=1)
        g = tf.reduce_sum(tf.square(e.g_vectors) * e.g_values[None, :], axis=1)
        block = a[:, None] * g[None, :] + floor
        op.unmatrix(w, block, diag)
    for i in op.free:
        diag[i] = tf.fill(op.shapes[i], tf.cast(floor, op.dtype))
    return linear_operator.DiagonalOperator(diag)


def make_preconditioner(name: str, model: keras.Model, curvature: "CurvatureState",
                        damping) -> linear_operator.LinearOperator | None:
    """P ~ g + damping I with a cheap inverse, from the walk's curvature (None for 'none')."""
    check_preconditioner(name)
    if name == "none":
        return None
    op = kfac.KFACOperator(model, eigen=curvature.eigen(), damping=damping)
    return op if name == "kfac" else kronecker_diagonal(op, floor=damping)


class CurvatureState(keras.layers.Layer):
    """Kronecker factors averaged over a walk's metric batches, and their eigendecompositions.

    `update(model, inputs, output_metric, step)` folds one batch's factors in
    (A <- decay A + (1 - decay) A_batch; the first batch sets them) and
    recomputes the eigendecompositions every `inverse_every` steps. Saved
    with the walker, so a resumed walk keeps its curvature.
    """

    def __init__(self, model: keras.Model, decay: float = 0.95, inverse_every: int = 10,
                 spatial_samples: int | None = 16, hidden: list | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}.")
        if int(inverse_every) < 1:
            raise ValueError(f"inverse_every must be >= 1, got {inverse_every}.")
        self.decay, self.inverse_every = float(decay), int(inverse_every)
        self.spatial_samples = spatial_samples
        self.hidden = hidden
        layers = representations.weighted_layers(model)
        shapes = model.trainable_variables
        dtype = shapes[0].dtype
        self._vars = []
        for k, w in enumerate(layers):
            d_out = int(shapes[w.kernel].shape[-1])
            d_in = int(shapes[w.kernel].shape.num_elements() // d_out) + (w.bias is not None)
            names = ("a", "g", "a_values", "a_vectors", "g_values", "g_vectors")
            dims = ((d_in, d_in), (d_out, d_out), (d_in,), (d_in, d_in), (d_out,), (d_out, d_out))
            # Every replica computes the same values (replica-mean factors).
            self._vars.append([self.add_weight(name=f"{n}_{k}", shape=s, initializer="zeros",
                                               trainable=False, dtype=dtype,
                                               aggregation="only_first_replica")
                               for n, s in zip(names, dims)])
        self.update_count = self.add_weight(name="update_count", shape=(), initializer="zeros",
                                            trainable=False, dtype="int64",
                                            aggregation="only_first_replica")
        self.built = True

    def update(self, model, inputs, output_metric, seed) -> None:
        batch = kfac.factors_on_batch(model, inputs, output_metric, seed, self.spatial_samples,
                                      hidden=self.hidden)
        batch = distribute.replica_mean(list(batch.a) + list(batch.g))
        first = tf.equal(self.update_count, 0)
        decay = tf.where(first, 0.0, self.decay)
        n = len(self._vars)
        for k, vs in enumerate(self._vars):
            for var, new in ((vs[0], batch[k]), (vs[1], batch[n + k])):
                var.assign(decay * var + (1.0 - decay) * tf.cast(new, var.dtype))
        refresh = tf.equal(self.update_count % self.inverse_every, 0)
        self.update_count.assign_add(1)

        def recompute():
            for vs in self._vars:
                for values, vectors, factor in ((vs[2], vs[3], vs[0]), (vs[4], vs[5], vs[1])):
                    s, u = tf.linalg.eigh(factor)
                    values.assign(tf.maximum(s, 0.0))
                    vectors.assign(u)
            return tf.constant(True)

        tf.cond(refresh, recompute, lambda: tf.constant(False))

    def eigen(self) -> list:
        return [kfac.Eigen(*(tf.convert_to_tensor(v) for v in vs[2:])) for vs in self._vars]

    def call(self, inputs):  # a layer must be callable; the state is not used as one
        return inputs

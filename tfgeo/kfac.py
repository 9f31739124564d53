"""Kronecker-factored curvature (K-FAC, Martens & Grosse 2015; KFC for convolutions,
Grosse & Martens 2016): a metric over thousands of inputs with an exact damped inverse.

For a Dense layer z = W^T a + b, write its weights as one matrix
W~ = [W; b^T] of shape [d_in + 1, d_out] and a~ = [a; 1]. The layer's block
of g = (1/N) sum_i J_i^T M_i J_i is approximated by

    A (x) G,   A = E[a~ a~^T] ([d_in+1]^2),   G = E[g g^T] ([d_out]^2),

with g = J_z^T e the back-propagated output noise, E[e e^T] = M (one sample
per input: the cost of a gradient). As an operator, (A (x) G) vec(V) is
A V G. For a Conv2D layer a~ is a receptive field (patch) at one output
location and the expectations also run over locations (A a mean, G a sum per
example), with optionally a random subset of locations for A, whose cost
otherwise grows with the patch size squared. Other trainable variables
(e.g. normalisation scales) get no curvature here (a zero block).

`KFACOperator.solve` applies the exact inverse of the damped factorisation,
(A (x) G + lambda I)^{-1}, from the eigendecompositions of A and G:
V -> U_A [(U_A^T V U_G) / (s_A s_G^T + lambda)] U_G^T, and lambda^{-1} on
the zero blocks, so it serves as a preconditioner for CG on g + lambda I.
"""
from __future__ import annotations

from typing import NamedTuple

import keras
import tensorflow as tf

from tfgeo import batching
from tfgeo import linear_operator
from tfgeo import output_metrics
from tfgeo import representations
from tfgeo import vectors
from tfgeo import weights as weights_lib


class Factors(NamedTuple):
    """Per weighted layer (in `representations.weighted_layers` order): A and G."""
    a: list  # [d_in (+1), d_in (+1)] each
    g: list  # [d_out, d_out] each


def _layer_inputs(w: representations.WeightedLayer, x, spatial_samples, seed):
    """a~ rows: [M, d_in (+1)] (Dense: one per example; Conv2D: per location)."""
    if isinstance(w.layer, keras.layers.Conv2D):
        patches = representations.conv_patches(w.layer, x)
        rows = tf.reshape(patches, [-1, tf.shape(patches)[-1]])
        if spatial_samples:
            n = tf.shape(patches)[0]
            locations = tf.shape(patches)[1] * tf.shape(patches)[2]
            k = tf.minimum(spatial_samples, locations)
            pick = tf.random.stateless_uniform([n, k], seed, 0, locations, dtype=tf.int32)
            pick = pick + locations * tf.range(n)[:, None]
            rows = tf.gather(rows, tf.reshape(pick, [-1]))
    else:
        rows = tf.reshape(x, [-1, tf.shape(x)[-1]])
    if w.bias is not None:
        rows = tf.concat([rows, tf.ones_like(rows[:, :1])], axis=1)
    return rows


def _metric_roots(metric, outputs):
    """M_i^{1/2} per example, [N, C, C], from M_i applied to the unit vectors."""
    c = tf.shape(outputs)[-1]
    eye = tf.eye(c, dtype=outputs.dtype)
    n = tf.shape(outputs)[0]
    rows = tf.repeat(outputs, c, axis=0)
    m = tf.reshape(metric.apply(rows, tf.tile(eye, [n, 1])), [n, c, c])
    s, u = tf.linalg.eigh(0.5 * (m + tf.transpose(m, [0, 2, 1])))
    return tf.matmul(u * tf.sqrt(tf.maximum(s, 0.0))[:, None, :], u, transpose_b=True)


def factors_on_batch(model: keras.Model, inputs, output_metric="fisher", seed=(0, 0),
                     spatial_samples: int | None = None, exact: bool = False,
                     hidden: list | None = None) -> Factors:
    """A and G of every weighted layer, as means over one batch (see the module docstring).

    With `exact`, G is the exact mean of J_z^T M J_z (one backward pass per
    output, from M^{1/2}'s columns) instead of one noise sample per example.
    With `hidden` (the names of a `tfgeo.hidden_metric` metric's
    representations, "logits" for the outputs, weighted "scale"), G
    approximates that metric's blocks instead: the noise e_k ~ N(0, c_k M_k)
    of every representation is back-propagated together (sampled only).
    """
    metric = output_metrics.get(output_metric)
    layers = representations.weighted_layers(model)
    seed = tf.convert_to_tensor(seed, tf.int32)
    if hidden is not None and exact:
        raise ValueError("exact factors are for the logit metric only.")
    with tf.GradientTape(watch_accessed_variables=False, persistent=exact) as tape:
        # Watching the weights records the path from each z_l to the outputs.
        tape.watch(weights_lib.backing_variables(model))
        with representations.capture(layers) as seen:
            outputs = model(inputs, training=False)
        zs = [seen.preactivations[w.name] for w in layers]
        fixed = tf.stop_gradient(outputs)
        if exact:
            roots = _metric_roots(metric, fixed)
            pseudos = [tf.reduce_sum(roots[:, :, k] * outputs) for k in range(outputs.shape[-1])]
        elif hidden is not None:
            pseudos = [_hidden_pseudo_loss(hidden, seen, outputs, metric, seed)]
        else:
            pseudos = [tf.reduce_sum(tf.stop_gradient(metric.sample(fixed, seed)) * outputs)]
    backs = [tape.gradient(p, zs, unconnected_gradients=tf.UnconnectedGradients.ZERO)
             for p in pseudos]
    del tape
    n = tf.cast(tf.shape(outputs)[0], outputs.dtype)
    a_factors, g_factors = [], []
    for k, w in enumerate(layers):
        rows = _layer_inputs(w, seen.inputs[w.name], spatial_samples, seed + [k + 1, 0])
        rows = tf.cast(rows, outputs.dtype)
        a_factors.append(tf.matmul(rows, rows, transpose_a=True)
                         / tf.cast(tf.shape(rows)[0], rows.dtype))
        g = tf.concat([tf.reshape(b[k], [-1, tf.shape(b[k])[-1]]) for b in backs], axis=0)
        g_factors.append(tf.matmul(g, g, transpose_a=True) / n)
    return Factors(a_factors, g_factors)


def _hidden_pseudo_loss(names, seen, outputs, metric, seed):
    """sum_k <e_k, z_k> with e_k ~ N(0, c_k M_k), c_k = 1 / (mean squared norm of z_k)."""
    total = 0.0
    for k, name in enumerate(names):
        z = outputs if name == representations.OUTPUTS else seen.preactivations[name]
        fixed = tf.stop_gradient(z)
        n = tf.cast(tf.shape(z)[0], z.dtype)
        c = 1.0 / tf.maximum(tf.reduce_sum(tf.square(fixed)) / n, tf.cast(1e-12, z.dtype))
        sub = seed + [0, 1000 + k]
        if name == representations.OUTPUTS:
            e = metric.sample(fixed, sub)
        else:
            e = tf.random.stateless_normal(tf.shape(z), sub, dtype=z.dtype)
        total = total + tf.reduce_sum(tf.stop_gradient(tf.sqrt(c) * e) * z)
    return total


def factors(model: keras.Model, inputs, output_metric="fisher", chunk_size: int = 256,
            seed: int = 0, spatial_samples: int | None = None, exact: bool = False,
            hidden: list | None = None) -> Factors:
    """A and G over all of `inputs` (thousands of examples), chunk by chunk:
    the example-weighted mean of `factors_on_batch` on each chunk, each with
    its own noise."""
    n = batching.num_examples(inputs)
    on_batch = tf.function(lambda x, s: factors_on_batch(model, x, output_metric, s,
                                                         spatial_samples, exact, hidden))
    total = None
    for k, start in enumerate(range(0, n, chunk_size)):
        chunk = tf.nest.map_structure(lambda a: a[start:start + chunk_size], inputs)
        size = batching.num_examples(chunk)
        part = on_batch(chunk, tf.constant([seed, k], tf.int32))
        part = [[t * (size / n) for t in ts] for ts in part]
        total = part if total is None else [[t + p for t, p in zip(ts, ps)]
                                            for ts, ps in zip(total, part)]
    return Factors(*total)


class Eigen(NamedTuple):
    """Eigendecompositions of one layer's factors."""
    a_values: tf.Tensor
    a_vectors: tf.Tensor
    g_values: tf.Tensor
    g_vectors: tf.Tensor


def eigendecompose(f: Factors) -> list[Eigen]:
    """Per layer: (s_A, U_A, s_G, U_G), eigenvalues clipped at 0 (the factors are PSD)."""
    out = []
    for a, g in zip(f.a, f.g):
        sa, ua = tf.linalg.eigh(a)
        sg, ug = tf.linalg.eigh(g)
        out.append(Eigen(tf.maximum(sa, 0.0), ua, tf.maximum(sg, 0.0), ug))
    return out


class KFACOperator(linear_operator.LinearOperator):
    """sum over layers of A_l (x) G_l, with the exact inverse of its damped form.

    Args:
      model: the network (its weighted layers define the blocks).
      factors: `Factors` (from `factors` / `factors_on_batch`), or
      eigen: their `eigendecompose`d form (computed here if not given).
      damping: lambda in `solve` = (A (x) G + lambda I)^{-1} (the matrix-vector
        product is undamped; use `.damped(lambda)` for g + lambda I).
    """

    has_inverse = True

    def __init__(self, model: keras.Model, factors: Factors | None = None,
                 eigen: list | None = None, damping=1e-3):
        weights_lib.check_trainable(model)
        variables = model.trainable_variables
        super().__init__([w.shape for w in variables], variables[0].dtype)
        self.layers = representations.weighted_layers(model)
        if eigen is None:
            if factors is None:
                raise ValueError("KFACOperator needs factors or their eigendecompositions.")
            eigen = eigendecompose(factors)
        if len(eigen) != len(self.layers):
            raise ValueError(f"{len(eigen)} factor pairs for {len(self.layers)} weighted layers.")
        self.eigen = eigen
        self.damping = vectors.scalar(damping, self.dtype)
        owned = {i for w in self.layers for i in (w.kernel, w.bias) if i is not None}
        self.free = [i for i in range(len(self.shapes)) if i not in owned]

    def _matrix(self, w, v):
        kernel = tf.reshape(v[w.kernel], [-1, self.shapes[w.kernel][-1]])
        if w.bias is None:
            return kernel
        return tf.concat([kernel, v[w.bias][None, :]], axis=0)

    def unmatrix(self, w, m, out):
        """Writes the layer block `m` ([d_in (+1), d_out], bias row last) into `out`,
        the weight-space vector, at layer `w`'s kernel (and bias)."""
        d_in = self.shapes[w.kernel].num_elements() // self.shapes[w.kernel][-1]
        out[w.kernel] = tf.reshape(m[:d_in], self.shapes[w.kernel])
        if w.bias is not None:
            out[w.bias] = m[d_in]

    def _apply(self, v, per_layer, free):
        out = [None] * len(v)
        for w, e in zip(self.layers, self.eigen):
            self.unmatrix(w, per_layer(e, self._matrix(w, v)), out)
        for i in self.free:
            out[i] = free(v[i])
        return out

    def _matvec(self, v):
        def block(e, m):  # U_A diag(s_A) U_A^T m U_G diag(s_G) U_G^T
            inner = tf.matmul(tf.matmul(e.a_vectors, m, transpose_a=True), e.g_vectors)
            inner = inner * e.a_values[:, None] * e.g_values[None, :]
            return tf.matmul(tf.matmul(e.a_vectors, inner), e.g_vectors, transpose_b=True)

        return self._apply(v, block, tf.zeros_like)

    def _solve(self, v):
        lam = self.damping

        def block(e, m):
            inner = tf.matmul(tf.matmul(e.a_vectors, m, transpose_a=True), e.g_vectors)
            inner = inner / (e.a_values[:, None] * e.g_values[None, :] + lam)
            return tf.matmul(tf.matmul(e.a_vectors, inner), e.g_vectors, transpose_b=True)

        return self._apply(v, block, lambda t: t / lam)

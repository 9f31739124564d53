"""Output-space metrics M that are pulled back to weight space.

The weight-space metric is g(w) = (1/N) sum_i J_i^T M_i J_i, where
J_i = d f(x_i, w) / d w is the Jacobian of the model output f (shape [N, C],
logits for classifiers) and M_i is a positive semi-definite C x C matrix that
may depend on the output f(x_i). An output metric applies M_i to a batch of
output tangents t (shape [N, ...]), row by row, without forming M_i.

Which to use: `fisher` is the natural metric of a classifier's predictions
(g is the Fisher / Gauss-Newton matrix of cross-entropy), but it vanishes on
inputs the network classifies confidently, so on training inputs it may see
little; `tempered_fisher` and `centered` keep seeing those logits;
`euclidean` also counts shifts of all logits together, which change nothing.
"""
from __future__ import annotations

import tensorflow as tf


class OutputMetric:
    """Applies M(outputs) to output tangents; subclasses define `apply`."""

    name = "output_metric"

    def apply(self, outputs: tf.Tensor, tangents: tf.Tensor) -> tf.Tensor:
        """M_i t_i for every row i. outputs, tangents: [N, ...] -> [N, ...]."""
        raise NotImplementedError

    def per_example_quadratic(self, outputs, tangents) -> tf.Tensor:
        """t_i^T M_i t_i for every row i, shape [N]."""
        mt = self.apply(outputs, tangents)
        axes = tf.range(1, tf.rank(tangents))
        return tf.reduce_sum(mt * tangents, axis=axes)

    def sample(self, outputs, seed) -> tf.Tensor:
        """A random e_i per row with E[e_i e_i^T] = M_i (for Monte-Carlo curvature:
        the gradient of sum_i <e_i, f_i> has covariance J^T M J). seed: [2] ints."""
        raise NotImplementedError

    def divergence(self, outputs, reference) -> tf.Tensor:
        """D_i(f_i, r_i) per row, [N]: the divergence from reference outputs whose
        Hessian in f at f = r is M (so J^T M J is its Gauss-Newton matrix)."""
        raise NotImplementedError

    def residual(self, outputs, reference) -> tf.Tensor:
        """dD_i / df_i per row, [N, ...]: back-propagated, it gives the gradient of
        the divergence (the restoring direction toward the reference function)."""
        raise NotImplementedError


class Euclidean(OutputMetric):
    """M = I: the squared change of the raw outputs (logits)."""

    name = "euclidean"

    def apply(self, outputs, tangents):
        del outputs
        return tangents

    def sample(self, outputs, seed):
        return tf.random.stateless_normal(tf.shape(outputs), seed, dtype=outputs.dtype)

    def divergence(self, outputs, reference):
        return 0.5 * tf.reduce_sum(tf.square(outputs - reference), axis=-1)

    def residual(self, outputs, reference):
        return outputs - reference


class Fisher(OutputMetric):
    """M = diag(p) - p p^T with p = softmax(outputs) over the last axis.

    This is the Hessian of softmax cross-entropy with respect to the logits,
    so g is the Fisher information / generalized Gauss-Newton matrix of the
    classifier. The model must output logits (no final softmax).
    """

    name = "fisher"

    def apply(self, outputs, tangents):
        p = tf.nn.softmax(outputs, axis=-1)
        # (diag(p) - p p^T) t = p * t - p * <p, t>
        return p * (tangents - tf.reduce_sum(p * tangents, axis=-1, keepdims=True))

    def sample(self, outputs, seed):
        return _label_noise(outputs, seed)

    def divergence(self, outputs, reference):  # KL(softmax(reference) || softmax(outputs))
        return _kl(reference, outputs)

    def residual(self, outputs, reference):
        return tf.nn.softmax(outputs, -1) - tf.nn.softmax(reference, -1)


class Centered(OutputMetric):
    """M = I - 1 1^T / C: the squared change of the logits after removing their
    mean, i.e. of everything but a shift that leaves the softmax unchanged.

    Unlike the Fisher it does not vanish on confidently classified inputs,
    where p is nearly one-hot and diag(p) - p p^T nearly zero.
    """

    name = "centered"

    def apply(self, outputs, tangents):
        del outputs
        return tangents - tf.reduce_mean(tangents, axis=-1, keepdims=True)

    def sample(self, outputs, seed):
        e = tf.random.stateless_normal(tf.shape(outputs), seed, dtype=outputs.dtype)
        return e - tf.reduce_mean(e, axis=-1, keepdims=True)

    def divergence(self, outputs, reference):
        return 0.5 * tf.reduce_sum(tf.square(self.residual(outputs, reference)), axis=-1)

    def residual(self, outputs, reference):
        d = outputs - reference
        return d - tf.reduce_mean(d, axis=-1, keepdims=True)


class TemperedFisher(OutputMetric):
    """M = diag(p_T) - p_T p_T^T with p_T = softmax(outputs / T), T > 1.

    The Fisher of a softened softmax (up to the factor 1/T^2 that only rescales
    g): it weighs the non-maximal classes, so it keeps seeing the logits of
    confident inputs; as T grows it tends to `Centered` / C.
    """

    name = "tempered_fisher"

    def __init__(self, temperature: float = 4.0):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.temperature = float(temperature)

    def apply(self, outputs, tangents):
        p = tf.nn.softmax(outputs / tf.cast(self.temperature, outputs.dtype), axis=-1)
        return p * (tangents - tf.reduce_sum(p * tangents, axis=-1, keepdims=True))

    def sample(self, outputs, seed):
        return _label_noise(outputs / tf.cast(self.temperature, outputs.dtype), seed)

    def divergence(self, outputs, reference):  # T^2 KL(p_T(reference) || p_T(outputs))
        t = tf.cast(self.temperature, outputs.dtype)
        return t * t * _kl(reference / t, outputs / t)

    def residual(self, outputs, reference):
        t = tf.cast(self.temperature, outputs.dtype)
        return t * (tf.nn.softmax(outputs / t, -1) - tf.nn.softmax(reference / t, -1))


def _kl(reference_logits, logits):
    log_q = tf.nn.log_softmax(logits, -1)
    log_p = tf.nn.log_softmax(reference_logits, -1)
    return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)


def _label_noise(logits, seed):
    """onehot(y) - p with y ~ softmax(logits): covariance diag(p) - p p^T."""
    y = tf.random.stateless_categorical(logits, 1, seed)[:, 0]
    return tf.one_hot(y, tf.shape(logits)[-1], dtype=logits.dtype) - tf.nn.softmax(logits, -1)


_REGISTRY = {cls.name: cls for cls in (Euclidean, Centered, Fisher, TemperedFisher)}
NAMES = tuple(sorted(_REGISTRY))


def get(metric: str | OutputMetric) -> OutputMetric:
    """Returns an OutputMetric from a name (see `NAMES`) or instance."""
    if isinstance(metric, OutputMetric):
        return metric
    try:
        return _REGISTRY[metric]()
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown output metric {metric!r}; expected one of {NAMES} "
            "or an tfgeo.output_metrics.OutputMetric instance."
        ) from None

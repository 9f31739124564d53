"""Output-space metrics M that are pulled back to weight space.

The weight-space metric is g(w) = (1/N) sum_i J_i^T M_i J_i, where
J_i = d f(x_i, w) / d w is the Jacobian of the model output f (shape [N, C],
logits for classifiers) and M_i is a positive semi-definite C x C matrix that
may depend on the output f(x_i). An output metric applies M_i to a batch of
output tangents t (shape [N, ...]), row by row, without forming M_i.
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


class Euclidean(OutputMetric):
    """M = I: the squared change of the raw outputs (logits)."""

    name = "euclidean"

    def apply(self, outputs, tangents):
        del outputs
        return tangents


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


_REGISTRY = {cls.name: cls for cls in (Euclidean, Fisher)}
NAMES = tuple(sorted(_REGISTRY))


def get(metric: str | OutputMetric) -> OutputMetric:
    """Returns an OutputMetric from a name ('euclidean', 'fisher') or instance."""
    if isinstance(metric, OutputMetric):
        return metric
    try:
        return _REGISTRY[metric]()
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown output metric {metric!r}; expected one of {NAMES} "
            "or an tfgeo.output_metrics.OutputMetric instance."
        ) from None

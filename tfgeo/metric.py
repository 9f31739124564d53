"""The metric pulled back from the outputs: g(w) = (1/N) sum_i J_i^T M_i J_i, matrix-free.

`metric_vector_product` computes g v as a forward-mode JVP (u = J v, by
`tf.autodiff.ForwardAccumulator`) followed by one reverse-mode VJP
(J^T (M u) / N, by `tf.GradientTape.gradient(..., output_gradients=...)`).
No Jacobian is formed and nothing is differentiated twice, so the cost is
about one forward pass, one JVP and one backward pass (1.5-2x a gradient).
`MetricOperator` is the same product as a `tfgeo.linear_operator.LinearOperator`.
"""
from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from tfgeo import model_checks
from tfgeo import batching
from tfgeo import linear_operator
from tfgeo import output_metrics
from tfgeo import vectors
from tfgeo import weights as weights_lib


def _batch_size(outputs):
    return tf.cast(tf.shape(outputs)[0], outputs.dtype)


def _tangents(variables, vector):
    return [tf.convert_to_tensor(t, dtype=w.dtype) for t, w in zip(vector, variables)]


def output_jvp(model, inputs, vector, training=False):
    """Returns (f(x, w), J v): outputs [N, ...] and their directional derivative."""
    variables = weights_lib.backing_variables(model)
    with tf.autodiff.ForwardAccumulator(variables, _tangents(variables, vector)) as acc:
        outputs = model(inputs, training=training)
    jv = acc.jvp(outputs, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return outputs, jv


def metric_vector_product(
    model: keras.Model,
    inputs,
    vector: Sequence[tf.Tensor],
    output_metric="euclidean",
    training: bool = False,
) -> list[tf.Tensor]:
    """g v = (1/N) J^T M J v for a batch `inputs` of N examples.

    Args:
      model: a Keras model; the metric is over `model.trainable_variables`.
      inputs: a batch the model accepts, leading dimension N.
      vector: list of tensors shaped like `model.trainable_variables`.
      output_metric: a name from `tfgeo.output_metrics.NAMES` or an `OutputMetric`.
      training: passed to the model call. Keep False so that dropout and
        batch normalization use inference behaviour and g is deterministic.
    Returns:
      g v, a list of tensors shaped like `vector`.
    """
    model_checks.check_network(model)
    weights_lib.check_vector(model, vector)
    metric = output_metrics.get(output_metric)
    variables = weights_lib.backing_variables(model)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(variables)
        with tf.autodiff.ForwardAccumulator(variables, _tangents(variables, vector)) as acc:
            outputs = model(inputs, training=training)
        jv = acc.jvp(outputs, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    # M is evaluated at the current outputs and held fixed: g is a Gauss-Newton
    # matrix, so the cotangent is a constant of the reverse pass.
    cotangent = tf.stop_gradient(metric.apply(outputs, jv) / _batch_size(outputs))
    return vectors.dense(tape.gradient(
        outputs,
        variables,
        output_gradients=cotangent,
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
    ))


def metric_quadratic_form(
    model, inputs, vector, output_metric="euclidean", training=False
) -> tf.Tensor:
    """<v, g v> = (1/N) sum_i ||J_i v||^2_{M_i}, from one JVP (no reverse pass)."""
    model_checks.check_network(model)
    weights_lib.check_vector(model, vector)
    metric = output_metrics.get(output_metric)
    outputs, jv = output_jvp(model, inputs, vector, training=training)
    return tf.reduce_sum(metric.per_example_quadratic(outputs, jv)) / _batch_size(outputs)


class MetricOperator(linear_operator.LinearOperator):
    """v -> g(w) v at the model's current weights on `inputs`.

    The operator reads the model's variables at each product, so it always
    acts with the metric at the current point; its quadratic form takes one
    JVP instead of a full product. With `chunk_size`, products over many
    inputs are computed chunk by chunk (`tfgeo.batching.chunked_mean`), so
    memory stays that of one chunk.
    """

    def __init__(self, model: keras.Model, inputs, output_metric="euclidean",
                 training: bool = False, chunk_size: int | None = None):
        model_checks.check_network(model)
        model_checks.check_inputs(inputs, model=model)
        variables = model.trainable_variables
        super().__init__([w.shape for w in variables], variables[0].dtype)
        self.model = model
        self.inputs = inputs
        self.output_metric = output_metrics.get(output_metric)
        self.training = training
        self.chunk_size = chunk_size

    def _matvec(self, vector):
        return batching.chunked_mean(
            lambda x: metric_vector_product(self.model, x, vector, self.output_metric,
                                            self.training), self.inputs, self.chunk_size)

    def quadratic_form(self, vector):
        vector = self.check(vector)
        return batching.chunked_mean(
            lambda x: metric_quadratic_form(self.model, x, vector, self.output_metric,
                                            self.training), self.inputs, self.chunk_size)

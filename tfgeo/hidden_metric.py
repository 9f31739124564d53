"""The metric pulled back from hidden representations, matrix-free.

    g = sum_l c_l (1/N) sum_i J_{l,i}^T M_l J_{l,i},    J_{l,i} = d z_l(x_i, w) / d w

for representations z_l: the pre-activations W_l a_l + b_l of chosen Dense or
Conv2D layers and, under the name "logits", the model's outputs. Hidden
representations use M_l = I; the outputs use the output metric (e.g. the
Fisher). A logit metric sees at most C directions per input, and the Fisher
of a confident softmax almost none; every layer's pre-activations see far
more of what the network computes.

One product is one forward pass under a forward accumulator (J_l v for every
l from the same pass) and one reverse pass with all cotangents at once
(`GradientTape.gradient([z_1..], w, output_gradients=[c_1 M_1 J_1 v / N, ..])`):
the cost of the logit metric's product.

Weights c_l: "scale" (default) divides each term by the representation's
mean squared norm per example, so every layer's *relative* change counts
alike whatever its width and scale; or an explicit list.
"""
from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from tfgeo import model_checks
from tfgeo import batching
from tfgeo import linear_operator
from tfgeo import output_metrics
from tfgeo import representations
from tfgeo import vectors
from tfgeo import weights as weights_lib


def representation_names(model, layers=None) -> list:
    """The representations a hidden metric on `layers` uses (None: every weighted
    layer but the last, and "logits"); ValueError names unknown or repeated layers."""
    return _names(model, layers)


def _names(model, layers):
    if layers is None:  # every weighted layer but the last (whose pre-activation is the outputs)
        hidden = [w.name for w in representations.weighted_layers(model)][:-1]
        return hidden + [representations.OUTPUTS]
    layers = list(layers)
    if not layers:
        raise ValueError("A hidden-representation metric needs at least one layer.")
    if len(set(layers)) != len(layers):
        raise ValueError(f"Layers repeat in {layers}.")
    representations.select(model, [n for n in layers if n != representations.OUTPUTS])
    return layers


class HiddenMetricOperator(linear_operator.LinearOperator):
    """v -> g v for the metric pulled back from `layers` (see the module docstring).

    Args:
      model: a built Keras model.
      inputs: the batch the metric averages over (array, tensor or dict).
      layers: names of Dense/Conv2D layers whose pre-activations count, and
        "logits" for the outputs; None: every weighted layer but the last,
        and the outputs.
      output_metric: M for the outputs (hidden layers use M = I).
      weights: "scale" or one number per layer.
      chunk_size: compute products chunk by chunk over large inputs.
    """

    def __init__(self, model: keras.Model, inputs, layers: Sequence[str] | None = None,
                 output_metric="euclidean", weights="scale", chunk_size: int | None = None,
                 training: bool = False):
        model_checks.check_network(model)
        model_checks.check_inputs(inputs, model=model)
        variables = model.trainable_variables
        super().__init__([w.shape for w in variables], variables[0].dtype)
        self.model, self.inputs, self.training = model, inputs, training
        self.names = _names(model, layers)
        hidden = [n for n in self.names if n != representations.OUTPUTS]
        self.layers = representations.select(model, hidden)
        self.output_metric = output_metrics.get(output_metric)
        if isinstance(weights, str):
            if weights != "scale":
                raise ValueError(f"weights must be 'scale' or a list of numbers, got {weights!r}.")
            self.weights = None
        else:
            self.weights = [float(c) for c in weights]
            if len(self.weights) != len(self.names):
                raise ValueError(f"{len(self.weights)} weights for {len(self.names)} layers.")
        self.chunk_size = chunk_size

    def _representations_and_jvps(self, x, vector, tape=None):
        variables = weights_lib.backing_variables(self.model)
        tangents = [tf.convert_to_tensor(t, dtype=w.dtype) for t, w in zip(vector, variables)]
        with tf.autodiff.ForwardAccumulator(variables, tangents) as acc:
            with representations.capture(self.layers, inputs=False) as seen:
                outputs = self.model(x, training=self.training)
        zs = [outputs if n == representations.OUTPUTS else seen.preactivations[n]
              for n in self.names]
        jvs = [acc.jvp(z, unconnected_gradients=tf.UnconnectedGradients.ZERO) for z in zs]
        return zs, jvs

    def _terms(self, zs, jvs):
        """(c_l / N, M_l J_l v) for each representation."""
        out = []
        for k, (name, z, jv) in enumerate(zip(self.names, zs, jvs)):
            n = tf.cast(tf.shape(z)[0], z.dtype)
            if self.weights is None:
                scale = tf.stop_gradient(tf.reduce_sum(tf.square(z)) / n)
                c = 1.0 / tf.maximum(scale, tf.cast(1e-12, z.dtype))
            else:
                c = tf.cast(self.weights[k], z.dtype)
            mjv = self.output_metric.apply(z, jv) if name == representations.OUTPUTS else jv
            out.append((c / n, mjv))
        return out

    def _product(self, x, vector):
        variables = weights_lib.backing_variables(self.model)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            zs, jvs = self._representations_and_jvps(x, vector)
        cotangents = [tf.stop_gradient(c * mjv) for c, mjv in self._terms(zs, jvs)]
        return vectors.dense(tape.gradient(zs, variables, output_gradients=cotangents,
                                           unconnected_gradients=tf.UnconnectedGradients.ZERO))

    def _quadratic(self, x, vector):
        zs, jvs = self._representations_and_jvps(x, vector)
        return tf.add_n([c * tf.reduce_sum(mjv * jv)
                         for (c, mjv), jv in zip(self._terms(zs, jvs), jvs)])

    def _matvec(self, vector):
        return batching.chunked_mean(lambda x: self._product(x, vector), self.inputs,
                                     self.chunk_size)

    def quadratic_form(self, vector):
        vector = self.check(vector)
        return batching.chunked_mean(lambda x: self._quadratic(x, vector), self.inputs,
                                     self.chunk_size)

"""Compute accounting in gradient-equivalents, from costs measured on the spot.

Methods are compared at equal compute: a metric-vector product costs
`metric_vector_product` gradients and a quadratic form <v, g v> (one JVP)
`quadratic_form` gradients, both measured as median wall-time ratios to a
loss gradient on the same model, batch and compile mode.
"""
from __future__ import annotations

import time
from typing import NamedTuple

import keras
import tensorflow as tf

from tfgeo import distribute
from tfgeo import metric


class CostRatios(NamedTuple):
    gradient_seconds: float  # median time of one loss gradient on the batch
    metric_vector_product: float  # time(g v) / time(gradient)
    quadratic_form: float  # time(<v, g v>) / time(gradient)

    def gradient_equivalents(self, metric_products, quadratic_forms=0, gradients=0) -> float:
        """Total cost of the given counts, in gradients."""
        return (float(metric_products) * self.metric_vector_product
                + float(quadratic_forms) * self.quadratic_form + float(gradients))


def median_seconds(fn, args, repeats: int = 20) -> float:
    """Median wall time of `fn(*args)` after one untimed call (tracing, compiling)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")

    def run():
        for t in tf.nest.flatten(fn(*args)):
            t.numpy()  # wait for the result

    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def measure(model: keras.Model, inputs, targets, output_metric: str = "fisher",
            jit_compile: bool = True, repeats: int = 20, loss=None) -> CostRatios:
    """Measures g v and <v, g v> against a loss gradient on (inputs, targets).

    The probe vector is random; the costs do not depend on its values.
    """
    loss = keras.losses.get(loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    variables = metric.backing_variables(model)
    x = tf.convert_to_tensor(inputs)
    y = tf.convert_to_tensor(targets)
    v = [tf.random.stateless_normal(w.shape, seed=[1, i], dtype=w.dtype)
         for i, w in enumerate(variables)]

    def gradient(x, y):
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=False))
        return tape.gradient(value, variables)

    def product(x, v):
        return metric.metric_vector_product(model, x, v, output_metric)

    def quadratic(x, v):
        return metric.metric_quadratic_form(model, x, v, output_metric)

    def timed(fn, args):
        compiled = tf.function(fn, jit_compile=jit_compile)
        return median_seconds(lambda *a: distribute.on_one_replica(compiled, *a), args, repeats)

    t_grad = timed(gradient, (x, y))
    t_gv = timed(product, (x, v))
    t_q = timed(quadratic, (x, v))
    return CostRatios(t_grad, t_gv / t_grad, t_q / t_grad)

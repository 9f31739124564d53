"""The exact diagonal of the pulled-back metric, diag(g) = (1/N) sum_i diag(J_i^T M_i J_i).

Per example, diag(J_i^T M_i J_i)_p = sum_{c,d} M_i,cd J_i,cp J_i,dp: from the
per-example Jacobian of the C outputs (one vectorised reverse pass per
output, `GradientTape.jacobian` with pfor), M applied along the output axis
by the output metric itself, so every output metric works. Memory is
bounded by computing `chunk_elements` (examples x outputs x weights) at a
time. For the Fisher this is the exact diagonal Fisher of EWC, with no label
sampling.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfgeo import distribute
from tfgeo import linear_operator
from tfgeo import output_metrics
from tfgeo import weights as weights_lib


def diagonal(model: keras.Model, inputs, output_metric="fisher",
             chunk_elements: int = 2 ** 25) -> list[np.ndarray]:
    """diag(g), shaped like the trainable variables (numpy arrays).

    Args:
      inputs: an array [N, ...] or a dict of arrays (e.g. multi-head inputs).
      output_metric: a name from `tfgeo.output_metrics.NAMES` or an instance.
      chunk_elements: bound on the per-example, per-output Jacobian held at once.
    """
    metric = output_metrics.get(output_metric)
    variables = weights_lib.backing_variables(model)
    n_params = sum(int(np.prod(v.shape)) for v in variables)
    n = int(np.shape(tf.nest.flatten(inputs)[0])[0])
    probe = model(tf.nest.map_structure(lambda a: a[:1], inputs), training=False)
    classes = int(probe.shape[-1])
    chunk = max(1, chunk_elements // max(1, classes * n_params))

    @tf.function
    def chunk_sum(x):
        with tf.GradientTape(persistent=False) as tape:
            tape.watch(variables)
            outputs = model(x, training=False)
        jac = tape.jacobian(outputs, variables, experimental_use_pfor=True)  # [n, C, *shape]
        sums = []
        for j in jac:
            count = tf.shape(j)[0]
            cols = tf.reshape(tf.transpose(tf.reshape(j, [count, classes, -1]), [0, 2, 1]),
                              [-1, classes])  # one row per (example, weight)
            rows = tf.repeat(tf.stop_gradient(outputs), tf.shape(cols)[0] // count, axis=0)
            quad = tf.reduce_sum(cols * metric.apply(rows, cols), axis=-1)
            sums.append(tf.reduce_sum(tf.reshape(quad, [count, -1]), axis=0))
        return sums

    total = [np.zeros(int(np.prod(v.shape)), v.dtype.as_numpy_dtype) for v in variables]
    for start in range(0, n, chunk):
        part = distribute.on_one_replica(chunk_sum, tf.nest.map_structure(
            lambda a: tf.convert_to_tensor(a[start:start + chunk]), inputs))
        for t, s in zip(total, part):
            t += s.numpy()
    return [(t / n).reshape(v.shape) for t, v in zip(total, variables)]


def diagonal_operator(model: keras.Model, inputs, output_metric="fisher",
                      floor: float = 0.0) -> linear_operator.DiagonalOperator:
    """diag(g) (+ floor) as an operator, e.g. a preconditioner for CG on g + lambda I
    (give floor = lambda so its inverse exists)."""
    diag = diagonal(model, inputs, output_metric)
    dtype = model.trainable_variables[0].dtype
    return linear_operator.DiagonalOperator([tf.constant(d + floor, dtype) for d in diag])

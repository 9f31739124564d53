"""Dense references for the matrix-free operators, for small models only."""
import keras
import numpy as np
import tensorflow as tf

from tfgeo import weights as weights_lib


def small_mlp(dtype="float64", inputs=6, hidden=5, classes=3):
    return keras.Sequential([
        keras.Input((inputs,), dtype=dtype),
        keras.layers.Dense(hidden, activation="tanh", dtype=dtype),
        keras.layers.Dense(classes, dtype=dtype),
    ])


def small_cnn(dtype="float64", classes=3, pool="max"):
    pooling = {"max": keras.layers.MaxPooling2D, "avg": keras.layers.AveragePooling2D}[pool]
    return keras.Sequential([
        keras.Input((6, 6, 1), dtype=dtype),
        keras.layers.Conv2D(2, 3, activation="tanh", dtype=dtype),
        pooling(2, dtype=dtype),
        keras.layers.Flatten(dtype=dtype),
        keras.layers.Dense(classes, dtype=dtype),
    ])


def jacobian(model, x):
    """J of shape [N, C, P]: d outputs / d flattened trainable weights."""
    variables = weights_lib.backing_variables(model)
    with tf.GradientTape() as tape:
        out = model(x, training=False)
    blocks = tape.jacobian(out, variables)
    n, c = out.shape
    return np.concatenate([b.numpy().reshape(n, c, -1) for b in blocks], axis=-1), out.numpy()


def dense_metric(model, x, output_metric):
    """g = (1/N) sum_i J_i^T M_i J_i as a [P, P] numpy array."""
    jac, out = jacobian(model, x)
    n, c, _ = jac.shape
    if output_metric == "euclidean":
        m = np.broadcast_to(np.eye(c), (n, c, c))
    else:
        z = out - out.max(axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        m = np.stack([np.diag(pi) - np.outer(pi, pi) for pi in p])
    return np.einsum("ncp,ncd,ndq->pq", jac, m, jac) / n


def random_vector(model, seed=0):
    rng = np.random.default_rng(seed)
    return [tf.constant(rng.standard_normal(w.shape), dtype=w.dtype) for w in model.trainable_variables]

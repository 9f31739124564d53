"""The adaptive geodesic step: Adam when rho = 0, the closed form
lr (rho g + D)^{-1} m against a dense metric, a zero learning rate, and
less change on the memory than Adam."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfgeo.continual import adaptive_geodesic
from tfgeo import geodesic_model
from tfgeo import metric
from tfgeo import objectives

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _net(seed=0, hidden=6):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(hidden, activation="tanh"),
                             keras.layers.Dense(3)])


def _data(seed=0, n=32):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0).astype(np.int32)


def _batches(x, y, memory, batch=8):
    metric_ds = tf.data.Dataset.from_tensor_slices(memory).repeat().batch(
        len(memory), drop_remainder=True)
    objective_ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(
        batch, drop_remainder=True)
    return geodesic_model.zip_batches(metric_ds, objective_ds)


def _walker(net, **kwargs):
    walker = adaptive_geodesic.AdaptiveGeodesicModel(net, objectives.TaskLossDescent(), **kwargs)
    walker.compile(loss=LOSS, jit_compile=False)
    return walker


def test_zero_metric_weight_is_adam():
    x, y = _data()
    memory = _data(1, 16)[0]
    net, twin = _net(), _net()
    twin.set_weights(net.get_weights())
    _walker(net, learning_rate=0.01, metric_weight=0.0).fit(
        _batches(x, y, memory), steps_per_epoch=4, epochs=2, verbose=0)
    twin.compile(keras.optimizers.Adam(0.01), LOSS, jit_compile=False)
    twin.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(net.get_weights(), twin.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_zero_learning_rate_leaves_the_network_unchanged():
    x, y = _data()
    net = _net()
    before = net.get_weights()
    _walker(net, learning_rate=0.0, metric_weight=10.0).fit(
        _batches(x, y, _data(1, 16)[0]), steps_per_epoch=3, epochs=1, verbose=0)
    for a, b in zip(net.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_step_equals_closed_form_with_a_dense_metric():
    x, y = _data()
    memory = _data(1, 16)[0]
    net = _net(hidden=3)
    lr, rho, b1, b2, eps = 0.05, 3.0, 0.9, 0.999, 1e-7
    walker = _walker(net, learning_rate=lr, metric_weight=rho, cg_max_iterations=200,
                     cg_tolerance=1e-10)
    w0 = np.concatenate([w.ravel() for w in net.get_weights()])
    g = metric.MetricOperator(net, memory, "fisher").to_dense()
    v = np.concatenate([t.numpy().ravel() for t in
                        objectives.TaskLossDescent().direction(net, x[:8], y[:8])])
    m_hat = (1 - b1) * v / (1 - b1)
    d = np.sqrt((1 - b2) * v ** 2 / (1 - b2)) + eps
    expected = lr * np.linalg.solve(rho * g + np.diag(d), m_hat)
    walker.fit(_batches(x, y, memory), steps_per_epoch=1, epochs=1, verbose=0)
    moved = np.concatenate([w.ravel() for w in net.get_weights()]) - w0
    np.testing.assert_allclose(moved, expected, rtol=2e-3, atol=1e-6)


def test_metric_keeps_the_memory_function_better_than_adam():
    x, y = _data(0, 64)
    memory = _data(1, 32)[0]
    changes = {}
    for rho in (0.0, 100.0):
        net = _net()
        before = net.predict(memory, verbose=0)
        _walker(net, learning_rate=0.02, metric_weight=rho, cg_max_iterations=10).fit(
            _batches(x, y, memory), steps_per_epoch=8, epochs=2, verbose=0)
        changes[rho] = float(np.mean((net.predict(memory, verbose=0) - before) ** 2))
    assert changes[100.0] < 0.5 * changes[0.0], changes


def test_bad_arguments_are_refused():
    net = _net()
    for kwargs, match in (({"learning_rate": -1.0}, "learning_rate"),
                          ({"metric_weight": float("nan")}, "metric_weight"),
                          ({"beta_1": 1.0}, "beta_1"), ({"metric": "bogus"}, "bogus")):
        with pytest.raises(ValueError, match=match):
            adaptive_geodesic.AdaptiveGeodesicModel(net, objectives.TaskLossDescent(), **kwargs)

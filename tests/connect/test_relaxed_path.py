"""The relaxed boundary-value geodesic: exact endpoints, an energy that does not
increase, batched products equal to per-point products, the discrete energy
against the metric's quadratic form, and a lower barrier than the straight
line on real nets."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfgeo.connect import geodesic_walk as connect
from tfgeo.connect import curves
from tfgeo import classification
from tfgeo import metric
from tfgeo import models
from tfgeo.connect import paths
from tfgeo.connect import relaxed_path
from tfgeo import weights as weights_lib
from tfgeo.experiments import data


def _net(seed=0):
    keras.utils.set_random_seed(seed)
    return models.get("mlp", (16,), 5, hidden=(8,))


def _weights(net, seed, scale=0.5):
    rng = np.random.default_rng(seed)
    return [rng.normal(scale=scale, size=tuple(v.shape)).astype(np.float32)
            for v in net.trainable_variables]


def _batch(seed=0, n=64):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 16)).astype(np.float32), rng.integers(0, 5, n).astype(np.int32)


def _assert_same(p, q):
    for x, y in zip(p, q):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("energy,representations,loss_weight,parametrization", [
    ("divergence", "logits", 0.0, "points"), ("divergence", "hidden", 1.0, "points"),
    ("metric", "logits", 1.0, "points"), ("divergence", "logits", 1.0, "bezier"),
    ("divergence", "hidden", 0.0, "bezier")])
def test_endpoints_stay_exactly_a_and_b(energy, representations, loss_weight, parametrization):
    net = _net()
    own = weights_lib.get_trainable(net)
    a, b = _weights(net, 1), _weights(net, 2)
    path = relaxed_path.RelaxedPath(net, a, b, num_points=3, energy=energy,
                                    representations=representations, loss_weight=loss_weight,
                                    optimizer=keras.optimizers.Adam(0.05), jit_compile=False,
                                    parametrization=parametrization)
    start = path.points()
    for i in range(5):
        path.step(*_batch(i))
    points = path.points()
    assert len(points) == 5
    _assert_same(points[0], a)
    _assert_same(points[-1], b)
    _assert_same(weights_lib.get_trainable(net), own)  # the network untouched
    moved = max(float(np.abs(x - y).max()) for p, q in zip(start[1:-1], points[1:-1])
                for x, y in zip(p, q))
    assert moved > 1e-3  # the inner points did move
    assert all(np.all(np.isfinite(w)) for p in points for w in p)
    k = 3
    want = ({"gradients": 5.0 * k, "forwards": 10.0, "metric_products": 0.0}
            if energy == "divergence" else
            {"gradients": 0.0, "forwards": 0.0, "metric_products": 5.0 * k})
    assert path.counts == want


def _metric_energy(net, points, x):
    """(K + 1) sum_k <dw_k, g(w_k) dw_k> by the library's quadratic form."""
    old = weights_lib.get_trainable(net)
    total = 0.0
    for p, q in zip(points, points[1:]):
        weights_lib.set_trainable(net, p)
        total += float(metric.metric_quadratic_form(
            net, x, [tf.constant(v - u) for u, v in zip(p, q)], "fisher"))
    weights_lib.set_trainable(net, old)
    return (len(points) - 1) * total


@pytest.mark.parametrize("jit_compile", [False, True])
def test_energy_does_not_increase_over_iterations(jit_compile):
    # Gradient descent with a small step on a fixed batch: the discrete
    # energy never goes up, and the metric energy it approximates goes down.
    net = _net()
    a, b = _weights(net, 1), _weights(net, 2)
    x, y = _batch(0, 128)
    path = relaxed_path.RelaxedPath(net, a, b, num_points=4, optimizer=keras.optimizers.SGD(0.02),
                                    jit_compile=jit_compile, parametrization="points")
    energies, metric_energies = [path.divergence_energy(x)], [_metric_energy(net, path.points(), x)]
    for _ in range(30):
        path.step(x, y)
        energies.append(path.divergence_energy(x))
        metric_energies.append(_metric_energy(net, path.points(), x))
    assert np.all(np.diff(energies) <= 1e-6 * energies[0]), energies
    assert energies[-1] < 0.9 * energies[0], energies
    assert np.all(np.diff(metric_energies) <= 1e-3 * metric_energies[0]), metric_energies
    assert metric_energies[-1] < metric_energies[0]


def test_discrete_energy_is_the_metric_energy_for_close_points():
    # 2 D_sym(f(w), f(w + dw)) = <dw, g dw> + O(|dw|^3): on a straight path with
    # many points the two energies agree.
    net = _net()
    a = _weights(net, 1)
    b = [w + 0.05 * d for w, d in zip(a, _weights(net, 3))]
    x, _ = _batch(0, 128)
    path = relaxed_path.RelaxedPath(net, a, b, num_points=9, jit_compile=False,
                                    parametrization="points")
    assert path.divergence_energy(x) == pytest.approx(_metric_energy(net, path.points(), x),
                                                      rel=1e-2)


def test_bezier_parametrization_nodes_and_points():
    net = _net()
    a, b = _weights(net, 1), _weights(net, 2)
    path = relaxed_path.RelaxedPath(net, a, b, num_points=4, parametrization="bezier",
                                    num_bends=2, optimizer=keras.optimizers.Adam(0.05),
                                    jit_compile=False)
    # Stratified nodes: one in each quarter of (0, 1), shifted alike.
    np.testing.assert_allclose(path.node_times(0.5), [0, 0.125, 0.375, 0.625, 0.875, 1])
    np.testing.assert_allclose(path.node_times(), np.linspace(0, 1, 6))
    x, y = _batch(0)
    for i in range(3):
        path.step(x, y)
    bends = path.bend_points()
    assert len(bends) == 2
    points = path.points()
    for t, p in zip(np.linspace(0, 1, 6), points):  # the nodes lie on the Bezier curve
        for got, want in zip(p, curves.curve_point("bezier", float(t), a, bends, b)):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    _assert_same(points[0], a)
    _assert_same(points[-1], b)


def test_batched_products_equal_per_point_products():
    net = _net()
    a, b = _weights(net, 1), _weights(net, 2)
    rng = np.random.default_rng(5)
    inner = [[w + rng.normal(scale=0.3, size=w.shape).astype(np.float32) for w in
              paths.interpolate(a, b, t)] for t in (0.25, 0.5, 0.75)]
    path = relaxed_path.RelaxedPath(net, a, b, num_points=3, energy="metric", initial=inner,
                                    jit_compile=False, parametrization="points")
    x, _ = _batch(0, 32)
    batched = path.laplacian_products(x)
    points = path.points()
    assert len(batched) == 3
    for k in range(1, 4):
        weights_lib.set_trainable(net, points[k])
        tangent = [2 * c - p - n for p, c, n in zip(points[k - 1], points[k], points[k + 1])]
        want = metric.metric_vector_product(net, x, [tf.constant(t) for t in tangent], "fisher")
        for got, w in zip(batched[k - 1], want):
            np.testing.assert_allclose(got.numpy(), w.numpy(), rtol=1e-4, atol=1e-6)


def test_metric_force_shares_the_loss_gradient_pass():
    # One backward pass with the summed cotangent = product + scaled loss gradient.
    net = _net()
    a, b = _weights(net, 1), _weights(net, 2)
    path = relaxed_path.RelaxedPath(net, a, b, num_points=1, energy="metric", jit_compile=False,
                                    parametrization="points")
    x, y = _batch(0, 32)
    pts = path._all_tensors()
    tangent = path._tangent(pts, 1)
    both, _ = path._product(pts[1], tangent, x, y, 0.7)
    alone, _ = path._product(pts[1], tangent, x, None, 0.0)
    mid = path.points()[1]
    weights_lib.set_trainable(net, mid)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            y, net(x), from_logits=True))
    grads = tape.gradient(loss, net.trainable_variables)
    for s, p, g in zip(both, alone, grads):
        np.testing.assert_allclose(s.numpy(), p.numpy() + 0.7 * g.numpy(), rtol=1e-4, atol=1e-6)


def test_rejects_bad_arguments():
    net = _net()
    a = _weights(net, 1)
    for kwargs in ({"num_points": 0}, {"energy": "spline"}, {"representations": "inputs"},
                   {"energy": "metric", "representations": "hidden"}, {"loss_weight": -1.0},
                   {"initial": [a, a], "parametrization": "points"},
                   {"initial": [a], "parametrization": "bezier"}, {"parametrization": "spline"},
                   {"parametrization": "bezier", "energy": "metric"},
                   {"parametrization": "bezier", "num_bends": 0}):
        with pytest.raises(ValueError):
            relaxed_path.RelaxedPath(net, a, a, num_points=kwargs.pop("num_points", 1), **kwargs)
    with pytest.raises(ValueError):
        relaxed_path.RelaxedPath(net, a[:-1], a)


def test_relaxed_geodesic_removes_most_of_the_barrier(digits_endpoints):
    ds, (net_a, net_b) = digits_endpoints
    a, b = weights_lib.get_trainable(net_a), weights_lib.get_trainable(net_b)
    model = models.get("mlp", ds.input_shape, 10, hidden=(64,))
    batches = data.to_dataset(ds.train, 32, shuffle=True, seed=0, drop_remainder=True,
                              repeat=True)
    # The metric energy alone (no loss term), in the Bezier family: the function
    # is kept along the path.
    out = relaxed_path.relax_path(model, a, b, batches, 300,  # defaults: Bezier bend, K = 4
                                  optimizer=keras.optimizers.Adam(1e-2), log_every=100)
    assert out["iterations"] == 300 and out["batch"] == 32 and len(out["bends"]) == 1
    assert out["counts"] == {"gradients": 1200.0, "forwards": 600.0, "metric_products": 0.0}
    assert len(out["history"]) == 3
    _assert_same(out["points"][0], a)
    _assert_same(out["points"][-1], b)

    def test_losses(points):
        return [classification.evaluate_weights_trainable(model, p, ds.test.x, ds.test.y)["loss"]
                for p in points]

    curve = [curves.curve_point("bezier", float(t), a, out["bends"], b)
             for t in np.linspace(0, 1, 11)]
    relaxed = connect.loss_barrier(test_losses(curve))
    line = connect.loss_barrier(test_losses(paths.straight_path(a, b, 11)))
    assert line > 0.1
    assert relaxed < 0.4 * line, (relaxed, line)

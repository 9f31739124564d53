"""Mode-connecting curves (Garipov et al. 2018): the points by hand, exact
endpoints, gradients reaching only the bends, and a trained Bezier curve
without the straight line's barrier on real nets."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfgeo.connect import geodesic_walk as connect
from tfgeo.connect import curves
from tfgeo import classification
from tfgeo import models
from tfgeo.connect import paths
from tfgeo.experiments import data


def _point(seed, shapes=((3,), (2, 2))):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s).astype(np.float32) for s in shapes]


def _assert_same(p, q):
    assert len(p) == len(q)
    for x, y in zip(p, q):
        np.testing.assert_array_equal(x, y)


def test_points_hand_worked():
    a, m, b = _point(0), _point(1), _point(2)
    for kind in curves.KINDS:
        _assert_same(curves.curve_point(kind, 0.0, a, [m], b), a)
        _assert_same(curves.curve_point(kind, 1.0, a, [m], b), b)
    # Bezier: (1-t)^2 A + 2t(1-t) M + t^2 B.
    for t in (0.25, 0.5, 0.8):
        want = [(1 - t) ** 2 * x + 2 * t * (1 - t) * y + t ** 2 * z for x, y, z in zip(a, m, b)]
        got = curves.curve_point("bezier", t, a, [m], b)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
    # Polychain: M exactly at 0.5, linear on each half.
    _assert_same(curves.curve_point("polychain", 0.5, a, [m], b), m)
    for t in (0.1, 0.25, 0.4):
        for g, w in zip(curves.curve_point("polychain", t, a, [m], b), paths.interpolate(a, m, 2 * t)):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
        for g, w in zip(curves.curve_point("polychain", 0.5 + t, a, [m], b),
                        paths.interpolate(m, b, 2 * t)):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
    # Tensors give the same points as arrays; coefficients sum to 1.
    for kind in curves.KINDS:
        for t in (0.0, 0.3, 0.5, 1.0):
            got = curves.curve_point(kind, tf.constant(t), a, [m], b)
            for g, w in zip(got, curves.curve_point(kind, t, a, [m], b)):
                np.testing.assert_allclose(g.numpy(), w, rtol=1e-6, atol=1e-6)
            assert sum(curves.coefficients(kind, t, 3)) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        curves.curve_point("spline", 0.5, a, [m], b)
    with pytest.raises(ValueError):
        curves.curve_point("bezier", 1.5, a, [m], b)


def _small_net():
    return models.get("mlp", (64,), 10, hidden=(8,))


def _weights(net, seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(scale=0.3, size=tuple(v.shape)).astype(np.float32)
            for v in net.trainable_variables]


@pytest.mark.parametrize("kind", curves.KINDS)
def test_curve_starts_at_the_midpoint_with_exact_endpoints(kind):
    net = _small_net()
    a, b = _weights(net, 0), _weights(net, 1)
    curve = curves.CurveModel(net, a, b, kind=kind)
    assert len(curve.trainable_variables) == len(net.trainable_variables)  # M only
    (m,) = curve.bend_points()
    _assert_same(m, [((x.astype(np.float64) + y) / 2).astype(np.float32) for x, y in zip(a, b)])
    points = curve.points(5)
    _assert_same(points[0], a)
    _assert_same(points[-1], b)
    for p, q in zip(points, paths.straight_path(a, b, 5)):  # an untrained curve is the line
        for x, y in zip(p, q):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("kind", curves.KINDS)
def test_one_step_moves_the_bend_only(kind, jit_compile):
    net = _small_net()
    own = [v.numpy() for v in net.trainable_variables]
    a, b = _weights(net, 0), _weights(net, 1)
    curve = curves.CurveModel(net, a, b, kind=kind, seed=0)
    curve.compile(keras.optimizers.SGD(0.1), jit_compile=jit_compile)
    (m0,) = curve.bend_points()
    rng = np.random.default_rng(2)
    x, y = rng.uniform(size=(32, 64)).astype(np.float32), rng.integers(0, 10, 32)
    history = curve.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    (m1,) = curve.bend_points()
    assert all(np.all(np.isfinite(w)) for w in m1)
    assert max(float(np.abs(p - q).max()) for p, q in zip(m0, m1)) > 1e-4
    _assert_same([v.numpy() for v in curve.start], a)
    _assert_same([v.numpy() for v in curve.end], b)
    _assert_same([v.numpy() for v in net.trainable_variables], own)  # the network untouched
    assert float(curve.gradients.numpy()) == 1.0
    points = curve.points(3)
    _assert_same(points[0], a)
    _assert_same(points[-1], b)
    # Calling the curve runs the network at its middle.
    mid = curve.points(3)[1]
    probe = keras.models.clone_model(net)
    for v, w in zip(probe.trainable_variables, mid):
        v.assign(w)
    np.testing.assert_allclose(curve(x).numpy(), probe(x).numpy(), rtol=1e-5, atol=1e-5)


def test_refuses_batch_norm_and_bad_arguments():
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                            keras.layers.BatchNormalization(), keras.layers.Dense(2)])
    w = [v.numpy() for v in net.trainable_variables]
    with pytest.raises(ValueError, match="BatchNormalization"):
        curves.CurveModel(net, w, w)
    net = _small_net()
    a = _weights(net, 0)
    with pytest.raises(ValueError, match="kind"):
        curves.CurveModel(net, a, a, kind="spline")
    with pytest.raises(ValueError, match="num_bends"):
        curves.CurveModel(net, a, a, num_bends=0)
    with pytest.raises(ValueError):
        curves.CurveModel(net, a[:-1], a)


def test_trained_bezier_curve_removes_the_barrier(digits_endpoints):
    ds, (net_a, net_b) = digits_endpoints
    a = [w.numpy() for w in net_a.trainable_variables]
    b = [w.numpy() for w in net_b.trainable_variables]
    model = models.get("mlp", ds.input_shape, 10, hidden=(64,))
    batches = data.to_dataset(ds.train, 128, shuffle=True, seed=0, drop_remainder=True,
                              repeat=True)
    out = curves.train_curve(model, a, b, batches, steps=300, kind="bezier",
                             optimizer=keras.optimizers.Adam(1e-2), num_points=11, seed=0)
    assert out["steps"] == 300 and out["gradients"] == 300.0
    _assert_same(out["points"][0], a)
    _assert_same(out["points"][-1], b)

    def test_losses(points):
        return [classification.evaluate_weights_trainable(model, p, ds.test.x, ds.test.y)["loss"]
                for p in points]

    curve_losses = test_losses(out["points"])
    line_losses = test_losses(paths.straight_path(a, b, 11))
    curve_barrier, line_barrier = (connect.loss_barrier(curve_losses),
                                   connect.loss_barrier(line_losses))
    assert line_barrier > 0.1, line_losses  # there is a barrier to remove
    assert curve_barrier < 0.25 * line_barrier, (curve_losses, line_losses)
    assert max(curve_losses) < max(line_losses)

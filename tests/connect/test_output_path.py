"""The FIP authors' first-order output-preserving path: the Bhattacharyya
distance by hand, the pull's step, exact endpoints, and a lower max loss than
the straight line on real nets."""
import keras
import numpy as np
import pytest

from tfgeo import classification
from tfgeo import models
from tfgeo.connect import output_path
from tfgeo.connect import paths
from tfgeo import weights as weights_lib


def test_bhattacharyya_hand_worked():
    logits = np.log(np.array([[0.5, 0.5, 1e-9], [0.1, 0.2, 0.7]], np.float64))
    q = np.array([[0.5, 0.5, 0.0], [0.7, 0.2, 0.1]])
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    want = np.mean(-np.log(np.sum(np.sqrt(p * q + 1e-10), axis=1)))
    got = float(output_path.bhattacharyya(logits, q))
    assert got == pytest.approx(want, rel=1e-6)
    assert float(output_path.bhattacharyya(logits, p)) == pytest.approx(0.0, abs=1e-4)
    assert got > 0.1  # the second row's distributions differ


def _small_net(seed):
    keras.utils.set_random_seed(seed)
    return models.get("mlp", (64,), 10, hidden=(8,))


def test_one_step_with_a_strong_pull_lands_near_the_anchor():
    # With a large beta the output term barely matters: w_1 ~ A + eta (B - A).
    net = _small_net(0)
    a = weights_lib.get_trainable(net)
    b = weights_lib.get_trainable(_small_net(1))
    x = np.random.default_rng(0).uniform(size=(64, 64)).astype(np.float32)
    out = output_path.output_path(net, b, x, num_steps=1, inner_steps=30, learning_rate=0.04,
                                  beta=10.0, eta=0.2, jit_compile=False)
    w1, anchor = out["points"][1], paths.interpolate(a, b, 0.2)
    assert paths.distance(w1, anchor) < 0.02 * paths.distance(a, anchor)
    assert out["steps"] == 1 and out["gradients"] == pytest.approx(30 + 1 / 3)
    assert out["batch"] == 64


def test_rejects_bad_arguments():
    net = _small_net(0)
    a = weights_lib.get_trainable(net)
    x = np.zeros((4, 64), np.float32)
    for kwargs in ({"eta": 0.0}, {"eta": 1.5}, {"beta": -1.0}, {"learning_rate": 0.0},
                   {"num_steps": 0}, {"inner_steps": 0}, {"tolerance": 1.0}):
        with pytest.raises(ValueError):
            output_path.output_path(net, a, x, **kwargs)
    with pytest.raises(ValueError):
        output_path.output_path(net, a[:-1], x)


def test_output_path_has_exact_endpoints_and_lower_max_loss(digits_endpoints):
    ds, (net_a, net_b) = digits_endpoints
    a = weights_lib.get_trainable(net_a)
    b = weights_lib.get_trainable(net_b)
    model = models.get("mlp", ds.input_shape, 10, hidden=(64,))
    weights_lib.set_trainable(model, a)
    out = output_path.output_path(model, b, ds.train.x[:256])  # defaults, jit-compiled
    points = out["points"]
    for p, want in ((points[0], a), (points[-1], b), (weights_lib.get_trainable(model), b)):
        for x, y in zip(p, want):
            np.testing.assert_array_equal(x, y)
    assert out["steps"] == 50 and out["gradients"] == pytest.approx(50 * (40 + 1 / 3))
    assert out["final_distance"] < 0.2 * out["start_distance"]  # walked most of the way
    assert np.all(np.isfinite(out["output_distance"]))

    def test_losses(pts):
        return [classification.evaluate_weights_trainable(model, p, ds.test.x, ds.test.y)["loss"]
                for p in pts]

    walk_losses = test_losses(points)
    line_losses = test_losses(paths.straight_path(a, b, len(points)))
    # On this pair the defaults give about 0.37 against the line's 0.45.
    assert max(walk_losses) < 0.92 * max(line_losses), (max(walk_losses), max(line_losses))

"""Connecting optima: barrier by hand, saved points, and geodesic vs straight on real nets."""
import numpy as np
import pytest

from tfgeo import models
from tfgeo.connect import geodesic_walk as connect
from tfgeo.connect import paths
from tfgeo.experiments import connect_experiment as connect_study
from tfgeo.experiments import data
from tfgeo.connect import permutation


def test_barrier_hand_worked():
    # max 0.9, endpoint mean (0.2 + 0.4) / 2 = 0.3.
    assert connect.loss_barrier([0.2, 0.5, 0.9, 0.4]) == pytest.approx(0.6)
    assert connect.loss_barrier([0.3, 0.2, 0.1]) == pytest.approx(0.1)  # max at an endpoint
    with pytest.raises(ValueError):
        connect.loss_barrier([0.1])


def test_straight_path_and_positions():
    a, b = [np.zeros((2, 2))], [np.full((2, 2), 3.0)]
    pts = paths.straight_path(a, b, 4)
    assert len(pts) == 4 and np.all(pts[1][0] == 1.0) and np.all(pts[-1][0] == 3.0)
    np.testing.assert_allclose(paths.euclidean_positions(pts), [0, 1 / 3, 2 / 3, 1])


def test_points_round_trip(tmp_path):
    pts = [[np.arange(3.0), np.ones((2, 2), np.float32)], [np.zeros(3), np.eye(2, dtype=np.float32)]]
    back = connect_study.load_points(connect_study.save_points(str(tmp_path / "p.npz"), pts))
    assert len(back) == 2
    for p, q in zip(pts, back):
        for x, y in zip(p, q):
            np.testing.assert_array_equal(x, y)


def _walk_from_a(digits_endpoints):
    """(data, A's weights, B's weights, a network holding A, shuffled batches of 256)."""
    ds, (net_a, net_b) = digits_endpoints
    a = [w.numpy() for w in net_a.trainable_variables]
    b = [w.numpy() for w in net_b.trainable_variables]
    model = models.get("mlp", ds.input_shape, 10, hidden=(64,))
    for var, w in zip(model.trainable_variables, a):
        var.assign(w)
    batches = data.to_dataset(ds.train, 256, shuffle=True, drop_remainder=True, repeat=True)
    return ds, a, b, model, batches


def test_geodesic_path_has_lower_max_loss_than_straight_line(digits_endpoints):
    ds, a, b, model, batches = _walk_from_a(digits_endpoints)
    walk = connect.geodesic_path(model, b, batches, step_size=0.1, max_steps=1500,
                                 record_every=20, verbose=0)
    assert walk["reached"]
    for x, y in zip(walk["points"][-1], b):
        np.testing.assert_array_equal(x, y)  # ends exactly on B
    for x, y in zip(walk["points"][0], a):
        np.testing.assert_array_equal(x, y)
    inputs = ds.train.x[:512]
    geo = connect_study.evaluate_path(model, walk["points"], ds.test.x, ds.test.y, inputs)
    line = connect_study.evaluate_path(model, paths.straight_path(a, b, len(walk["points"])),
                                 ds.test.x, ds.test.y, inputs)
    assert geo["max_loss"] < line["max_loss"], (geo["max_loss"], line["max_loss"])
    assert geo["barrier"] < 0.5 * line["barrier"]
    # Shorter in the metric, though (slightly) longer in Euclidean norm.
    assert geo["metric_length"] < line["metric_length"]
    assert geo["euclidean_length"] >= line["euclidean_length"] * (1 - 1e-6)


def test_a_walk_that_stops_short_samples_its_straight_last_leg(digits_endpoints):
    ds, a, b, model, batches = _walk_from_a(digits_endpoints)
    walk = connect.geodesic_path(model, b, batches, step_size=0.1, max_steps=3,
                                 record_every=1, verbose=0)
    assert not walk["reached"] and walk["steps"] == 3
    # The unwalked leg (most of ||B - A||) is sampled at the walk's spacing, so the
    # barrier is measured along it, not across one unevaluated jump.
    spacing = 0.1
    assert walk["straight_leg_points"] >= walk["final_distance"] / spacing - 2
    gaps = [paths.distance(p, q) for p, q in zip(walk["points"], walk["points"][1:])]
    assert max(gaps) <= spacing * (1 + 1e-5)
    for x, y in zip(walk["points"][-1], b):
        np.testing.assert_array_equal(x, y)


def test_weight_matching_on_trained_nets_shrinks_distance_and_keeps_function(digits_endpoints):
    ds, (net_a, net_b) = digits_endpoints
    a = [w.numpy() for w in net_a.trainable_variables]
    b = [w.numpy() for w in net_b.trainable_variables]
    units = permutation.spec(net_a)
    _, aligned = permutation.weight_matching(units, a, b)
    assert paths.distance(a, aligned) < 0.9 * paths.distance(a, b)
    before = net_b(ds.test.x).numpy()
    model = models.get("mlp", ds.input_shape, 10, hidden=(64,))
    for var, w in zip(model.trainable_variables, aligned):
        var.assign(w)
    np.testing.assert_allclose(model(ds.test.x).numpy(), before, rtol=1e-4, atol=1e-4)

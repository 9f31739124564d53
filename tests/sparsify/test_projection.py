"""Projections onto a mask: the restoring direction, the linearised correction and the
Gauss-Newton step rule against closed forms (float64)."""
import keras
import numpy as np
import pytest

from tests import dense_reference as ref
from tfgeo.sparsify import projection
from tfgeo.sparsify import pruning
from tfgeo import weights as weights_lib


def _linear_model():
    return keras.Sequential([keras.Input((5,), dtype="float64"),
                             keras.layers.Dense(3, dtype="float64")])


def test_restoring_direction_is_the_closed_form_gradient():
    """For z = W^T x + b with the Euclidean divergence, grad D = (c/N) X~^T (Z - Z_ref)."""
    keras.utils.set_random_seed(0)
    model = _linear_model()
    x = np.random.default_rng(1).standard_normal((9, 5))
    masks = pruning.magnitude_masks(weights_lib.get_trainable(model), 0.5)
    r = projection.reference(model, x)  # the dense outputs, weight c = 1 / mean ||z||^2
    w, b = (v.numpy() for v in model.trainable_variables)
    moved = [w * masks[0], b + 0.3]
    weights_lib.set_trainable(model, moved)
    objective = projection._Objective(model, x, r, masks, "euclidean", projection.Solver())
    z = x @ moved[0] + moved[1]
    residual = (z - r.values[0]) * r.weights[0] / len(x)
    got = objective.gradient()
    np.testing.assert_allclose(got[0].numpy(), x.T @ residual, rtol=1e-10)
    np.testing.assert_allclose(got[1].numpy(), residual.sum(0), rtol=1e-10)
    d = 0.5 * r.weights[0] * np.mean(np.sum((z - r.values[0]) ** 2, axis=1))
    np.testing.assert_allclose(objective.distance(), d, rtol=1e-10)


@pytest.mark.parametrize("output_metric", ["euclidean", "fisher"])
def test_linear_projection_solves_its_normal_equations(output_metric):
    keras.utils.set_random_seed(2)
    model = ref.small_mlp("float64")
    x = np.random.default_rng(3).standard_normal((12, 6))
    w0 = weights_lib.get_trainable(model)
    masks = pruning.magnitude_masks(w0, 0.6)
    m = np.concatenate([k.ravel() for k in masks])
    f0 = np.concatenate([w.ravel() for w in w0])
    r = projection.reference(model, x)
    g = projection._Objective(model, x, r, masks, output_metric,
                              projection.Solver()).operator().to_dense()
    report = projection.linear_projection(
        model, masks, x, output_metric=output_metric,
        solver=projection.Solver(max_iterations=500, tolerance=1e-12))
    lam = report["damping"]
    kept = m == 1
    u = np.linalg.solve(g[np.ix_(kept, kept)] + lam * np.eye(kept.sum()),
                        g[np.ix_(kept, ~kept)] @ f0[~kept])
    want = np.where(kept, 0.0, 0.0)
    want[kept] = f0[kept] + u
    got = np.concatenate([w.ravel() for w in weights_lib.get_trainable(model)])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    assert np.all(got[~kept] == 0)


def test_levenberg_marquardt_rejects_steps_that_raise_the_distance():
    """A solve that overshoots (delta = -3 grad on D = x^2/2) is halved until D falls;
    one that only raises D is rejected and lambda grows tenfold."""
    point = [np.array([1.0])]
    state = {"calls": 0}

    def distance():
        return float(0.5 * point[0][0] ** 2)

    def gradient():
        return [point[0].copy()]

    def overshoot(rhs, lam):
        return [3.0 * r for r in rhs]  # x -> x - 3x = -2x: D quadruples

    def put(p):
        point[0] = p[0]

    d, history, accepted = projection.levenberg_marquardt(
        distance, gradient, overshoot, lambda: [point[0].copy()], put, 1.0, steps=1)
    assert accepted == 1 and history[1]["alpha"] == 0.5  # x -> x - 1.5x = -0.5x
    np.testing.assert_allclose(point[0], [-0.5])

    point[0] = np.array([1.0])

    def uphill(rhs, lam):
        state["calls"] += 1
        return [-r for r in rhs]  # always away: every alpha raises D

    d, history, accepted = projection.levenberg_marquardt(
        distance, gradient, uphill, lambda: [point[0].copy()], put, 1.0, steps=1, halvings=2,
        max_damping=100.0)
    assert accepted == 0 and d == 0.5
    assert [h["damping"] for h in history if h.get("rejected")] == [10.0, 100.0, 1000.0]
    np.testing.assert_allclose(point[0], [1.0])  # the point never moved


@pytest.mark.parametrize("curvature_size", [0, 16])
def test_gauss_newton_projection_keeps_the_mask_and_lowers_the_distance(curvature_size):
    keras.utils.set_random_seed(4)
    model = ref.small_mlp("float64")
    x = np.random.default_rng(5).standard_normal((40, 6))
    masks = pruning.magnitude_masks(weights_lib.get_trainable(model), 0.5)
    report = projection.gauss_newton_projection(
        model, masks, x, layers="hidden", steps=5,
        solver=projection.Solver(max_iterations=200, tolerance=1e-6,
                                 curvature_size=curvature_size))
    assert report["curvature_examples"] == (curvature_size or len(x))
    distances = [h["distance"] for h in report["history"] if not h.get("rejected")]
    assert distances[-1] < 0.85 * distances[0]  # observed 0.65: half the weights are gone
    assert all(b <= a for a, b in zip(distances, distances[1:]))
    for w, k in zip(weights_lib.get_trainable(model), masks):
        assert np.all(w[k == 0] == 0)


def test_curvature_subset_is_the_metric_of_the_first_inputs():
    """With curvature_size m, products are the metric on x[:m] (same weights c),
    while the gradient still averages over every input."""
    keras.utils.set_random_seed(6)
    model = ref.small_mlp("float64")
    x = np.random.default_rng(7).standard_normal((20, 6))
    masks = pruning.magnitude_masks(weights_lib.get_trainable(model), 0.5)
    r = projection.reference(model, x)
    full = projection._Objective(model, x, r, masks, "fisher", projection.Solver())
    sub = projection._Objective(model, x, r, masks, "fisher", projection.Solver(curvature_size=7))
    part = projection.Reference(r.names, [v[:7] for v in r.values], r.weights)
    want = projection._Objective(model, x[:7], part, masks, "fisher", projection.Solver())
    np.testing.assert_allclose(sub.operator().to_dense(), want.operator().to_dense(),
                               rtol=1e-10, atol=1e-14)
    assert not np.allclose(sub.operator().to_dense(), full.operator().to_dense(), rtol=1e-3)
    for a, b in zip(sub.gradient(), full.gradient()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)

"""Conjugate gradient against numpy.linalg.solve, and its breakdown reporting."""
import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf

from tests import dense_reference as ref
from tfgeo import krylov
from tfgeo import metric
from tfgeo import vectors


def _matrix_operator(a, shapes):
    a = tf.constant(a)

    def op(v):
        return vectors.unflatten(tf.linalg.matvec(a, vectors.flatten(v)), v)

    return op


def _spd(n, cond, seed):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eig = np.geomspace(1.0, cond, n)
    return (q * eig) @ q.T


def _split(flat):
    # A vector of two tensors, to exercise the list structure.
    return [tf.constant(flat[:3].reshape(3, 1)), tf.constant(flat[3:])]


@pytest.mark.parametrize("unroll", [False, True])
@pytest.mark.parametrize("damping", [0.0, 0.5])
def test_cg_matches_numpy_solve_on_spd(unroll, damping):
    n = 12
    a = _spd(n, cond=100.0, seed=0)
    b = np.random.default_rng(1).standard_normal(n)
    res = krylov.conjugate_gradient(
        _matrix_operator(a, None), _split(b), damping=damping, max_iterations=3 * n,
        tolerance=1e-12, unroll=unroll,
    )
    want = np.linalg.solve(a + damping * np.eye(n), b)
    got = vectors.flatten(res.solution).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)
    assert int(res.status) == krylov.CONVERGED
    assert float(res.relative_residual) <= 1e-12
    # Exact arithmetic needs at most n iterations; allow a few for round-off.
    assert 1 <= int(res.iterations) <= n + 3


def test_cg_under_xla_matches_eager():
    a = _spd(10, 50.0, seed=2)
    b = _split(np.random.default_rng(3).standard_normal(10))
    op = _matrix_operator(a, None)
    eager = krylov.conjugate_gradient(op, b, damping=0.1, max_iterations=30, tolerance=1e-10)
    fn = tf.function(lambda r: krylov.conjugate_gradient(op, r, damping=0.1, max_iterations=30,
                                                         tolerance=1e-10), jit_compile=True)
    xla = fn(b)
    # XLA reorders reductions, so the residual can cross the tolerance one
    # iteration apart (seen on AMD EPYC: 11 vs 10); both solutions are converged.
    np.testing.assert_allclose(vectors.flatten(xla.solution).numpy(),
                               vectors.flatten(eager.solution).numpy(), rtol=1e-8)
    assert abs(int(xla.iterations) - int(eager.iterations)) <= 2
    assert int(xla.status) == int(eager.status) == krylov.CONVERGED


@pytest.mark.parametrize("output_metric", ["euclidean", "fisher"])
def test_cg_on_damped_network_metric(output_metric):
    model = ref.small_cnn("float64")
    x = tf.constant(np.random.default_rng(4).standard_normal((5, 6, 6, 1)))
    b = ref.random_vector(model, seed=6)
    damping = 0.05
    op = metric.MetricOperator(model, x, output_metric)
    res = krylov.conjugate_gradient(op, b, damping=damping, max_iterations=300, tolerance=1e-12)
    g = ref.dense_metric(model, x, output_metric)
    a = g + damping * np.eye(len(g))
    want = np.linalg.solve(a, vectors.flatten(b).numpy())
    got = vectors.flatten(res.solution).numpy()
    # The true residual, not only CG's recursive one, is small.
    true_residual = np.linalg.norm(a @ got - vectors.flatten(b).numpy()) / np.linalg.norm(vectors.flatten(b).numpy())
    assert true_residual <= 1e-9
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8 * np.abs(want).max())
    assert int(res.status) == krylov.CONVERGED


def test_cg_reports_non_convergence_honestly():
    a = _spd(40, 1e6, seed=5)
    b = [tf.constant(np.random.default_rng(6).standard_normal(40))]
    op = _matrix_operator(a, None)
    res = krylov.conjugate_gradient(op, b, max_iterations=5, tolerance=1e-10)
    assert int(res.status) == krylov.MAX_ITERATIONS
    assert int(res.iterations) == 5
    true_rel = np.linalg.norm(a @ res.solution[0].numpy() - b[0].numpy()) / np.linalg.norm(b[0].numpy())
    assert float(res.relative_residual) > 1e-10
    np.testing.assert_allclose(float(res.relative_residual), true_rel, rtol=1e-6)


@pytest.mark.parametrize("unroll", [False, True])
def test_cg_detects_non_positive_curvature(unroll):
    a = np.diag([2.0, 1.0, -1.0])  # indefinite
    b = [tf.constant([1.0, 1.0, 1.0], tf.float64)]
    res = krylov.conjugate_gradient(_matrix_operator(a, None), b, max_iterations=10,
                                    tolerance=1e-12, unroll=unroll)
    assert int(res.status) == krylov.NON_POSITIVE_CURVATURE
    assert krylov.status_name(res.status) == "non_positive_curvature"
    assert bool(vectors.all_finite(res.solution))


def test_cg_stops_on_nan_without_returning_it():
    calls = {"n": 0}
    good = _matrix_operator(_spd(4, 10.0, 7), None)

    def flaky(v):
        calls["n"] += 1
        out = good(v)
        # Second product returns NaN (e.g. a NaN activation).
        return out if calls["n"] < 2 else [t * np.nan for t in out]

    b = [tf.constant(np.ones(4))]
    res = krylov.conjugate_gradient(flaky, b, max_iterations=10, tolerance=1e-14)
    assert int(res.status) == krylov.NOT_FINITE
    assert int(res.iterations) == 1
    assert bool(vectors.all_finite(res.solution))
    assert np.linalg.norm(res.solution[0].numpy()) > 0


def test_zero_rhs_gives_zero_solution():
    res = krylov.conjugate_gradient(_matrix_operator(np.eye(3), None), [tf.zeros(3, tf.float64)])
    assert int(res.status) == krylov.CONVERGED and int(res.iterations) == 0
    np.testing.assert_array_equal(res.solution[0].numpy(), 0)


def test_python_damping_keeps_float64_precision():
    # tf.cast(0.05, tf.float64) would go through float32 (0.0500000007) and
    # leave a true residual near 1e-8; the solver must use 0.05 exactly.
    rng = np.random.default_rng(0)
    j = rng.standard_normal((15, 47))
    g = j.T @ j / 5
    b = rng.standard_normal(47)
    res = krylov.conjugate_gradient(_matrix_operator(g, None), [tf.constant(b)], damping=0.05,
                                    max_iterations=100, tolerance=1e-13)
    x = res.solution[0].numpy()
    assert np.linalg.norm((g + 0.05 * np.eye(47)) @ x - b) / np.linalg.norm(b) <= 1e-12


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_iterations"):
        krylov.conjugate_gradient(lambda v: v, [tf.ones(2)], max_iterations=0)
    with pytest.raises(ValueError, match="tolerance"):
        krylov.conjugate_gradient(lambda v: v, [tf.ones(2)], tolerance=-1.0)


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(
    n=st.integers(2, 15),
    log_cond=st.floats(0.0, 8.0),
    damping=st.sampled_from([0.0, 1e-6, 1e-2]),
    seed=st.integers(0, 2**16),
)
def test_cg_property_random_spd_and_near_singular(n, log_cond, damping, seed):
    """Converged solves have a small true residual; others say so; nothing is NaN."""
    a = _spd(n, 10.0**log_cond, seed) / 10.0**log_cond  # eigenvalues in [1/cond, 1]
    b = np.random.default_rng(seed + 1).standard_normal(n)
    res = krylov.conjugate_gradient(_matrix_operator(a, None), [tf.constant(b)], damping=damping,
                                    max_iterations=4 * n, tolerance=1e-8)
    x = res.solution[0].numpy()
    assert np.all(np.isfinite(x))
    true_rel = np.linalg.norm((a + damping * np.eye(n)) @ x - b) / np.linalg.norm(b)
    if int(res.status) == krylov.CONVERGED:
        assert true_rel <= 1e-6
    else:
        assert int(res.status) in (krylov.MAX_ITERATIONS, krylov.NON_POSITIVE_CURVATURE)


def _badly_scaled(n, seed):
    """An SPD matrix with condition ~1e6 coming mostly from its diagonal scaling."""
    d = np.geomspace(1e-3, 1e3, n)
    core = _spd(n, 10.0, seed)
    return np.sqrt(d)[:, None] * core * np.sqrt(d)[None, :], d


@pytest.mark.parametrize("unroll", [False, True])
def test_preconditioned_cg_matches_numpy_with_fewer_iterations(unroll):
    from tfgeo import linear_operator

    n = 30
    a, d = _badly_scaled(n, 8)
    b = np.random.default_rng(9).standard_normal(n)
    op = linear_operator.MatrixOperator(a, [(n,)])
    plain = krylov.conjugate_gradient(op, [tf.constant(b)], max_iterations=400, tolerance=1e-10)
    jacobi = linear_operator.DiagonalOperator([tf.constant(np.diag(a).copy())])
    pre = krylov.conjugate_gradient(op, [tf.constant(b)], max_iterations=400, tolerance=1e-10,
                                    preconditioner=jacobi, unroll=unroll)
    want = np.linalg.solve(a, b)
    np.testing.assert_allclose(pre.solution[0].numpy(), want, rtol=1e-6, atol=1e-9 * np.abs(want).max())
    assert int(pre.status) == krylov.CONVERGED
    assert np.linalg.norm(a @ pre.solution[0].numpy() - b) / np.linalg.norm(b) <= 1e-8
    assert int(pre.iterations) <= 0.5 * int(plain.iterations), (int(pre.iterations), int(plain.iterations))
    # The exact inverse as preconditioner solves in one iteration.
    exact = krylov.conjugate_gradient(op, [tf.constant(b)], max_iterations=5, tolerance=1e-8,
                                      preconditioner=op)
    assert int(exact.iterations) == 1


def test_warm_start_from_the_solution_needs_no_iteration_and_counts_its_product():
    a = _spd(8, 10.0, 11)
    b = np.random.default_rng(12).standard_normal(8)
    x = np.linalg.solve(a, b)
    res = krylov.conjugate_gradient(_matrix_operator(a, None), [tf.constant(b)], tolerance=1e-8,
                                    initial=[tf.constant(x)])
    assert int(res.iterations) == 0 and int(res.products) == 1
    assert int(res.status) == krylov.CONVERGED


def test_products_count_what_is_computed():
    a = _spd(6, 10.0, 13)
    b = [tf.constant(np.random.default_rng(14).standard_normal(6))]
    rolled = krylov.conjugate_gradient(_matrix_operator(a, None), b, max_iterations=20,
                                       tolerance=1e-6)
    unrolled = krylov.conjugate_gradient(_matrix_operator(a, None), b, max_iterations=20,
                                         tolerance=1e-6, unroll=True)
    assert int(rolled.products) == int(rolled.iterations) < 20
    assert int(unrolled.products) == 20  # masked iterations still compute their product
    indefinite = krylov.conjugate_gradient(_matrix_operator(np.diag([2.0, 1.0, -1.0]), None),
                                           [tf.constant([1.0, 1.0, 1.0], tf.float64)],
                                           max_iterations=10, tolerance=1e-12)
    assert int(indefinite.products) == int(indefinite.iterations) + 1  # the rejected one too


@pytest.mark.parametrize("bad,expected", [(np.nan, "nan"), (np.inf, "inf")])
def test_non_finite_rhs_is_reported_truthfully(bad, expected):
    b = [tf.constant([1.0, bad, 0.0], tf.float64)]
    res = krylov.conjugate_gradient(_matrix_operator(np.eye(3), None), b)
    assert int(res.status) == krylov.NOT_FINITE
    assert (np.isnan if expected == "nan" else np.isinf)(float(res.relative_residual))
    np.testing.assert_array_equal(res.solution[0].numpy(), 0.0)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"damping": -1.0}, ValueError, "damping"),
    ({"max_iterations": 2.7}, TypeError, "max_iterations"),
    ({"tolerance": float("nan")}, ValueError, "tolerance"),
])
def test_bad_solver_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        krylov.conjugate_gradient(_matrix_operator(np.eye(2), None),
                                  [tf.ones(2, tf.float64)], **kwargs)


def test_bad_right_hand_sides_are_named():
    with pytest.raises(ValueError, match="rhs is empty"):
        krylov.conjugate_gradient(lambda v: v, [])
    with pytest.raises(TypeError, match="floating"):
        krylov.conjugate_gradient(lambda v: v, [tf.constant([1, 2])])

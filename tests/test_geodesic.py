"""The geodesic step against its closed form, and the property the project rests on."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfgeo.models import mlp as mlp_lib
from tests import dense_reference as ref
from tfgeo.experiments import data
from tfgeo import geodesic
from tfgeo import krylov
from tfgeo import metric
from tfgeo import vectors


def _problem(output_metric="fisher"):
    model = ref.small_mlp("float64")
    x = tf.constant(np.random.default_rng(11).standard_normal((7, 6)))
    g = ref.dense_metric(model, x, output_metric)
    v = ref.random_vector(model, seed=12)
    return metric.MetricOperator(model, x, output_metric), g, v


def _closed_form(g, v, eps, lam):
    s, u = np.linalg.eigh(g)
    x = u @ ((u.T @ v) / (s + lam))
    return eps * x / np.linalg.norm(x), x


def _sphere_objective(g, theta, beta, v):
    return theta @ g @ theta - beta * theta @ v


@pytest.mark.parametrize("output_metric", ["euclidean", "fisher"])
@pytest.mark.parametrize("eps,lam", [(1e-3, 1e-4), (0.1, 1e-2), (1.0, 1.0), (0.5, 0.0)])
def test_step_matches_eigendecomposition(output_metric, eps, lam):
    op, g, v = _problem(output_metric)
    fv = vectors.flatten(v).numpy()
    if lam == 0.0:
        g = g + 1e-3 * np.eye(len(g))  # make g non-singular so lambda = 0 is well posed
        base = op
        op = lambda w: vectors.axpy(1e-3, w, base(w))  # noqa: E731
    res = geodesic.geodesic_step(op, v, step_size=eps, damping=lam, max_iterations=400, tolerance=1e-13)
    want, x = _closed_form(g, fv, eps, lam)
    got = vectors.flatten(res.step).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9 * eps)
    np.testing.assert_allclose(np.linalg.norm(got), eps, rtol=1e-12)
    np.testing.assert_allclose(float(res.functional_change), want @ g @ want, rtol=1e-6)
    np.testing.assert_allclose(float(res.cosine), want @ fv / (eps * np.linalg.norm(fv)), rtol=1e-8)
    np.testing.assert_allclose(float(res.implied_beta), 2 * eps / np.linalg.norm(x), rtol=1e-6)
    assert bool(res.ok)


def _secular_root(g, v, beta, eps):
    """lambda >= 0 with ||(beta/2)(g + lambda I)^{-1} v|| = eps, by bisection on the eigenbasis."""
    s, u = np.linalg.eigh(g)
    c = u.T @ v

    def norm(lam):
        return np.linalg.norm(beta / 2 * c / (s + lam))

    lo, hi = 0.0, 1.0
    while norm(hi) > eps:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if norm(mid) > eps else (lo, mid)
    return (lo + hi) / 2


@pytest.mark.parametrize("beta,eps", [(0.02, 0.05), (0.5, 0.1), (3.0, 1.0), (1.0, 0.01)])
def test_multiplier_for_beta_solves_the_constrained_problem(beta, eps):
    op, g, v = _problem("fisher")
    fv = vectors.flatten(v).numpy()
    lam_star = _secular_root(g, fv, beta, eps)
    assert lam_star > 0
    lam, x_norm = geodesic.multiplier_for_beta(op, v, beta, eps, initial_damping=1e-3,
                                               newton_iterations=30, max_iterations=300,
                                               tolerance=1e-13)
    np.testing.assert_allclose(float(lam), lam_star, rtol=1e-6)
    np.testing.assert_allclose(float(x_norm), eps, rtol=1e-6)
    # The step at that multiplier is the global minimiser on the sphere: it
    # beats every eigen-direction and random point of norm eps.
    res = geodesic.geodesic_step(op, v, eps, damping=lam, max_iterations=300, tolerance=1e-13)
    theta = vectors.flatten(res.step).numpy()
    np.testing.assert_allclose(float(res.implied_beta), beta, rtol=1e-5)
    best = _sphere_objective(g, theta, beta, fv)
    rng = np.random.default_rng(0)
    others = rng.standard_normal((2000, len(fv)))
    others = np.concatenate([others, np.linalg.eigh(g)[1].T, -np.linalg.eigh(g)[1].T])
    others = eps * others / np.linalg.norm(others, axis=1, keepdims=True)
    values = np.einsum("kp,pq,kq->k", others, g, others) - beta * others @ fv
    assert best <= values.min() + 1e-12


def test_failed_solve_gives_zero_step():
    def nan_operator(w):
        return [t * np.nan for t in w]

    v = [tf.ones((3,), tf.float64)]
    res = geodesic.geodesic_step(nan_operator, v, step_size=0.1, damping=0.0)
    assert not bool(res.ok)
    assert int(res.cg.status) == krylov.NOT_FINITE
    np.testing.assert_array_equal(res.step[0].numpy(), 0.0)


def test_step_under_xla_matches_eager():
    op, _, v = _problem("fisher")
    eager = geodesic.geodesic_step(op, v, 0.1, 1e-2, max_iterations=30, tolerance=1e-10)
    xla = tf.function(lambda d: geodesic.geodesic_step(op, d, 0.1, 1e-2, max_iterations=30,
                                                       tolerance=1e-10), jit_compile=True)(v)
    np.testing.assert_allclose(vectors.flatten(xla.step).numpy(),
                               vectors.flatten(eager.step).numpy(), rtol=1e-9, atol=1e-12)


def _magnitude_pruned(weights, fraction):
    flat = np.concatenate([np.abs(w).ravel() for w in weights])
    threshold = np.quantile(flat, fraction)
    return [np.where(np.abs(w) > threshold, w, 0.0).astype(w.dtype) for w in weights]


def _kl(p_logits, q_logits):
    p = tf.nn.softmax(p_logits)
    return float(tf.reduce_mean(tf.reduce_sum(p * (tf.nn.log_softmax(p_logits) - tf.nn.log_softmax(q_logits)), -1)))


def test_geodesic_step_changes_held_out_outputs_less_than_straight_step():
    """From a trained digits classifier, a step of length eps toward its
    80%-pruned copy changes held-out predictions (KL, and logit MSE) far less
    along the geodesic than along the straight line. Asserted ratio <= 0.3."""
    ds = data.load_digits(seed=0)
    model = mlp_lib.mlp(ds.input_shape, ds.num_classes, hidden=(32,))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(ds.train.x, ds.train.y, epochs=40, batch_size=64, verbose=0)
    assert model.evaluate(ds.test.x, ds.test.y, verbose=0)[1] > 0.9
    w0 = [w.numpy() for w in model.trainable_variables]
    target = _magnitude_pruned(w0, 0.8)
    v = [tf.constant(t - w) for t, w in zip(target, w0)]
    eps = 0.2 * float(vectors.norm(v))
    op = metric.MetricOperator(model, tf.constant(ds.train.x[:512]), "fisher")
    res = geodesic.geodesic_step(op, v, eps, damping=1e-3, max_iterations=50, tolerance=1e-6)
    held_out = tf.constant(ds.test.x)
    base = model(held_out)

    def change_after(step):
        for var, w, s in zip(model.trainable_variables, w0, step):
            var.assign(w + s.numpy())
        out = model(held_out)
        return _kl(base, out), float(tf.reduce_mean(tf.square(out - base)))

    geo_kl, geo_mse = change_after(res.step)
    straight_kl, straight_mse = change_after(vectors.scale(eps / float(vectors.norm(v)), v))
    assert bool(res.ok) and float(res.cosine) > 0
    print(f"KL geodesic/straight = {geo_kl / straight_kl:.4f}, MSE = {geo_mse / straight_mse:.4f}")
    assert geo_kl <= 0.3 * straight_kl, (geo_kl, straight_kl)
    assert geo_mse <= 0.3 * straight_mse, (geo_mse, straight_mse)


def _matrix(a):
    from tfgeo import linear_operator

    return linear_operator.MatrixOperator(np.asarray(a, np.float64), [(len(a),)])


def test_breakdown_after_accepted_iterations_steps_along_the_last_iterate():
    """The documented rule: a breakdown after accepted iterations keeps the last
    accepted CG iterate (a truncated-Newton direction) and the step is taken."""
    op = _matrix(np.diag([2.0, 1.0, -1.0]))  # indefinite: breaks down after an accepted step
    v = [tf.constant([1.0, 1.0, 1.0], tf.float64)]
    res = geodesic.geodesic_step(op, v, step_size=0.1, damping=0.0, max_iterations=10,
                                 tolerance=1e-12)
    assert int(res.cg.status) == krylov.NON_POSITIVE_CURVATURE and int(res.cg.iterations) >= 1
    assert bool(res.ok)
    np.testing.assert_allclose(np.linalg.norm(res.step[0].numpy()), 0.1, rtol=1e-12)
    x = res.cg.solution[0].numpy()
    np.testing.assert_allclose(res.step[0].numpy(), 0.1 * x / np.linalg.norm(x), rtol=1e-12)


def test_breakdown_on_the_first_iteration_gives_a_zero_step():
    op = _matrix(-np.eye(3))  # negative curvature at once: nothing accepted
    res = geodesic.geodesic_step(op, [tf.ones(3, tf.float64)], step_size=0.1, damping=0.0)
    assert int(res.cg.iterations) == 0 and not bool(res.ok)
    np.testing.assert_array_equal(res.step[0].numpy(), 0.0)


@pytest.mark.parametrize("step_size", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_step_sizes_are_refused(step_size):
    with pytest.raises(ValueError, match="step_size"):
        geodesic.geodesic_step(_matrix(np.eye(2)), [tf.ones(2, tf.float64)], step_size)


@pytest.mark.parametrize("damping", [-1.0, float("nan")])
def test_bad_damping_is_refused_by_the_step(damping):
    with pytest.raises(ValueError, match="damping"):
        geodesic.geodesic_step(_matrix(np.diag([1.0, 2.0, 3.0])), [tf.ones(3, tf.float64)], 0.1,
                               damping=damping)


def test_a_zero_clipped_step_size_is_not_ok():
    res = geodesic.geodesic_step(_matrix(np.eye(2)), [tf.ones(2, tf.float64)],
                                 tf.constant(0.0, tf.float64))
    assert not bool(res.ok)
    np.testing.assert_array_equal(res.step[0].numpy(), 0.0)


def test_true_residual_is_the_residual_of_the_returned_solution():
    a = np.diag([1.0, 10.0, 100.0])
    v = [tf.constant([1.0, 1.0, 1.0], tf.float64)]
    res = geodesic.geodesic_step(_matrix(a), v, 0.1, damping=0.5, max_iterations=2,
                                 tolerance=1e-12, true_residual=True)
    x = res.cg.solution[0].numpy()
    want = np.linalg.norm((a + 0.5 * np.eye(3)) @ x - 1.0) / np.sqrt(3)
    np.testing.assert_allclose(float(res.true_residual), want, rtol=1e-10)

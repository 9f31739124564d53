"""The operator interface: every wrapper against its dense matrix (float64, 1e-12)."""
import numpy as np
import pytest
import tensorflow as tf

from tests import dense_reference as ref
from tfgeo import linear_operator as lo
from tfgeo import metric
from tfgeo import vectors

SHAPES = [(3, 2), (4,)]  # P = 10, two tensors to exercise the list structure


def _spd(n, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n))
    return a @ a.T + n * np.eye(n)


def _vector(seed):
    rng = np.random.default_rng(seed)
    return [tf.constant(rng.standard_normal(s)) for s in SHAPES]


def test_matrix_operator_round_trips_and_solves():
    a = _spd(10, 0)
    op = lo.MatrixOperator(a, SHAPES)
    np.testing.assert_allclose(op.to_dense(), a, rtol=1e-12)
    np.testing.assert_allclose(op.inverse_to_dense(), np.linalg.inv(a), rtol=1e-10, atol=1e-12)
    v = _vector(1)
    np.testing.assert_allclose(vectors.flatten(op @ v).numpy(), a @ vectors.flatten(v).numpy(),
                               rtol=1e-12)
    np.testing.assert_allclose(float(op.quadratic_form(v)),
                               vectors.flatten(v).numpy() @ a @ vectors.flatten(v).numpy(),
                               rtol=1e-12)


def test_damped_masked_scaled_and_summed_operators_match_their_matrices():
    a, b = _spd(10, 2), _spd(10, 3)
    A, B = lo.MatrixOperator(a, SHAPES), lo.MatrixOperator(b, SHAPES)
    mask = [np.array([[1, 0], [1, 1], [0, 0]], np.float64), np.array([1, 0, 1, 1], np.float64)]
    m = np.concatenate([x.ravel() for x in mask])
    np.testing.assert_allclose(A.damped(0.3).to_dense(), a + 0.3 * np.eye(10), rtol=1e-12)
    np.testing.assert_allclose(A.restricted(mask).to_dense(), np.diag(m) @ a @ np.diag(m),
                               rtol=1e-12)
    np.testing.assert_allclose((A + B).to_dense(), a + b, rtol=1e-12)
    np.testing.assert_allclose((2.5 * A).to_dense(), 2.5 * a, rtol=1e-12)
    np.testing.assert_allclose(lo.SumOperator([A, B], [0.5, 2.0]).to_dense(), 0.5 * a + 2 * b,
                               rtol=1e-12)
    v = _vector(4)
    fv = vectors.flatten(v).numpy()
    np.testing.assert_allclose(float(A.damped(0.3).quadratic_form(v)),
                               fv @ (a + 0.3 * np.eye(10)) @ fv, rtol=1e-12)
    np.testing.assert_allclose(float(A.restricted(mask).quadratic_form(v)),
                               (m * fv) @ a @ (m * fv), rtol=1e-12)


def test_identity_and_diagonal_have_inverses():
    d = [tf.constant(np.arange(1.0, 7.0).reshape(3, 2)), tf.constant([2.0, 4.0, 8.0, 16.0],
                                                                     tf.float64)]
    op = lo.DiagonalOperator(d)
    diag = vectors.flatten(d).numpy()
    np.testing.assert_allclose(op.to_dense(), np.diag(diag), rtol=1e-12)
    np.testing.assert_allclose(op.inverse_to_dense(), np.diag(1 / diag), rtol=1e-12)
    ident = lo.IdentityOperator(SHAPES, tf.float64)
    assert ident.has_inverse and op.has_inverse
    np.testing.assert_allclose(ident.to_dense(), np.eye(10))


def test_metric_operator_to_dense_is_the_dense_metric():
    model = ref.small_mlp("float64")
    x = tf.constant(np.random.default_rng(5).standard_normal((7, 6)))
    for output_metric in ("euclidean", "fisher"):
        op = metric.MetricOperator(model, x, output_metric)
        np.testing.assert_allclose(op.to_dense(), ref.dense_metric(model, x, output_metric),
                                   rtol=1e-10, atol=1e-12)


def test_bad_vectors_and_operators_are_refused():
    op = lo.MatrixOperator(_spd(10, 6), SHAPES)
    with pytest.raises(ValueError, match="2 tensors"):
        op.matvec(_vector(0)[:1])
    with pytest.raises(ValueError, match="shape"):
        op.matvec([tf.zeros((2, 3), tf.float64), tf.zeros(4, tf.float64)])
    with pytest.raises(TypeError, match="floating"):
        op.matvec([tf.zeros((3, 2), tf.int32), tf.zeros(4, tf.int32)])
    with pytest.raises(TypeError, match="callable"):
        lo.as_operator(3.0, _vector(0))
    with pytest.raises(NotImplementedError, match="no inverse"):
        op.damped(1.0).solve(_vector(0))
    with pytest.raises(ValueError, match="damping"):
        op.damped(-1.0)
    with pytest.raises(ValueError, match="same shapes"):
        lo.SumOperator([op, lo.IdentityOperator([(10,)], tf.float64)])
    with pytest.raises(ValueError, match="max_size"):
        lo.IdentityOperator([(5000,)], tf.float64).to_dense()


def test_a_callable_becomes_an_operator():
    a = _spd(10, 7)
    op = lo.as_operator(lambda v: lo.MatrixOperator(a, SHAPES).matvec(v), _vector(0))
    np.testing.assert_allclose(op.to_dense(), a, rtol=1e-12)
    assert lo.as_operator(op, _vector(0)) is op

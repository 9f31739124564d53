import numpy as np
import tensorflow as tf

from tfgeo import vectors


def _vec(seed):
    rng = np.random.default_rng(seed)
    return [tf.constant(rng.standard_normal(s)) for s in [(3, 4), (4,), (2, 2, 2)]]


def test_dot_and_norm_match_flattened_numpy():
    a, b = _vec(0), _vec(1)
    fa, fb = vectors.flatten(a).numpy(), vectors.flatten(b).numpy()
    np.testing.assert_allclose(vectors.dot(a, b).numpy(), fa @ fb, rtol=1e-12)
    np.testing.assert_allclose(vectors.norm(a).numpy(), np.linalg.norm(fa), rtol=1e-12)


def test_flatten_unflatten_round_trip():
    a = _vec(2)
    back = vectors.unflatten(vectors.flatten(a), a)
    for x, y in zip(a, back):
        assert x.shape == y.shape
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_axpy_and_all_finite():
    a, b = _vec(3), _vec(4)
    out = vectors.flatten(vectors.axpy(2.5, a, b)).numpy()
    np.testing.assert_allclose(out, 2.5 * vectors.flatten(a).numpy() + vectors.flatten(b).numpy())
    assert bool(vectors.all_finite(a))
    bad = [a[0], tf.constant([1.0, np.nan, 0.0, 0.0], tf.float64), a[2]]
    assert not bool(vectors.all_finite(bad))

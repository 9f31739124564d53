"""K-FAC: factors against their definitions, the operator against dense Kronecker
blocks, its inverse against a dense solve, and exactness where K-FAC is exact (float64)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import dense_reference as ref
from tfgeo import kfac
from tfgeo import representations


def _dense_blocks(model, f):
    """The dense block-diagonal matrix sum_l A_l (x) G_l in flattened-weight order."""
    p = sum(int(np.prod(w.shape)) for w in model.trainable_variables)
    sizes = [int(np.prod(w.shape)) for w in model.trainable_variables]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    dense = np.zeros((p, p))
    for w, a, g in zip(representations.weighted_layers(model), f.a, f.g):
        a, g = a.numpy(), g.numpy()
        d_out = g.shape[0]
        d_in = sizes[w.kernel] // d_out
        # Row r of W~ (kernel rows, then the bias) and column j map to these flat indices.
        idx = np.zeros((a.shape[0], d_out), int)
        idx[:d_in] = offsets[w.kernel] + np.arange(d_in * d_out).reshape(d_in, d_out)
        if w.bias is not None:
            idx[d_in] = offsets[w.bias] + np.arange(d_out)
        block = np.kron(a, g)  # vec in row-major (r, j) order
        flat = idx.reshape(-1)
        dense[np.ix_(flat, flat)] = block
    return dense


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_operator_and_inverse_match_dense_kronecker_blocks(kind):
    keras.utils.set_random_seed(0)
    model = ref.small_mlp("float64") if kind == "mlp" else ref.small_cnn("float64", pool="avg")
    shape = (9, 6) if kind == "mlp" else (5, 6, 6, 1)
    x = tf.constant(np.random.default_rng(1).standard_normal(shape))
    f = kfac.factors_on_batch(model, x, "fisher", exact=True)
    op = kfac.KFACOperator(model, f, damping=0.1)
    want = _dense_blocks(model, f)
    np.testing.assert_allclose(op.to_dense(), want, rtol=1e-9, atol=1e-12 * np.abs(want).max())
    np.testing.assert_allclose(op.inverse_to_dense(), np.linalg.inv(want + 0.1 * np.eye(len(want))),
                               rtol=1e-8, atol=1e-10)


def test_factors_follow_their_definitions():
    keras.utils.set_random_seed(1)
    model = ref.small_mlp("float64")
    x = tf.constant(np.random.default_rng(2).standard_normal((8, 6)))
    f = kfac.factors_on_batch(model, x, "fisher", exact=True)
    layers = representations.weighted_layers(model)
    with tf.GradientTape(persistent=True) as tape:
        with representations.capture(layers) as seen:
            out = model(x)
    for k, w in enumerate(layers):
        a = np.concatenate([seen.inputs[w.name].numpy(), np.ones((8, 1))], axis=1)
        np.testing.assert_allclose(f.a[k].numpy(), a.T @ a / 8, rtol=1e-12)
        jz = tape.batch_jacobian(out, seen.preactivations[w.name]).numpy()  # [N, C, d]
        z = out.numpy() - out.numpy().max(1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        m = np.stack([np.diag(pi) - np.outer(pi, pi) for pi in p])
        g = np.einsum("ncd,nce,nef->df", jz, m, jz) / 8
        np.testing.assert_allclose(f.g[k].numpy(), g, rtol=1e-8, atol=1e-14)


def test_kfac_is_exact_for_one_linear_layer_with_a_constant_output_metric():
    model = keras.Sequential([keras.Input((5,), dtype="float64"),
                              keras.layers.Dense(3, dtype="float64")])
    x = tf.constant(np.random.default_rng(3).standard_normal((11, 5)))
    exact = kfac.KFACOperator(model, kfac.factors_on_batch(model, x, "euclidean", exact=True))
    np.testing.assert_allclose(exact.to_dense(), ref.dense_metric(model, x, "euclidean"),
                               rtol=1e-10, atol=1e-12)


def test_sampled_factors_average_to_the_exact_ones():
    keras.utils.set_random_seed(2)
    model = ref.small_mlp("float64")
    x = tf.constant(np.random.default_rng(4).standard_normal((16, 6)))
    exact = kfac.factors_on_batch(model, x, "fisher", exact=True)
    many = np.stack([kfac.factors_on_batch(model, x, "fisher", seed=(s, 0)).g[0].numpy()
                     for s in range(400)]).mean(0)
    # Monte Carlo over 400 x 16 label samples: within 15% (observed ~4%).
    err = np.abs(many - exact.g[0].numpy()).max() / np.abs(exact.g[0].numpy()).max()
    assert err < 0.15, err


def test_streamed_factors_equal_one_batch():
    model = ref.small_mlp("float64")
    x = np.random.default_rng(5).standard_normal((10, 6))
    whole = kfac.factors_on_batch(model, tf.constant(x), "euclidean", exact=True)
    streamed = kfac.factors(model, x, "euclidean", chunk_size=4, exact=True)
    for a, b in zip(whole.a + whole.g, streamed.a + streamed.g):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)


def test_spatial_subsampling_keeps_a_unbiased_and_bounded():
    keras.utils.set_random_seed(3)
    model = ref.small_cnn("float64", pool="avg")
    x = tf.constant(np.random.default_rng(6).standard_normal((6, 6, 6, 1)))
    full = kfac.factors_on_batch(model, x, "euclidean", exact=True).a[0].numpy()
    sub = np.mean([kfac.factors_on_batch(model, x, "euclidean", seed=(s, 0), exact=True,
                                         spatial_samples=4).a[0].numpy() for s in range(200)], 0)
    assert np.abs(sub - full).max() / np.abs(full).max() < 0.1

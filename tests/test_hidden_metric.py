"""The hidden-representation metric against a dense sum_l c_l J_l^T M_l J_l (float64)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import dense_reference as ref
from tfgeo import hidden_metric
from tfgeo import representations
from tfgeo import vectors
from tfgeo import weights as weights_lib


def _dense(model, x, names, output_metric, weights):
    """sum_l c_l (1/N) J_l^T M_l J_l from GradientTape.jacobian of each representation."""
    layers = representations.select(model, [n for n in names if n != "logits"])
    variables = weights_lib.backing_variables(model)
    with tf.GradientTape(persistent=True) as tape:
        with representations.capture(layers, inputs=False) as seen:
            out = model(x, training=False)
        zs = [out if n == "logits" else seen.preactivations[n] for n in names]
    total = 0.0
    for k, (name, z) in enumerate(zip(names, zs)):
        n = z.shape[0]
        blocks = tape.jacobian(z, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        jac = np.concatenate([b.numpy().reshape(n, int(np.prod(z.shape[1:])), -1)
                              for b in blocks], axis=-1)
        d = jac.shape[1]
        if name == "logits" and output_metric == "fisher":
            zz = z.numpy() - z.numpy().max(1, keepdims=True)
            p = np.exp(zz) / np.exp(zz).sum(1, keepdims=True)
            m = np.stack([np.diag(pi) - np.outer(pi, pi) for pi in p])
        else:
            m = np.broadcast_to(np.eye(d), (n, d, d))
        c = weights[k] if weights is not None else 1.0 / (np.sum(z.numpy() ** 2) / n)
        total = total + c * np.einsum("ncp,ncd,ndq->pq", jac, m, jac) / n
    return total


CASES = {
    "mlp_all": (lambda: ref.small_mlp("float64"), (7, 6), None),
    "mlp_hidden_only": (lambda: ref.small_mlp("float64"), (7, 6), "first"),
    "cnn": (lambda: ref.small_cnn("float64", pool="avg"), (4, 6, 6, 1), None),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("output_metric", ["euclidean", "fisher"])
@pytest.mark.parametrize("weights", ["scale", "explicit"])
def test_hidden_metric_matches_dense(case, output_metric, weights):
    build, shape, layers = CASES[case]
    keras.utils.set_random_seed(0)
    model = build()
    if layers == "first":  # the first hidden layer alone
        layers = [representations.weighted_layers(model)[0].name]
    x = tf.constant(np.random.default_rng(1).standard_normal(shape))
    count = len(layers) if layers else len(representations.weighted_layers(model))
    chosen = "scale" if weights == "scale" else [0.5 + k for k in range(count)]
    op = hidden_metric.HiddenMetricOperator(model, x, layers, output_metric, weights=chosen)
    explicit = None if weights == "scale" else op.weights
    want = _dense(model, x, op.names, output_metric, explicit)
    got = op.to_dense()
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * np.abs(want).max())
    v = ref.random_vector(model, 3)
    fv = vectors.flatten(v).numpy()
    np.testing.assert_allclose(float(op.quadratic_form(v)), fv @ want @ fv, rtol=1e-9)


@pytest.mark.parametrize("mode", ["function", "xla"])
def test_compiled_and_chunked_products_agree(mode):
    model = ref.small_mlp("float64")
    x = tf.constant(np.random.default_rng(2).standard_normal((12, 6)))
    v = ref.random_vector(model, 4)
    whole = hidden_metric.HiddenMetricOperator(model, x, weights=[1.0, 2.0])
    chunked = hidden_metric.HiddenMetricOperator(model, x, weights=[1.0, 2.0], chunk_size=5)
    want = vectors.flatten(whole @ v).numpy()
    fn = tf.function(lambda u: chunked @ u, jit_compile=mode == "xla")
    np.testing.assert_allclose(vectors.flatten(fn(v)).numpy(), want, rtol=1e-10)


def test_unknown_layers_are_named():
    model = ref.small_mlp("float64")
    x = tf.zeros((2, 6), tf.float64)
    with pytest.raises(ValueError, match="'conv9'.*weighted layers"):
        hidden_metric.HiddenMetricOperator(model, x, ["conv9", "logits"])
    with pytest.raises(ValueError, match="repeat"):
        hidden_metric.HiddenMetricOperator(model, x, ["logits", "logits"])

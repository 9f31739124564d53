"""The exact metric diagonal against the dense metric's diagonal, for every output metric."""
import numpy as np
import pytest
import tensorflow as tf

from tests import dense_reference as ref
from tfgeo import diagonal_metric
from tfgeo import metric
from tfgeo import output_metrics


@pytest.mark.parametrize("output_metric", output_metrics.NAMES)
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_diagonal_equals_dense_diagonal(output_metric, kind):
    model = ref.small_mlp("float64") if kind == "mlp" else ref.small_cnn("float64", pool="avg")
    shape = (7, 6) if kind == "mlp" else (4, 6, 6, 1)
    x = np.random.default_rng(0).normal(size=shape)
    dense = metric.MetricOperator(model, tf.constant(x), output_metric).to_dense()
    for chunk in (2 ** 25, 60):  # several chunks must give the same mean
        diag = np.concatenate([d.ravel() for d in
                               diagonal_metric.diagonal(model, x, output_metric, chunk)])
        np.testing.assert_allclose(diag, np.diag(dense), rtol=1e-9, atol=1e-14)


def test_diagonal_operator_inverts_with_its_floor():
    model = ref.small_mlp("float64")
    x = np.random.default_rng(1).normal(size=(5, 6))
    op = diagonal_metric.diagonal_operator(model, x, "euclidean", floor=0.5)
    np.testing.assert_allclose(np.diag(op.inverse_to_dense()), 1 / np.diag(op.to_dense()))

import numpy as np
import pytest
import tensorflow as tf

from tfgeo import output_metrics


def test_fisher_applies_diag_p_minus_ppT():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 5))
    t = rng.standard_normal((4, 5))
    got = output_metrics.get("fisher").apply(tf.constant(logits), tf.constant(t)).numpy()
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    want = np.stack([(np.diag(pi) - np.outer(pi, pi)) @ ti for pi, ti in zip(p, t)])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_per_example_quadratic_is_tMt():
    rng = np.random.default_rng(1)
    logits, t = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    fisher = output_metrics.get("fisher")
    q = fisher.per_example_quadratic(tf.constant(logits), tf.constant(t)).numpy()
    mt = fisher.apply(tf.constant(logits), tf.constant(t)).numpy()
    np.testing.assert_allclose(q, (mt * t).sum(1), rtol=1e-12)
    assert np.all(q >= -1e-12)  # PSD
    eu = output_metrics.get("euclidean").per_example_quadratic(tf.constant(logits), tf.constant(t))
    np.testing.assert_allclose(eu.numpy(), (t * t).sum(1), rtol=1e-12)


def test_unknown_metric_names_the_culprit():
    with pytest.raises(ValueError, match="'kl'.*euclidean"):
        output_metrics.get("kl")

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


def _dense_m(name, logits):
    c = logits.shape[-1]
    if name == "centered":
        return np.broadcast_to(np.eye(c) - 1.0 / c, (len(logits), c, c))
    z = logits / 4.0
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return np.stack([np.diag(pi) - np.outer(pi, pi) for pi in p])


@pytest.mark.parametrize("name", ["centered", "tempered_fisher"])
def test_new_output_metrics_match_their_matrices_and_stay_psd(name):
    rng = np.random.default_rng(3)
    logits, t = 10 * rng.standard_normal((5, 6)), rng.standard_normal((5, 6))
    got = output_metrics.get(name).apply(tf.constant(logits), tf.constant(t)).numpy()
    want = np.einsum("ncd,nd->nc", _dense_m(name, logits), t)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)
    assert np.all(output_metrics.get(name).per_example_quadratic(
        tf.constant(logits), tf.constant(t)).numpy() >= -1e-12)


def test_tempered_fisher_keeps_seeing_confident_logits():
    logits = tf.constant([[30.0, 0.0, 0.0]], tf.float64)  # p nearly one-hot
    t = tf.constant([[0.0, 1.0, -1.0]], tf.float64)
    fisher = float(output_metrics.get("fisher").per_example_quadratic(logits, t)[0])
    tempered = float(output_metrics.get("tempered_fisher").per_example_quadratic(logits, t)[0])
    assert fisher < 1e-12 < 1e-4 < tempered


@pytest.mark.parametrize("name", output_metrics.NAMES)
def test_divergence_residual_and_metric_agree(name):
    """D(r, r) = 0, dD/df = residual (autodiff), and the Hessian of D at f = r is M."""
    metric = output_metrics.get(name)
    rng = np.random.default_rng(4)
    ref = tf.constant(2 * rng.standard_normal((3, 5)))
    out = tf.constant(ref.numpy() + 0.3 * rng.standard_normal((3, 5)))
    np.testing.assert_allclose(metric.divergence(ref, ref).numpy(), 0.0, atol=1e-12)
    with tf.GradientTape() as tape:
        tape.watch(out)
        d = tf.reduce_sum(metric.divergence(out, ref))
    np.testing.assert_allclose(tape.gradient(d, out).numpy(), metric.residual(out, ref).numpy(),
                               rtol=1e-10, atol=1e-12)
    t = tf.constant(rng.standard_normal((3, 5)))
    fixed = tf.constant(ref.numpy())
    with tf.autodiff.ForwardAccumulator(ref, t) as acc:  # d/deps residual(ref + eps t, ref) = M t
        r = metric.residual(ref, fixed)
    np.testing.assert_allclose(acc.jvp(r).numpy(), metric.apply(ref, t).numpy(), rtol=1e-9,
                               atol=1e-12)

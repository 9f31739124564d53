"""The restoring objective: its direction against closed forms on a linear model."""
import keras
import numpy as np
import pytest

from tfgeo import objectives
from tfgeo.continual import restoring


def _linear(seed=0, d=3, c=4):
    net = keras.Sequential([keras.Input((d,)), keras.layers.Dense(c)])
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(d, c)).astype(np.float32)
    b = rng.normal(size=c).astype(np.float32)
    net.set_weights([w, b])
    return net, w, b


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def _ce_gradient(x, y, w, b):
    """d/dW, d/db of the mean softmax cross-entropy of a linear model."""
    p = _softmax(x @ w + b)
    p[np.arange(len(y)), y] -= 1.0
    return x.T @ p / len(y), p.mean(axis=0)


@pytest.mark.parametrize("metric", ["euclidean", "fisher"])
def test_direction_equals_closed_form_on_a_linear_model(metric):
    net, w, b = _linear()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 3)).astype(np.float32)
    y = rng.integers(0, 4, size=8).astype(np.int32)
    memory = rng.normal(size=(5, 3)).astype(np.float32)
    stored = rng.normal(size=(5, 4)).astype(np.float32)
    strength = 0.7
    objective = restoring.RestoringDescent(memory, stored, strength=strength,
                                           output_metric=metric, memory_batch_size=5, seed=0)
    v = [t.numpy() for t in objective.direction(net, x, y)]
    f = memory @ w + b
    # Residual dD/df: f - z (Euclidean, D = |f - z|^2 / 2) or softmax(f) - softmax(z) (KL).
    r = f - stored if metric == "euclidean" else _softmax(f) - _softmax(stored)
    gw, gb = _ce_gradient(x, y, w, b)
    expected_w = -(gw + strength * memory.T @ r / len(memory))
    expected_b = -(gb + strength * r.mean(axis=0))
    np.testing.assert_allclose(v[0], expected_w, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(v[1], expected_b, rtol=1e-4, atol=1e-6)


def test_no_restoring_at_the_stored_function_and_zero_strength_is_task_descent():
    net, _, _ = _linear()
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    y = rng.integers(0, 4, size=6).astype(np.int32)
    memory = rng.normal(size=(7, 3)).astype(np.float32)
    stored = net.predict(memory, verbose=0)
    plain = [t.numpy() for t in objectives.TaskLossDescent().direction(net, x, y)]
    for strength, objective_stored in ((2.0, stored), (0.0, stored + 5.0)):
        objective = restoring.RestoringDescent(memory, objective_stored, strength=strength,
                                               memory_batch_size=3, seed=0)
        v = [t.numpy() for t in objective.direction(net, x, y)]
        for a, e in zip(v, plain):
            np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-7)
    drifted = restoring.RestoringDescent(memory, stored + 1.0, strength=1.0,
                                         output_metric="euclidean", memory_batch_size=7)
    assert float(drifted.restoring_loss(net)) == pytest.approx(0.5 * 4, rel=1e-5)


def test_memory_draws_are_distinct_and_bad_arguments_are_refused():
    memory = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    objective = restoring.RestoringDescent(memory, np.zeros((10, 4), np.float32),
                                           memory_batch_size=4, seed=0)
    rows = objective.sample_indices().numpy()
    assert len(set(rows.tolist())) == 4 and rows.max() < 10
    with pytest.raises(ValueError, match="strength"):
        restoring.RestoringDescent(memory, np.zeros((10, 4), np.float32), strength=-1.0)
    with pytest.raises(ValueError, match="same number"):
        restoring.RestoringDescent(memory, np.zeros((9, 4), np.float32))
    with pytest.raises(ValueError, match=r"\[M, C\]"):
        restoring.RestoringDescent(memory, np.zeros(10, np.int32))

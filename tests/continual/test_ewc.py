"""EWC: the diagonal Fisher against the dense Fisher, the penalty against its formula."""
import keras
import numpy as np
import pytest

from tests import dense_reference
from tfgeo.continual import ewc


def test_diagonal_fisher_equals_dense_fisher_diagonal():
    model = dense_reference.small_mlp("float64")
    x = np.random.default_rng(0).normal(size=(7, 6))
    dense = np.diag(dense_reference.dense_metric(model, x, "fisher"))
    # A tiny chunk forces several chunks: the average must not depend on it.
    for chunk in (2 ** 25, 60):
        diag = np.concatenate([f.ravel() for f in ewc.diagonal_fisher(model, x, chunk)])
        np.testing.assert_allclose(diag, dense, rtol=1e-10, atol=1e-14)


def test_diagonal_fisher_on_a_cnn():
    model = dense_reference.small_cnn("float64", pool="avg")
    x = np.random.default_rng(1).normal(size=(4, 6, 6, 1))
    dense = np.diag(dense_reference.dense_metric(model, x, "fisher"))
    diag = np.concatenate([f.ravel() for f in ewc.diagonal_fisher(model, x)])
    np.testing.assert_allclose(diag, dense, rtol=1e-10, atol=1e-14)


def test_penalty_matches_formula_over_two_tasks():
    model = dense_reference.small_mlp("float32")
    penalised = ewc.EWCModel(model, strength=3.0)
    rng = np.random.default_rng(2)
    anchors, fishers = [], []
    for _ in range(2):
        model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
        fisher = [rng.uniform(size=w.shape).astype("float32") for w in model.get_weights()]
        penalised.consolidate(fisher)
        anchors.append(model.get_weights())
        fishers.append(fisher)
    now = [rng.normal(size=w.shape).astype("float32") for w in model.get_weights()]
    model.set_weights(now)
    expected = 0.5 * 3.0 * sum(np.sum(f * (w - a) ** 2) for fs, an in zip(fishers, anchors)
                               for f, a, w in zip(fs, an, now))
    assert float(penalised.penalty()) == pytest.approx(expected, rel=1e-4)
    # The state round-trips (checkpoints).
    other = ewc.EWCModel(model, strength=3.0)
    other.set_penalty_state(penalised.get_penalty_state())
    assert float(other.penalty()) == pytest.approx(expected, rel=1e-4)


def test_training_with_a_strong_penalty_stays_near_the_anchor():
    model = dense_reference.small_mlp("float32")
    anchor = model.get_weights()
    penalised = ewc.EWCModel(model, strength=1e4)
    penalised.consolidate([np.ones_like(w) for w in anchor])
    penalised.compile(keras.optimizers.Adam(1e-2),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(3).normal(size=(64, 6)).astype("float32")
    y = np.arange(64) % 3
    free = keras.models.clone_model(model)
    free.set_weights(anchor)
    free.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = penalised.fit(x, y, epochs=5, verbose=0)
    free.fit(x, y, epochs=5, verbose=0)
    moved = lambda m: sum(float(np.sum((w - a) ** 2)) for w, a in zip(m.get_weights(), anchor))  # noqa: E731
    assert moved(model) < 0.1 * moved(free)
    assert "ewc_penalty" in history.history

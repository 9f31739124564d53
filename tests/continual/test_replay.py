"""Experience replay and DER: the memory term against numpy, the memory draws, and forgetting."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfgeo.experiments import data
from tfgeo.continual import multihead
from tfgeo.continual import replay

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def digits():
    return data.load_digits(seed=0)


def _net(hidden=32, seed=0):
    """A digits MLP with one shared head, taking {"x", "task"} like the harness's networks."""
    x = keras.Input((64,))
    h = keras.layers.Dense(hidden, activation="relu",
                           kernel_initializer=keras.initializers.GlorotUniform(seed))(x)
    init = keras.initializers.GlorotUniform(seed + 1)
    logits = keras.layers.Dense(10, kernel_initializer=init)(h)
    return multihead.multi_head(keras.Model(x, logits), 1, 10)


def _inputs(x):
    return {multihead.INPUTS: x, multihead.TASK: np.zeros(len(x), np.int32)}


def _sgd():
    return keras.optimizers.SGD(0.05, momentum=0.9)


def _twin(net):
    other = _net()
    other.set_weights(net.get_weights())
    return other


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_der_with_zero_alpha_is_naive_training(digits, alpha):
    x, y = digits.train.x[:256], digits.train.y[:256]
    net = _net()
    plain = _twin(net)
    memory = _inputs(digits.train.x[-40:])
    der = replay.ReplayModel(net, memory, replay.network_logits(net, memory) + 1.0, mode="der",
                             alpha=alpha, memory_batch_size=16, seed=3)
    der.compile(_sgd(), LOSS, jit_compile=False)
    plain.compile(_sgd(), LOSS, jit_compile=False)
    history = der.fit(_inputs(x), y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    plain.fit(_inputs(x), y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    gap = max(float(np.abs(a - b).max()) for a, b in zip(net.get_weights(), plain.get_weights()))
    if alpha == 0:
        assert gap < 1e-6
    else:  # the memory term (logits shifted by 1) moves the weights
        assert gap > 1e-3
    assert history.history["replay_loss"][-1] > 0


def test_memory_terms_equal_numpy_on_a_hand_built_example():
    net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    w = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]], np.float32)
    b = np.array([0.1, 0.2, -0.3], np.float32)
    net.set_weights([w, b])
    x = np.array([[1, 0], [0, 1], [2, -1], [-1, 1]], np.float32)
    stored = np.array([[1, 0, 0], [0, 2, 0], [0, 0, -1], [1, 1, 1]], np.float32)
    logits = x @ w + b
    mse = np.mean((logits - stored) ** 2)
    der = replay.ReplayModel(net, x, stored, mode="der", alpha=2.0, memory_batch_size=4)
    assert float(der.memory_loss()) == pytest.approx(mse, rel=1e-6)
    # The train step's term: a memory batch of the whole memory, learning rate 0.
    der.compile(keras.optimizers.SGD(0.0), LOSS, jit_compile=False)
    history = der.fit(x, np.zeros(4, np.int32), batch_size=4, epochs=1, verbose=0)
    assert history.history["replay_loss"][0] == pytest.approx(mse, rel=1e-6)
    # Replay: the mean cross-entropy of the stored labels.
    labels = np.array([0, 2, 1, 1], np.int32)
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    ce = -np.mean(log_p[np.arange(4), labels])
    er = replay.ReplayModel(net, x, labels, mode="replay", memory_batch_size=4)
    assert float(er.memory_loss()) == pytest.approx(ce, rel=1e-6)
    # On a 2-row batch the term is the mean over those rows.
    assert float(der.memory_loss(tf.constant([1, 3]))) == pytest.approx(
        np.mean((logits[[1, 3]] - stored[[1, 3]]) ** 2), rel=1e-6)


def test_memory_draws_cover_the_memory_under_xla(digits):
    net = _net()
    memory = _inputs(digits.train.x[:10])
    der = replay.ReplayModel(net, memory, replay.network_logits(net, memory), mode="der",
                             memory_batch_size=3, seed=0)
    draw = tf.function(der.sample_indices, jit_compile=True)
    counts = np.zeros(10)
    for _ in range(200):
        idx = draw().numpy()
        assert len(idx) == 3 and len(set(idx)) == 3 and idx.min() >= 0 and idx.max() < 10
        counts[idx] += 1
    # Every index is drawn, about uniformly (mean 60, std ~6.5).
    assert counts.min() > 30 and counts.max() < 90
    # The step itself compiles under XLA.
    der.compile(_sgd(), LOSS, metrics=["accuracy"], jit_compile=True)
    x, y = digits.train.x[:64], digits.train.y[:64]
    history = der.fit(_inputs(x), y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["replay_loss"][0])
    assert history.history["replay_loss"][0] > 0  # the weights moved off the stored logits


def _accuracy(net, x, y):
    return float(np.mean(np.argmax(net.predict(_inputs(x), verbose=0), axis=1) == y))


def test_replay_forgets_less_than_naive(digits):
    train, test = digits.train, digits.test
    a, b = train.y < 5, train.y >= 5
    test_a = test.y < 5
    net = _net()
    net.compile(keras.optimizers.Adam(1e-2), LOSS, jit_compile=False)
    net.fit(_inputs(train.x[a]), train.y[a], batch_size=32, epochs=5, verbose=0)
    before = _accuracy(net, test.x[test_a], test.y[test_a])
    assert before > 0.9

    naive = _twin(net)
    naive.compile(keras.optimizers.Adam(1e-2), LOSS, jit_compile=False)
    naive.fit(_inputs(train.x[b]), train.y[b], batch_size=32, epochs=5, verbose=0)

    keep = np.flatnonzero(a)[:100]
    rehearsed = _twin(net)
    er = replay.ReplayModel(rehearsed, _inputs(train.x[keep]), train.y[keep], mode="replay",
                            alpha=1.0, memory_batch_size=32, seed=0)
    er.compile(keras.optimizers.Adam(1e-2), LOSS, jit_compile=False)
    er.fit(_inputs(train.x[b]), train.y[b], batch_size=32, epochs=5, verbose=0)

    naive_a = _accuracy(naive, test.x[test_a], test.y[test_a])
    replay_a = _accuracy(rehearsed, test.x[test_a], test.y[test_a])
    assert replay_a > naive_a + 0.4, (naive_a, replay_a)
    # Both learnt task B.
    for learnt in (naive, rehearsed):
        assert _accuracy(learnt, test.x[~test_a], test.y[~test_a]) > 0.8


def test_save_and_load_keep_the_memory(digits, tmp_path):
    net = _net()
    memory = _inputs(digits.train.x[:12])
    der = replay.ReplayModel(net, memory, replay.network_logits(net, memory), mode="der",
                             alpha=0.5, memory_batch_size=4, seed=1)
    path = str(tmp_path / "der.keras")
    der.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, replay.ReplayModel)
    assert (loaded.mode, loaded.alpha, loaded.memory_batch_size) == ("der", 0.5, 4)
    (x0, z0), (x1, z1) = der.get_memory(), loaded.get_memory()
    np.testing.assert_array_equal(z0, z1)
    for k in x0:
        np.testing.assert_array_equal(x0[k], x1[k])
    assert float(loaded.memory_loss()) == pytest.approx(0.0, abs=1e-10)


def test_rejects_mismatched_memory():
    net = _net()
    x = _inputs(np.zeros((5, 64), np.float32))
    with pytest.raises(ValueError, match="integer labels"):
        replay.ReplayModel(net, x, np.zeros((5, 10), np.float32), mode="replay")
    with pytest.raises(ValueError, match="float logits"):
        replay.ReplayModel(net, x, np.zeros(5, np.int32), mode="der")
    with pytest.raises(ValueError, match="same number"):
        replay.ReplayModel(net, x, np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="mode"):
        replay.ReplayModel(net, x, np.zeros(5, np.int32), mode="agem")

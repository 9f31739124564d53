"""The Bhattacharyya distance against its formula; FIP's penalty and its training step."""
import keras
import numpy as np
import pytest

from tfgeo.experiments import data
from tfgeo.continual import multihead
from tfgeo.continual import output_distance
from tfgeo.continual import replay

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _numpy_distance(p_logits, q_logits, eps):
    def softmax(z):
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)
    p, q = softmax(p_logits), softmax(q_logits)
    return np.mean(-np.log(np.sum(np.sqrt(p * q + eps), axis=1)))


def _distance(p, q, eps=1e-8):
    return float(output_distance.bhattacharyya_distance(p.astype("float32"), q.astype("float32"),
                                                        eps))


def test_bhattacharyya_distance_matches_numpy_and_is_symmetric():
    rng = np.random.default_rng(0)
    p, q = rng.normal(size=(2, 16, 10)) * 2.0
    for eps in (1e-8, 1e-3):
        expected = _numpy_distance(p, q, eps)
        assert _distance(p, q, eps) == pytest.approx(expected, rel=1e-5)
        assert _distance(q, p, eps) == pytest.approx(_distance(p, q, eps), rel=1e-6)
    assert _distance(p, q, 0.0) > 0.05
    # Per row: one row's distance is the formula on that row.
    assert _distance(p[:1], q[:1]) == pytest.approx(_numpy_distance(p[:1], q[:1], 1e-8),
                                                    rel=1e-5)


def test_bhattacharyya_distance_of_equal_outputs_is_zero_up_to_eps():
    rng = np.random.default_rng(1)
    p = rng.normal(size=(32, 10))
    assert abs(_distance(p, p, eps=0.0)) < 1e-6
    # With eps, D(p, p) = -log sum_k sqrt(p_k^2 + eps) ~ -(eps / 2) sum_k 1 / p_k: below
    # 1e-6 in magnitude for moderate logits (every p_k >> sqrt(eps)).
    assert abs(_distance(0.3 * p, 0.3 * p)) < 1e-6
    assert _distance(p, p) == pytest.approx(_numpy_distance(p, p, 1e-8), abs=2e-7)
    # Near one-hot outputs: D(p, p) = -log sum_k sqrt(p_k^2 + eps) in [-log(1 + C sqrt(eps)), 0].
    sharp = 30.0 * p
    d = _distance(sharp, sharp)
    assert -np.log1p(10 * 1e-4) - 1e-6 <= d <= 1e-6
    assert d == pytest.approx(_numpy_distance(sharp, sharp, 1e-8), rel=1e-3)


@pytest.fixture(scope="module")
def digits():
    return data.load_digits(seed=0)


def _net(seed=0):
    x = keras.Input((64,))
    h = keras.layers.Dense(32, activation="relu",
                           kernel_initializer=keras.initializers.GlorotUniform(seed))(x)
    init = keras.initializers.GlorotUniform(seed + 1)
    logits = keras.layers.Dense(10, kernel_initializer=init)(h)
    return multihead.multi_head(keras.Model(x, logits), 1, 10)


def _inputs(x):
    return {multihead.INPUTS: x, multihead.TASK: np.zeros(len(x), np.int32)}


def _sgd():
    return keras.optimizers.SGD(0.05, momentum=0.9)


def test_fip_penalty_is_zero_at_the_previous_network(digits):
    net = _net()
    memory = _inputs(digits.train.x[:50])
    fip = output_distance.FIPModel(net, memory, replay.network_logits(net, memory),
                                   alpha=1.0, memory_batch_size=16, seed=0)
    assert abs(float(fip.memory_loss())) < 1e-6
    # The training step's term at w = w_prev (learning rate 0), then away from it.
    fip.compile(keras.optimizers.SGD(0.0), LOSS, jit_compile=False)
    x, y = _inputs(digits.train.x[100:164]), digits.train.y[100:164]
    history = fip.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert abs(history.history["fip_distance"][0]) < 1e-6
    net.set_weights([w + 0.3 * np.random.default_rng(2).normal(size=w.shape).astype(w.dtype)
                     for w in net.get_weights()])
    assert float(fip.memory_loss()) > 1e-3


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_fip_with_zero_alpha_is_naive_training(digits, alpha):
    x, y = digits.train.x[:256], digits.train.y[:256]
    net = _net()
    plain = _net()
    plain.set_weights(net.get_weights())
    memory = _inputs(digits.train.x[-40:])
    # Previous outputs unlike the network's, so the penalty pulls when alpha > 0.
    previous = -replay.network_logits(net, memory)
    fip = output_distance.FIPModel(net, memory, previous, alpha=alpha, memory_batch_size=16,
                                   seed=3)
    fip.compile(_sgd(), LOSS, jit_compile=False)
    plain.compile(_sgd(), LOSS, jit_compile=False)
    history = fip.fit(_inputs(x), y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    plain.fit(_inputs(x), y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    gap = max(float(np.abs(a - b).max()) for a, b in zip(net.get_weights(), plain.get_weights()))
    if alpha == 0:
        assert gap < 1e-6
    else:
        assert gap > 1e-3
    assert history.history["fip_distance"][-1] > 0


def test_fip_trains_under_xla_and_round_trips(digits, tmp_path):
    net = _net()
    memory = _inputs(digits.train.x[:20])
    fip = output_distance.FIPModel(net, memory, replay.network_logits(net, memory),
                                   alpha=2.0, memory_batch_size=8, seed=0, eps=1e-6)
    fip.compile(_sgd(), LOSS, metrics=["accuracy"], jit_compile=True)
    history = fip.fit(_inputs(digits.train.x[:64]), digits.train.y[:64], batch_size=16,
                      epochs=1, verbose=0)
    assert np.isfinite(history.history["fip_distance"][0])
    path = str(tmp_path / "fip.keras")
    fip.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, output_distance.FIPModel)
    assert (loaded.alpha, loaded.eps, loaded.memory_batch_size) == (2.0, 1e-6, 8)
    np.testing.assert_array_equal(loaded.get_memory()[1], fip.get_memory()[1])
    assert float(loaded.memory_loss()) == pytest.approx(float(fip.memory_loss()), abs=1e-7)

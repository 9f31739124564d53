"""Layer-wise reconstruction against numpy least squares (float64), through Conv2D
patches, on the pruned network's own inputs, and its gain over one-shot pruning;
Wanda and SparseGPT-style OBS masks: exact counts and what they optimise."""
import keras
import numpy as np
import pytest

from tests import dense_reference as ref
from tfgeo.sparsify import layerwise
from tfgeo.sparsify import pruning
from tfgeo import weights as weights_lib
from tfgeo.experiments import data
from tfgeo.models import mlp as mlp_lib


def _lstsq_units(x, y, mask, bias=None):
    """Per column j: least squares of y_j on the kept columns of x (and a ones
    column if `bias` is None, else on y_j - bias_j). Returns (W [d, d_out], b)."""
    d, d_out = mask.shape
    w, b = np.zeros((d, d_out)), np.zeros(d_out) if bias is None else np.array(bias)
    for j in range(d_out):
        kept = np.flatnonzero(mask[:, j])
        if bias is None:
            a = np.concatenate([x[:, kept], np.ones((len(x), 1))], axis=1)
            sol = np.linalg.lstsq(a, y[:, j], rcond=None)[0]
            w[kept, j], b[j] = sol[:-1], sol[-1]
        elif kept.size:
            w[kept, j] = np.linalg.lstsq(x[:, kept], y[:, j] - bias[j], rcond=None)[0]
    return w, b


def _set_random(model, seed):
    rng = np.random.default_rng(seed)
    weights_lib.set_trainable(model, [rng.standard_normal(v.shape)
                                      for v in model.trainable_variables])


def _masks(model, seed, p=0.5):
    rng = np.random.default_rng(seed)
    return [(rng.random(v.shape) > p).astype(np.float64) if len(v.shape) >= 2
            else np.ones(v.shape) for v in model.trainable_variables]


@pytest.mark.parametrize("refit_bias", [True, False])
def test_dense_layer_is_a_least_squares_solve_per_unit(refit_bias):
    model = keras.Sequential([keras.Input((7,), dtype="float64"),
                              keras.layers.Dense(5, dtype="float64", name="dense")])
    _set_random(model, 0)
    start = weights_lib.get_trainable(model)
    x = np.random.default_rng(1).standard_normal((40, 7))
    masks = _masks(model, 2)
    masks[0][:, 0] = 0  # a unit with no kept weight: only its bias is refit
    masks[0][:, 1] = 1  # an unpruned unit: refit exactly to the dense weights
    new, report = layerwise.reconstruct(model, masks, x, ridge=0.0, refit_bias=refit_bias,
                                        chunk_size=16)
    y = x @ start[0] + start[1]
    w, b = _lstsq_units(x, y, masks[0], None if refit_bias else start[1])
    np.testing.assert_allclose(new[0], w, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(new[1], b, rtol=1e-8, atol=1e-10)
    assert np.all(new[0][masks[0] == 0] == 0)
    np.testing.assert_allclose(new[0][:, 1], start[0][:, 1], rtol=1e-8)
    if refit_bias:
        assert new[1][0] == pytest.approx(y[:, 0].mean(), rel=1e-10)
    else:
        assert np.array_equal(new[1], start[1])
    after = np.sum((x @ w + b - y) ** 2) / np.sum(y ** 2)
    before = np.sum((x @ (start[0] * masks[0]) + start[1] - y) ** 2) / np.sum(y ** 2)
    assert report["dense"]["after"] == pytest.approx(after, rel=1e-7)
    assert report["dense"]["before"] == pytest.approx(before, rel=1e-10)
    for a, s in zip(weights_lib.get_trainable(model), start):  # apply=False: untouched
        assert np.array_equal(a, s)


def test_ridge_pulls_toward_the_masked_weights_so_dead_inputs_keep_theirs():
    """With ridge lambda > 0 each unit solves (X_K^T X_K + lambda I) w = X_K^T y + lambda w0_K
    (w0: the masked weights); an input that is zero on every calibration row keeps
    its weight, so the pruned kernel has exactly the mask's zeros."""
    model = keras.Sequential([keras.Input((6,), dtype="float64"),
                              keras.layers.Dense(4, dtype="float64", name="dense")])
    _set_random(model, 3)
    start = weights_lib.get_trainable(model)
    x = np.random.default_rng(4).standard_normal((30, 6))
    x[:, 2] = 0.0  # a dead input (a blank border pixel)
    masks = _masks(model, 5, p=0.3)
    masks[0][2, :] = 1
    ridge = 0.1
    new, _ = layerwise.reconstruct(model, masks, x, ridge=ridge, refit_bias=False)
    y = x @ start[0] + start[1]
    lam = ridge * np.mean(np.sum(x ** 2, axis=0))
    for j in range(4):
        kept = np.flatnonzero(masks[0][:, j])
        a = x[:, kept].T @ x[:, kept] + lam * np.eye(kept.size)
        rhs = x[:, kept].T @ (y[:, j] - start[1][j]) + lam * start[0][kept, j]
        np.testing.assert_allclose(new[0][kept, j], np.linalg.solve(a, rhs), rtol=1e-8,
                                   atol=1e-10)
    np.testing.assert_allclose(new[0][2], start[0][2], rtol=1e-12)
    assert int(np.sum(new[0] == 0)) == int(np.sum(masks[0] == 0))


def _patches_same_3x3(x):
    """Explicit 3x3 'same' (stride 1) receptive fields, [N*H*W, 9*C], (kh, kw, C) order."""
    n, h, w, c = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    rows = [padded[k, i:i + 3, j:j + 3, :].reshape(-1)
            for k in range(n) for i in range(h) for j in range(w)]
    return np.array(rows)


@pytest.mark.parametrize("refit_bias", [True, False])
def test_conv_layer_is_a_least_squares_solve_per_channel_over_patches(refit_bias):
    model = keras.Sequential([keras.Input((5, 5, 2), dtype="float64"),
                              keras.layers.Conv2D(3, 3, padding="same", dtype="float64", name="conv")])
    _set_random(model, 3)
    start = weights_lib.get_trainable(model)
    x = np.random.default_rng(4).standard_normal((4, 5, 5, 2))
    masks = _masks(model, 5)
    new, report = layerwise.reconstruct(model, masks, x, ridge=0.0, refit_bias=refit_bias,
                                        chunk_size=3)
    patches = _patches_same_3x3(x)
    kernel = start[0].reshape(18, 3)
    y = model(x).numpy().reshape(-1, 3)
    np.testing.assert_allclose(patches @ kernel + start[1], y, rtol=1e-10, atol=1e-12)
    w, b = _lstsq_units(patches, y, masks[0].reshape(18, 3), None if refit_bias else start[1])
    np.testing.assert_allclose(new[0].reshape(18, 3), w, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(new[1], b, rtol=1e-8, atol=1e-10)
    assert np.all(new[0][masks[0] == 0] == 0)
    after = np.sum((patches @ w + b - y) ** 2) / np.sum(y ** 2)
    assert report["conv"]["after"] == pytest.approx(after, rel=1e-7)


def test_later_layers_regress_on_the_pruned_and_refit_network():
    model = ref.small_mlp("float64")  # 6 -> 5 tanh -> 3
    _set_random(model, 6)
    (w1, b1, w2, b2) = weights_lib.get_trainable(model)
    x = np.random.default_rng(7).standard_normal((30, 6))
    masks = _masks(model, 8)
    new, report = layerwise.reconstruct(model, masks, x, ridge=0.0)
    z1 = x @ w1 + b1
    v1, c1 = _lstsq_units(x, z1, masks[0])
    z2 = np.tanh(z1) @ w2 + b2  # the dense target
    v2, c2 = _lstsq_units(np.tanh(x @ v1 + c1), z2, masks[2])  # on the refit layer's output
    for got, want in zip(new, (v1, c1, v2, c2)):
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)
    # Regressing on the dense network's hidden layer instead gives other weights.
    dense_inputs, _ = _lstsq_units(np.tanh(z1), z2, masks[2])
    assert np.abs(dense_inputs - v2).max() > 1e-3
    # The first layer sees the one-shot network's inputs (the data): same error.
    first = next(iter(report.values()))
    assert first["masked"] == pytest.approx(first["before"], rel=1e-10)


def test_other_variables_are_kept_and_apply_assigns():
    model = keras.Sequential([keras.Input((6,), dtype="float64"),
                              keras.layers.Dense(5, activation="relu", dtype="float64",
                                                 name="hidden"),
                              keras.layers.BatchNormalization(dtype="float64"),
                              keras.layers.Dense(3, dtype="float64", name="out")])
    _set_random(model, 9)
    start = weights_lib.get_trainable(model)
    x = np.random.default_rng(10).standard_normal((25, 6))
    masks = _masks(model, 11)
    new, report = layerwise.reconstruct(model, masks, x, apply=True)
    assert np.array_equal(new[2], start[2]) and np.array_equal(new[3], start[3])  # BN
    assert not np.allclose(new[4], start[4] * masks[4])  # the last layer was refit
    for name in ("hidden", "out"):
        assert report[name]["after"] <= report[name]["masked"]
    for a, n in zip(weights_lib.get_trainable(model), new):
        assert np.array_equal(a, n)


def test_bad_masks_and_inputs_are_refused():
    model = ref.small_mlp("float64")
    x = np.random.default_rng(0).standard_normal((4, 6))
    ones = [np.ones(v.shape) for v in model.trainable_variables]
    with pytest.raises(ValueError, match="shape"):
        layerwise.reconstruct(model, [np.ones((2, 2))] + ones[1:], x)
    with pytest.raises(ValueError, match="masks for"):
        layerwise.reconstruct(model, ones[:-1], x)
    half = [m * 0.5 for m in ones]
    with pytest.raises(ValueError, match="binary"):
        layerwise.reconstruct(model, half, x)
    with pytest.raises(ValueError, match="empty"):
        layerwise.reconstruct(model, ones, x[:0])


def test_only_layers_called_twice_are_named_shared(tmp_path, caplog):
    # A loaded Sequential model and a layer reused in a second model carry
    # several Keras nodes per layer, yet each layer is called once per pass;
    # only the layer this model calls twice is refit to one of its calls.
    x = np.random.default_rng(0).standard_normal((16, 6)).astype(np.float32)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, name="a"),
                              keras.layers.Dense(3, name="b")])
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    keras.Model(loaded.inputs, loaded.get_layer("a").output)  # "a" gains a node
    assert len(loaded.get_layer("a")._inbound_nodes) > 1  # what misled the node count
    masks = [np.ones(v.shape) for v in loaded.trainable_variables]
    with caplog.at_level("WARNING"):
        layerwise.reconstruct(loaded, masks, x)
    assert "shared" not in caplog.text

    inputs = keras.Input((6,))
    twice = keras.layers.Dense(6, activation="tanh", name="twice")
    shared = keras.Model(inputs, keras.layers.Dense(3, name="b")(twice(twice(inputs))))
    caplog.clear()
    with caplog.at_level("WARNING"):
        layerwise.reconstruct(shared, [np.ones(v.shape) for v in shared.trainable_variables], x)
    assert "shared layer(s) twice " in caplog.text


@pytest.fixture(scope="module")
def digits_mlp():
    keras.utils.set_random_seed(0)
    ds = data.load_digits(seed=0)
    net = mlp_lib.mlp(ds.input_shape, ds.num_classes, hidden=(64, 32))
    net.compile(keras.optimizers.Adam(1e-2),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    net.fit(ds.train.x, ds.train.y, epochs=15, batch_size=64, verbose=0)
    return ds, net, weights_lib.get_trainable(net)


def _accuracy(net, weights, split):
    weights_lib.set_trainable(net, weights)
    return float(np.mean(np.argmax(net.predict(split.x, verbose=0), 1) == split.y))


def test_reconstruction_beats_one_shot_on_digits(digits_mlp):
    ds, net, dense = digits_mlp
    assert _accuracy(net, dense, ds.test) > 0.9
    masks = pruning.magnitude_masks(dense, 0.9)
    weights_lib.set_trainable(net, dense)
    new, report = layerwise.reconstruct(net, masks, ds.train.x, chunk_size=500)
    for m, w in zip(masks, new):
        assert np.all(w[m == 0] == 0)
    assert sum(int((w == 0).sum()) for w in new[::2]) >= round(0.9 * sum(w.size for w in new[::2]))
    for name, errors in report.items():
        assert errors["after"] <= errors["masked"] <= 1.0, (name, errors)
        assert errors["after"] < 0.5 * errors["before"], (name, errors)
    one_shot = _accuracy(net, pruning.apply_masks(dense, masks), ds.test)
    refit = _accuracy(net, new, ds.test)
    # Observed ~0.32 one-shot and ~0.87 refit (dense ~0.96).
    assert refit > one_shot + 0.25, (one_shot, refit)


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
def test_wanda_prunes_exactly_per_unit_and_keeps_biases(sparsity):
    model = ref.small_cnn("float64", pool="avg")  # conv [3, 3, 1, 2], dense [8, 3]
    _set_random(model, 12)
    x = np.random.default_rng(13).standard_normal((7, 6, 6, 1))
    masks = pruning.wanda_masks(model, x, sparsity)
    for m, v in zip(masks, model.trainable_variables):
        if len(v.shape) >= 2:
            cols = m.reshape(-1, v.shape[-1])
            assert np.all((cols == 0).sum(0) == round(sparsity * cols.shape[0]))
        else:
            assert np.all(m == 1)
    with pytest.raises(ValueError, match="kernels"):
        pruning.wanda_masks(model, x, sparsity, which=[True, True, False, False])


def test_wanda_is_magnitude_ranking_when_input_norms_are_equal():
    model = keras.Sequential([keras.Input((8,), dtype="float64"),
                              keras.layers.Dense(4, dtype="float64")])
    _set_random(model, 14)
    kernel = model.trainable_variables[0].numpy()
    x = np.random.default_rng(15).choice([-1.0, 1.0], size=(20, 8))  # every ||X_i|| = sqrt(20)
    masks = pruning.wanda_masks(model, x, 0.5)
    by_magnitude = np.stack([pruning._keep_largest(np.abs(kernel[:, j]), 4)
                             for j in range(4)], axis=1)
    assert np.array_equal(masks[0], by_magnitude.astype(float))
    # A feature with a large norm keeps its (smallest) weights.
    kernel[0] = 1e-3
    model.trainable_variables[0].assign(kernel)
    x[:, 0] *= 1e4
    masks = pruning.wanda_masks(model, x, 0.5)
    assert np.all(masks[0][0] == 1)
    assert np.all(pruning.magnitude_masks([kernel], 0.5, scope="layer")[0][0] == 0)


def _correlated_inputs(n, d, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) @ (np.eye(d) + 0.8 * rng.standard_normal((d, d)))


@pytest.mark.parametrize("sparsity, block_size", [(0.5, 128), (0.75, 5), (0.9, 3), (0.99, 1)])
def test_obs_counts_are_exact_and_biases_untouched(sparsity, block_size):
    model = keras.Sequential([keras.Input((12,), dtype="float64"),
                              keras.layers.Dense(6, dtype="float64")])
    _set_random(model, 16)
    start = weights_lib.get_trainable(model)
    masks, new = pruning.obs_masks(model, _correlated_inputs(50, 12, 17), sparsity,
                                   block_size=block_size)
    assert int((masks[0] == 0).sum()) == round(sparsity * 72)
    assert np.all(new[0][masks[0] == 0] == 0)
    assert np.all(masks[1] == 1) and np.array_equal(new[1], start[1])


@pytest.mark.parametrize("sparsity", [0.5, 0.75, 0.9])
def test_obs_reconstructs_the_layer_better_than_magnitude_pruning(sparsity):
    model = keras.Sequential([keras.Input((12,), dtype="float64"),
                              keras.layers.Dense(6, dtype="float64")])
    _set_random(model, 16)
    start = weights_lib.get_trainable(model)
    x = _correlated_inputs(200, 12, 17)
    _, new = pruning.obs_masks(model, x, sparsity)
    magnitude = pruning.apply_masks(start, pruning.magnitude_masks(start, sparsity,
                                                                   scope="layer"))
    y = x @ start[0]
    obs_error = np.sum((x @ new[0] - y) ** 2)
    magnitude_error = np.sum((x @ magnitude[0] - y) ** 2)
    # Observed ratios 0.68, 0.71, 0.79.
    assert obs_error < 0.9 * magnitude_error, (obs_error, magnitude_error)


def test_obs_update_refits_the_columns_after_the_pruned_one():
    """Pruning one weight w_j: columns < j are fixed, columns > j become the least
    squares fit of X_{>=j} w_{>=j} (the OBS update is exact for one removal)."""
    model = keras.Sequential([keras.Input((8,), dtype="float64"),
                              keras.layers.Dense(1, use_bias=False, dtype="float64")])
    w = np.random.default_rng(18).uniform(1.0, 2.0, size=(8, 1))
    w[3] = 1e-2
    model.trainable_variables[0].assign(w)
    x = _correlated_inputs(100, 8, 19)
    masks, new = pruning.obs_masks(model, x, 1 / 8, damp=1e-12)
    assert np.flatnonzero(masks[0][:, 0] == 0).tolist() == [3]
    later = np.linalg.lstsq(x[:, 4:], x[:, 3:] @ w[3:, 0], rcond=None)[0]
    np.testing.assert_allclose(new[0][:3, 0], w[:3, 0], rtol=1e-12)
    assert new[0][3, 0] == 0
    np.testing.assert_allclose(new[0][4:, 0], later, rtol=1e-6)

"""Weight matching: permutations keep the function, and bring B closer to A."""
import keras
import numpy as np
import pytest

from tfgeo import models
from tfgeo.connect import permutation


def _random_weights(model, seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(scale=0.3, size=w.shape).astype("float32") for w in model.trainable_variables]


def _outputs(model, weights, x):
    for var, w in zip(model.trainable_variables, weights):
        var.assign(w)
    return model(x).numpy()


@pytest.mark.parametrize("name,shape,options", [
    ("mlp", (8, 8, 1), {"hidden": (16, 12)}),
    ("lenet5", (28, 28, 1), {}),
    ("vgg11", (32, 32, 3), {"width": 0.125}),
])
def test_random_permutations_leave_the_function_unchanged(name, shape, options):
    model = models.get(name, shape, 10, **options)
    units = permutation.spec(model)
    weights = _random_weights(model, 0)
    rng = np.random.default_rng(1)
    perms = [rng.permutation(u.width) for u in units[:-1]]
    x = rng.normal(size=(5, *shape)).astype("float32")
    before = _outputs(model, weights, x)
    permuted = permutation.permute(weights, units, perms)
    assert any(not np.array_equal(p, w) for p, w in zip(permuted, weights))
    np.testing.assert_allclose(_outputs(model, permuted, x), before, rtol=1e-4, atol=1e-5)


def _distance(a, b):
    return np.sqrt(sum(np.sum((x - y) ** 2) for x, y in zip(a, b)))


@pytest.mark.parametrize("name,shape,options", [
    ("mlp", (8, 8, 1), {"hidden": (16, 12)}),
    ("lenet5", (28, 28, 1), {}),
])
def test_weight_matching_undoes_a_hidden_permutation(name, shape, options):
    model = models.get(name, shape, 10, **options)
    units = permutation.spec(model)
    a = _random_weights(model, 2)
    rng = np.random.default_rng(3)
    hidden = [rng.permutation(u.width) for u in units[:-1]]
    b = permutation.permute(a, units, hidden)  # B is A with shuffled units
    perms, aligned = permutation.weight_matching(units, a, b)
    for x, y in zip(aligned, a):
        np.testing.assert_allclose(x, y, atol=1e-7)
    assert _distance(aligned, a) < 1e-5 < _distance(b, a)
    x = rng.normal(size=(4, *shape)).astype("float32")
    np.testing.assert_allclose(_outputs(model, aligned, x), _outputs(model, b, x), rtol=1e-4,
                               atol=1e-5)


def test_unsupported_layers_are_named():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                              keras.layers.BatchNormalization(), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="BatchNormalization"):
        permutation.spec(model)

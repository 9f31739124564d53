"""Masked fine-tuning keeps exact zeros; gradual pruning follows its schedule."""
import keras
import numpy as np
import pytest

from tfgeo.models import mlp as mlp_lib
from tfgeo.experiments import data
from tfgeo.sparsify import masked_training
from tfgeo.sparsify import pruning

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def digits():
    return data.load_digits(seed=0)


def _net(ds):
    return mlp_lib.mlp(ds.input_shape, ds.num_classes, hidden=(32,))


@pytest.mark.parametrize("jit", [False, True])
def test_masked_model_keeps_pruned_weights_exactly_zero(digits, jit):
    net = _net(digits)
    start = [w.numpy() for w in net.trainable_variables]
    masks = pruning.magnitude_masks(start, 0.7)
    masked = masked_training.MaskedModel(net, masks)
    masked.compile(keras.optimizers.Adam(1e-2), LOSS, metrics=["accuracy"], jit_compile=jit)
    history = masked.fit(digits.train.x, digits.train.y, epochs=3, batch_size=64, verbose=0)
    end = [w.numpy() for w in net.trainable_variables]
    for w0, w1, m in zip(start, end, masks):
        assert np.all(w1[m == 0] == 0)
        assert np.abs(w1[m == 1] - w0[m == 1]).max() > 1e-3  # the kept weights trained
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["accuracy"][-1] > 0.8


def test_gradual_pruning_reaches_final_sparsity_along_the_schedule(digits):
    net = _net(digits)
    masked = masked_training.MaskedModel(net)
    masked.compile(keras.optimizers.Adam(1e-3), LOSS)
    schedule = masked_training.GradualPruning(0.0, 0.8, begin_step=0, end_step=40, frequency=10)
    ds = data.to_dataset(digits.train, 64, shuffle=True, repeat=True)
    masked.fit(ds, steps_per_epoch=60, epochs=1, verbose=0, callbacks=[schedule])
    steps = [s for s, _ in schedule.sparsities]
    assert steps == [0, 10, 20, 30, 40]
    for step, s in schedule.sparsities:
        assert s == pytest.approx(pruning.polynomial_decay_sparsity(step, 0.0, 0.8, 0, 40))
    weights = [w.numpy() for w in net.trainable_variables]
    n = sum(w.size for w in weights if w.ndim == 2)
    zeros = sum(int((w == 0).sum()) for w in weights if w.ndim == 2)
    assert zeros == round(0.8 * n)


def test_set_masks_checks_shapes(digits):
    masked = masked_training.MaskedModel(_net(digits))
    with pytest.raises(ValueError, match="shape"):
        masked.set_masks([np.ones((2, 2))] * len(masked.masks))

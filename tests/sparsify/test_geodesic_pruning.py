"""Geodesic pruning: exact sparsity, function kept better than the straight line, cost counted."""
import keras
import numpy as np
import pytest

from tfgeo.models import mlp as mlp_lib
from tfgeo.experiments import data
from tfgeo.connect import paths
from tfgeo.sparsify import pruning
from tfgeo.sparsify import geodesic_pruning as sparsification
from tfgeo import weights as weights_lib

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    ds = data.load_digits(seed=0)
    net = mlp_lib.mlp(ds.input_shape, ds.num_classes, hidden=(48,))
    net.compile("adam", LOSS)
    net.fit(ds.train.x, ds.train.y, epochs=40, batch_size=64, verbose=0)
    return ds, net.get_weights()


def _net(ds, weights):
    net = mlp_lib.mlp(ds.input_shape, ds.num_classes, hidden=(48,))
    net.set_weights(weights)
    return net


def _softmax(logits):
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def _kl(p, q):
    return float(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), axis=1)))


class _Snapshot(keras.callbacks.Callback):
    def on_train_end(self, logs=None):
        self.weights = [w.numpy() for w in self.model.model.trainable_variables]


def test_geodesic_walk_keeps_anchor_outputs_closer_than_straight_walk(trained):
    ds, weights = trained
    net = _net(ds, weights)
    start = weights_lib.get_trainable(net)
    masks = pruning.magnitude_masks(start, 0.85)
    pruner = sparsification.GeodesicPruner(net, step_size=0.05, max_steps=60, tolerance=0.0,
                                           log_every=60, verbose=0)
    snapshot = _Snapshot()
    batches = data.to_dataset(ds.train, 256, shuffle=True, drop_remainder=True, repeat=True)
    report = pruner.prune(masks, batches, callbacks=[snapshot])
    assert report["steps"] == 60
    assert report["end_distance"] < 0.8 * report["start_distance"]
    # Anchor: the trained network's predictions on held-out inputs.
    anchor = _softmax(_net(ds, weights).predict(ds.test.x, verbose=0))
    walked = _softmax(_net(ds, snapshot.weights).predict(ds.test.x, verbose=0))
    target = pruning.apply_masks(start, masks)
    straight = paths.straight_point_at_distance(start, target, report["end_distance"],
                                                report["start_distance"])
    line = _softmax(_net(ds, straight).predict(ds.test.x, verbose=0))
    kl_geodesic, kl_straight = _kl(anchor, walked), _kl(anchor, line)
    print(f"KL geodesic {kl_geodesic:.4g} straight {kl_straight:.4g}")
    assert kl_geodesic < 0.3 * kl_straight, (kl_geodesic, kl_straight)


def test_prune_ends_exactly_sparse_and_counts_its_cost(trained):
    ds, weights = trained
    net = _net(ds, weights)
    pruner = sparsification.GeodesicPruner(net, step_size=0.1, cg_max_iterations=4,
                                           max_steps=400, tolerance=0.05, log_every=100,
                                           verbose=0)
    batches = data.to_dataset(ds.train, 256, shuffle=True, drop_remainder=True, repeat=True)
    which = pruning.prunable(weights_lib.get_trainable(net))
    n = sum(np.size(w) for w, p in zip(weights, which) if p)
    for sparsity in (0.5, 0.9):
        current = weights_lib.get_trainable(net)
        masks = pruning.magnitude_masks(current, sparsity)
        report = pruner.prune(masks, batches)
        after = weights_lib.get_trainable(net)
        zeros = sum(int((w == 0).sum()) for w, p in zip(after, which) if p)
        assert zeros == round(sparsity * n)
        for w, m in zip(after, masks):
            assert np.all(w[m == 0] == 0)
        # Stopped by the tolerance, not the step budget.
        assert report["end_distance"] <= 0.05 * report["start_distance"]
        assert report["steps"] < 400
        assert report["quadratic_forms"] == report["steps"]
        # Per step: at most 4 CG products, one for the warm start's initial residual
        # and one for the logged true residual.
        assert report["steps"] <= report["metric_products"] <= (4 + 2) * report["steps"]


def test_masked_finetune_and_gradual_end_exactly_sparse(trained):
    ds, weights = trained
    batches = data.to_dataset(ds.train, 64, shuffle=True, repeat=True)
    net = _net(ds, weights)
    masks = pruning.magnitude_masks(weights_lib.get_trainable(net), 0.8)
    sparsification.masked_finetune(net, masks, batches, steps=30)
    assert pruning.sparsity_of(weights_lib.get_trainable(net)) == pytest.approx(0.8, abs=1e-3)
    net = _net(ds, weights)
    report = sparsification.gradual_prune(net, batches, 0.0, 0.9, steps=40, frequency=10)
    assert pruning.sparsity_of(weights_lib.get_trainable(net)) == pytest.approx(0.9, abs=1e-3)
    assert report["mask_updates"] >= 3


@pytest.mark.parametrize("schedule,halfway,end", [("constant", 1e-2, 1e-2), ("cosine", 5e-3, 0.0)])
def test_fine_tuning_rate_follows_its_schedule(schedule, halfway, end):
    opt = sparsification.adam(1e-2, 100, schedule)
    opt.build([keras.Variable(np.zeros(3, np.float32))])
    for step, want in ((0, 1e-2), (50, halfway), (100, end)):
        opt.iterations.assign(step)
        assert float(opt.learning_rate) == pytest.approx(want, abs=1e-7)
    with pytest.raises(ValueError, match="lr_schedule"):
        sparsification.adam(1e-2, 100, "linear")

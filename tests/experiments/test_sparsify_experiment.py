"""The sparsification study's projection keeps the function it is asked to keep."""
import keras
import numpy as np
import pytest

from tfgeo.models import mlp as mlp_lib
from tfgeo.experiments import data
from tfgeo.experiments import sparsify_experiment as study
from tfgeo.sparsify import pruning
from tfgeo import weights as weights_lib


@pytest.fixture(scope="module")
def setup():
    keras.utils.set_random_seed(0)
    ds = data.load_digits(seed=0)
    net = mlp_lib.mlp(ds.input_shape, ds.num_classes, hidden=(32,))
    net.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    net.fit(ds.train.x, ds.train.y, epochs=30, batch_size=64, verbose=0)
    dense = weights_lib.get_trainable(net)
    # Another function: the same net trained further on a relabelled task.
    net.fit(ds.train.x, (ds.train.y + 1) % 10, epochs=10, batch_size=64, verbose=0)
    current = weights_lib.get_trainable(net)
    return ds, net, dense, current


def _stage(config, net, dense, ds, sparsity):
    which = pruning.prunable(dense)
    return study._Stage(config, net, dense, ds.train, ds.train.x[:512], which, False, 0,
                        sparsity, 0.0)


@pytest.mark.parametrize("keep", ["dense", "current"])
def test_projection_keeps_the_reference_function(setup, keep):
    ds, net, dense, current = setup
    # The layer-wise start and the Gauss-Newton target both come from the reference.
    config = study.SparsifyConfig(projection_start="layerwise", geodesic_mask="magnitude")
    stage = _stage(config, net, dense, ds, 0.3)
    weights = {"dense": dense, "current": current}
    logits = {}
    for name, w in weights.items():
        weights_lib.set_trainable(net, w)
        logits[name] = net.predict(ds.test.x, verbose=0)
    row = {}
    masks = study.project(stage, current, row, steps=3,
                          reference=None if keep == "dense" else current)
    out = net.predict(ds.test.x, verbose=0)
    other = "current" if keep == "dense" else "dense"
    err = np.mean((out - logits[keep]) ** 2)
    assert err < 0.1 * np.mean((logits[other] - logits[keep]) ** 2)
    assert err < 0.1 * np.mean((out - logits[other]) ** 2)
    # Masks come from the current network in both cases, and are respected.
    assert all(np.array_equal(m, r) for m, r in zip(
        masks, pruning.magnitude_masks(current, 0.3, stage.which)))
    assert pruning.sparsity_of(weights_lib.get_trainable(net), stage.which) == pytest.approx(
        0.3, abs=1e-3)


def test_magnitude_dense_masks_take_their_counts_from_the_dense_start(setup):
    ds, net, dense, current = setup
    grown = [w * (10.0 if i == 0 else 1.0) for i, w in enumerate(current)]
    stage = _stage(study.SparsifyConfig(), net, dense, ds, 0.9)
    masks = stage.masks("magnitude_dense", grown)
    ref = pruning.magnitude_masks(dense, 0.9, stage.which)
    assert [int(m.sum()) for m in masks] == [int(r.sum()) for r in ref]
    # The plain choice ranks the grown first layer's entries above the rest.
    own = stage.masks("magnitude", grown)
    assert own[0].sum() > masks[0].sum()


def test_closer_start_keeps_the_projection_nearer_the_reference_and_pays_for_both(setup):
    ds, net, dense, current = setup
    results = {}
    for start in ("mask", "layerwise", "closer"):
        config = study.SparsifyConfig(projection_start=start, geodesic_mask="magnitude")
        row = {}
        study.project(_stage(config, net, dense, ds, 0.8), dense, row, steps=2)
        results[start] = (row, weights_lib.get_trainable(net))
    (closer, weights), singles = results["closer"], {s: results[s] for s in ("mask", "layerwise")}
    chosen = min(singles, key=lambda s: singles[s][0]["functional_distance"])
    assert closer["projection_start"] == chosen
    assert closer["start_distances"] == pytest.approx(
        {s: singles[s][0]["functional_distance"] for s in singles}, rel=1e-4)
    assert closer["functional_distance"] == pytest.approx(min(closer["start_distances"].values()),
                                                         rel=1e-6)
    for w, ref in zip(weights, singles[chosen][1]):
        np.testing.assert_allclose(w, ref, rtol=1e-4, atol=1e-5)
    assert closer["gradient_equivalents"] == pytest.approx(
        sum(singles[s][0]["gradient_equivalents"] for s in singles))
    # The layer-wise start pays for its reconstruction.
    assert singles["layerwise"][0]["gradient_equivalents"] > 0

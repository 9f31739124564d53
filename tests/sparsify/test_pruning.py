"""Masks are exact, schedules follow their formulas."""
import numpy as np
import pytest

from tfgeo.sparsify import pruning


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(20, 10)), rng.normal(size=10), rng.normal(size=(10, 4)),
            rng.normal(size=4)]


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 0.99])
def test_global_masks_prune_exactly_the_smallest(sparsity):
    w = _weights()
    masks = pruning.magnitude_masks(w, sparsity)
    n = 200 + 40
    assert sum(int((m == 0).sum()) for m in masks) == round(sparsity * n)
    assert np.all(masks[1] == 1) and np.all(masks[3] == 1)  # biases untouched
    kept = np.concatenate([np.abs(x[m == 1]) for x, m in zip(w[::2], masks[::2])])
    dropped = np.concatenate([np.abs(x[m == 0]) for x, m in zip(w[::2], masks[::2])])
    if dropped.size:
        assert dropped.max() <= kept.min()
    projected = pruning.apply_masks(w, masks)
    assert pruning.sparsity_of(projected) == pytest.approx(round(sparsity * n) / n, abs=0)
    for p, x, m in zip(projected, w, masks):  # projection: zeros exact, the rest untouched
        assert np.all(p[m == 0] == 0) and np.array_equal(p[m == 1], x[m == 1])


def test_layer_scope_prunes_each_tensor_to_the_same_sparsity():
    w = _weights()
    masks = pruning.magnitude_masks(w, 0.75, scope="layer")
    assert int((masks[0] == 0).sum()) == 150 and int((masks[2] == 0).sum()) == 30


def test_masks_nest_when_recomputed_from_projected_weights():
    w = _weights()
    m1 = pruning.magnitude_masks(w, 0.5)
    m2 = pruning.magnitude_masks(pruning.apply_masks(w, m1), 0.8)
    for a, b in zip(m1, m2):
        assert np.all(b <= a)  # what was pruned stays pruned


def test_prunable_choices():
    w = _weights()
    assert pruning.prunable(w) == [True, False, True, False]
    assert pruning.prunable(w, biases=True) == [True, True, True, True]
    assert pruning.prunable(w, last_layer=False) == [True, False, False, False]
    assert pruning.prunable(w, biases=True, last_layer=False) == [True, True, False, False]


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_bad_sparsity_is_refused(bad):
    with pytest.raises(ValueError, match="sparsity"):
        pruning.magnitude_masks(_weights(), bad)


def test_stage_sparsities_shrink_density_geometrically():
    s = pruning.stage_sparsities(0.99, 2)
    assert s == pytest.approx([0.9, 0.99])
    s = pruning.stage_sparsities(0.98, 3, initial=0.5)
    density = 1 - np.array(s)
    assert s[0] == pytest.approx(0.5) and s[-1] == 0.98
    assert density[1] / density[0] == pytest.approx(density[2] / density[1])
    with pytest.raises(ValueError):
        pruning.stage_sparsities(0.5, 2, initial=0.8)


def test_polynomial_decay_is_zhu_gupta():
    f = lambda t: pruning.polynomial_decay_sparsity(t, 0.2, 0.9, 100, 300)  # noqa: E731
    assert f(0) == 0.2 and f(100) == 0.2 and f(300) == 0.9 and f(1000) == 0.9
    assert f(200) == pytest.approx(0.9 + (0.2 - 0.9) * 0.5 ** 3)
    values = [f(t) for t in range(100, 301, 10)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    # Cubic: most of the pruning happens early.
    assert f(150) - 0.2 > 0.5 * (0.9 - 0.2)


def test_allocation_fixes_each_tensors_count_and_masks_nest():
    rng = np.random.default_rng(0)
    dense = [rng.normal(size=(40, 30)), rng.normal(size=(30,)), rng.normal(size=(30, 10)) * 3]
    which = [True, False, True]
    # A rescaled network: the first tensor grew 10x, so a global ranking of its
    # own magnitudes would take every pruned entry from the last tensor.
    current = [dense[0] * 10, dense[1], dense[2]]
    previous = None
    for sparsity in (0.5, 0.8, 0.95):
        ref = pruning.magnitude_masks(dense, sparsity, which)
        masks = pruning.magnitude_masks(current, sparsity, which, allocation=dense)
        for m, r in zip(masks, ref):
            assert np.count_nonzero(m) == np.count_nonzero(r)
        # Within a tensor the kept entries are the largest |w| of `current`.
        kept = np.abs(current[2])[masks[2] == 1]
        dropped = np.abs(current[2])[masks[2] == 0]
        assert kept.min() >= dropped.max()
        assert np.all(masks[1] == 1)
        if previous is not None:
            for m, p in zip(masks, previous):
                assert np.all(m <= p)
        previous = masks
        current = pruning.apply_masks(current, masks)
    own = pruning.magnitude_masks([dense[0] * 10, dense[1], dense[2]], 0.5, which)
    assert np.count_nonzero(own[2]) < np.count_nonzero(
        pruning.magnitude_masks(dense, 0.5, which)[2])


def test_allocation_of_other_shapes_is_refused():
    w = [np.ones((3, 2)), np.ones((2,))]
    with pytest.raises(ValueError, match="allocation"):
        pruning.magnitude_masks(w, 0.5, allocation=[np.ones((2, 3)), np.ones((2,))])


def test_biases_are_told_apart_by_name_not_rank():
    # MultiHeadAttention's query/key/value biases are 2-d: [heads, key_dim].
    import keras
    from tfgeo.sparsify import pruning as pruning_lib
    inp = keras.Input((4, 6))
    h = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3)(inp, inp)
    out = keras.layers.Dense(3)(keras.layers.Flatten()(h))
    model = keras.Model(inp, out)
    which = pruning_lib.prunable_variables(model)
    for v, p in zip(model.trainable_variables, which):
        assert p == ("kernel" in v.path), (v.path, v.shape, p)
    assert any(len(v.shape) == 2 and "bias" in v.path for v in model.trainable_variables)
    with_biases = pruning_lib.prunable_variables(model, biases=True)
    assert all(with_biases)
    last = pruning_lib.prunable_variables(model, last_layer=False)
    assert not last[-1] and not last[-2]  # the output Dense's kernel and bias

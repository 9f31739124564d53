"""The fixed memory: row checks, dtypes, distinct draws under XLA, save specs."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfgeo.continual import memory


class _Holder(keras.layers.Layer):
    pass


def test_store_gather_and_round_trip_of_the_spec():
    layer = _Holder()
    inputs = {"x": np.arange(12.0).reshape(6, 2), "task": np.arange(6, dtype=np.int32)}
    targets = np.arange(18.0, dtype=np.float64).reshape(6, 3)
    assert memory.num_rows(inputs, targets) == 6
    stored_inputs, stored_targets = memory.store(layer, inputs, targets, "float32", "t")
    assert stored_inputs["task"].dtype == "int32" and stored_inputs["x"].dtype == "float32"
    assert stored_targets.dtype == "float32" and not stored_targets.trainable
    got_inputs, got_targets = memory.gather(stored_inputs, stored_targets, tf.constant([4, 1]))
    np.testing.assert_array_equal(got_inputs["x"].numpy(), inputs["x"][[4, 1]])
    np.testing.assert_array_equal(got_targets.numpy(), targets[[4, 1]])
    np.testing.assert_array_equal(memory.to_arrays(stored_inputs)["task"], inputs["task"])
    rebuilt = memory.zeros(memory.spec(stored_inputs))
    assert rebuilt["x"].shape == (6, 2) and rebuilt["task"].dtype == np.int32
    assert not rebuilt["x"].any()


@pytest.mark.parametrize("inputs,targets", [(np.zeros((5, 2)), np.zeros(4)),
                                            ({"a": np.zeros((3, 1)), "b": np.zeros((2, 1))},
                                             np.zeros(3)),
                                            (np.zeros((0, 2)), np.zeros(0))])
def test_mismatched_or_empty_rows_are_refused(inputs, targets):
    with pytest.raises(ValueError, match="same number"):
        memory.num_rows(inputs, targets)


def test_draws_are_distinct_and_cover_the_memory_under_xla():
    generator = keras.random.SeedGenerator(0)
    draw = tf.function(lambda: memory.sample_indices(10, 4, generator), jit_compile=True)
    seen = set()
    for _ in range(50):
        rows = draw().numpy()
        assert len(set(rows)) == 4 and rows.min() >= 0 and rows.max() < 10
        seen |= set(rows.tolist())
    assert seen == set(range(10))
    assert sorted(memory.sample_indices(3, 8, generator).numpy()) == [0, 1, 2]

"""Multi-head networks: each example sees its own head, and only moves that head."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfgeo.models import mlp as mlp_lib
from tfgeo.continual import multihead


def test_select_head_picks_each_rows_slice_and_saves(tmp_path):
    body = mlp_lib.mlp((5,), 3 * 4, hidden=(7,))
    net = multihead.multi_head(body, num_tasks=3, classes_per_task=4)
    x = np.random.default_rng(0).normal(size=(6, 5)).astype("float32")
    task = np.array([0, 1, 2, 2, 1, 0], np.int32)
    out = net({"x": x, "task": task}).numpy()
    full = body(x).numpy().reshape(6, 3, 4)
    np.testing.assert_array_equal(out, full[np.arange(6), task])
    path = str(tmp_path / "m.keras")
    net.save(path)
    back = keras.saving.load_model(path)
    np.testing.assert_allclose(back({"x": x, "task": task}).numpy(), out, rtol=1e-6)


def test_loss_on_task_one_leaves_other_heads_untouched():
    body = mlp_lib.mlp((5,), 2 * 3, hidden=(7,))
    net = multihead.multi_head(body, 2, 3)
    x = np.random.default_rng(1).normal(size=(4, 5)).astype("float32")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(net({"x": x, "task": np.ones(4, np.int32)}))
    kernel, bias = tape.gradient(loss, [body.layers[-1].kernel.value, body.layers[-1].bias.value])
    assert np.all(kernel.numpy()[:, :3] == 0) and np.all(bias.numpy()[:3] == 0)
    assert np.any(kernel.numpy()[:, 3:] != 0)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="outputs"):
        multihead.multi_head(mlp_lib.mlp((5,), 5, hidden=(3,)), 2, 3)

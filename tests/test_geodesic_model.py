"""`model.fit` drives a geodesic walk: XLA parity, progress, saving, callbacks."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfgeo.models import mlp as mlp_lib
from tfgeo.experiments import data
from tfgeo import callbacks
from tfgeo import geodesic_model
from tfgeo import objectives
from tfgeo import vectors

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def trained():
    """A small MLP trained on scikit-learn digits, and its 70%-pruned target."""
    keras.utils.set_random_seed(0)
    ds = data.load_digits(seed=0)
    model = mlp_lib.mlp(ds.input_shape, ds.num_classes, hidden=(32,))
    model.compile("adam", LOSS, metrics=["accuracy"])
    model.fit(ds.train.x, ds.train.y, epochs=40, batch_size=64, verbose=0)
    weights = model.get_weights()
    flat = np.concatenate([np.abs(w).ravel() for w in weights])
    threshold = np.quantile(flat, 0.7)
    target = [np.where(np.abs(w) > threshold, w, 0.0) for w in weights]
    return ds, weights, target


def _walker(ds, weights, target, **kwargs):
    net = mlp_lib.mlp(ds.input_shape, ds.num_classes, hidden=(32,))
    net.set_weights(weights)
    walker = geodesic_model.GeodesicModel(net, objectives.TowardTarget(target), **kwargs)
    return walker


def _fit(walker, ds, jit, steps=6, callbacks=(), epochs=1):
    walker.compile(jit_compile=jit, loss=LOSS, metrics=["accuracy"])
    train = data.to_dataset(ds.train, batch_size=128, drop_remainder=True).take(steps)
    return walker.fit(train, epochs=epochs, verbose=0, callbacks=list(callbacks))


def test_fit_with_and_without_xla_gives_same_weights(trained):
    ds, weights, target = trained
    results = []
    for jit in (False, True):
        walker = _walker(ds, weights, target, step_size=0.05, damping=1e-2, cg_max_iterations=8)
        history = _fit(walker, ds, jit)
        results.append([w.numpy() for w in walker.model.trainable_variables])
        assert set(history.history) >= {
            "functional_change", "path_length", "cg_iterations", "cg_residual", "cosine",
            "distance_to_target", "failed_steps",
        }
        assert history.history["failed_steps"][-1] == 0
    # float32 weights after 6 steps; XLA reorders reductions, so not bitwise.
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert max(np.abs(a - w).max() for a, w in zip(results[0], weights)) > 1e-3


def test_walk_toward_target_shrinks_distance_and_keeps_accuracy(trained):
    ds, weights, target = trained
    walker = _walker(ds, weights, target, step_size=0.1, damping=1e-3, cg_max_iterations=20)
    walker.compile(jit_compile=True, loss=LOSS, metrics=["accuracy"])
    start_acc = walker.evaluate(ds.test.x, ds.test.y, verbose=0, return_dict=True)["accuracy"]
    start_distance = float(walker.objective.distance(walker.model))
    history = _fit(walker, ds, jit=True, steps=10, epochs=3)
    end_distance = float(walker.objective.distance(walker.model))
    end_acc = walker.evaluate(ds.test.x, ds.test.y, verbose=0, return_dict=True)["accuracy"]
    # 30 steps of 0.1 with cosine ~0.1-0.5 toward a target ~start_distance away.
    assert end_distance < start_distance - 0.5, (start_distance, end_distance)
    assert end_acc >= start_acc - 0.02, (start_acc, end_acc)
    np.testing.assert_allclose(history.history["distance_to_target"][-1], end_distance, rtol=1e-5)
    # Path length is a running total across epochs, not reset per epoch.
    path = history.history["path_length"]
    assert path[0] > 0 and path[2] > path[1] > path[0]


def test_separate_metric_and_objective_batches(trained):
    ds, weights, _ = trained
    net = mlp_lib.mlp(ds.input_shape, ds.num_classes, hidden=(32,))
    net.set_weights(weights)
    walker = geodesic_model.GeodesicModel(net, objectives.TaskLossDescent(), step_size=0.05)
    # Metric on digits 0-4, objective on digits 5-9.
    low, high = ds.train.y < 5, ds.train.y >= 5
    metric_ds = tf.data.Dataset.from_tensor_slices(ds.train.x[low]).batch(64, drop_remainder=True)
    obj_ds = tf.data.Dataset.from_tensor_slices((ds.train.x[high], ds.train.y[high])).batch(
        64, drop_remainder=True)
    paired = geodesic_model.zip_batches(metric_ds, obj_ds)
    walker.compile(jit_compile=True, loss=LOSS)
    before = LOSS(ds.train.y[high], net(ds.train.x[high]))
    walker.fit(paired, epochs=2, verbose=0)
    after = LOSS(ds.train.y[high], net(ds.train.x[high]))
    assert float(after) < float(before)


def test_save_and_load_keras_file(trained, tmp_path):
    ds, weights, target = trained
    walker = _walker(ds, weights, target, step_size=0.05, output_metric="euclidean")
    _fit(walker, ds, jit=False, steps=2)
    path = os.path.join(tmp_path, "walker.keras")
    walker.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, geodesic_model.GeodesicModel)
    assert loaded.output_metric == "euclidean" and loaded.step_size == 0.05
    for a, b in zip(walker.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(float(loaded.objective.distance(loaded.model)),
                               float(walker.objective.distance(walker.model)), rtol=1e-6)
    np.testing.assert_allclose(loaded.predict(ds.test.x, verbose=0), walker.predict(ds.test.x, verbose=0))


def test_standard_callbacks(trained, tmp_path):
    ds, weights, target = trained
    walker = _walker(ds, weights, target, step_size=0.05)
    ckpt = os.path.join(tmp_path, "ckpt.keras")
    callbacks = [
        keras.callbacks.ModelCheckpoint(ckpt),
        keras.callbacks.BackupAndRestore(os.path.join(tmp_path, "backup")),
        keras.callbacks.EarlyStopping(monitor="distance_to_target", mode="min", patience=1),
        keras.callbacks.TensorBoard(os.path.join(tmp_path, "tb")),
    ]
    history = _fit(walker, ds, jit=True, steps=3, epochs=2, callbacks=callbacks)
    assert len(history.history["path_length"]) == 2
    assert os.path.exists(ckpt)
    assert os.listdir(os.path.join(tmp_path, "tb"))
    restored = keras.saving.load_model(ckpt)
    for a, b in zip(restored.model.get_weights(), walker.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_constructor_validates_arguments(trained):
    ds, weights, target = trained
    net = mlp_lib.mlp(ds.input_shape, ds.num_classes, hidden=(32,))
    obj = objectives.TowardTarget([w for w in weights])
    with pytest.raises(ValueError, match="step_size"):
        geodesic_model.GeodesicModel(net, obj, step_size=0.0)
    with pytest.raises(ValueError, match="damping"):
        geodesic_model.GeodesicModel(net, obj, damping=-1.0)
    with pytest.raises(ValueError, match="output metric"):
        geodesic_model.GeodesicModel(net, obj, output_metric="kl")
    with pytest.raises(TypeError, match="objective"):
        geodesic_model.GeodesicModel(net, "toward")
    with pytest.raises(ValueError, match="cg_max_iterations"):
        geodesic_model.GeodesicModel(net, obj, cg_max_iterations=0)


def test_failed_steps_leave_weights_unchanged(trained):
    ds, weights, target = trained
    walker = _walker(ds, weights, target, step_size=0.05)
    walker.compile(jit_compile=False, loss=LOSS)
    x = ds.train.x[:64].copy()
    x[0, 0] = np.nan  # a NaN input poisons the metric
    walker.fit(x, ds.train.y[:64], batch_size=64, epochs=1, verbose=0)
    for a, b in zip(walker.model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)
    assert np.all(np.isfinite(vectors.flatten(walker.model.trainable_variables).numpy()))


def test_failed_steps_keep_weights_back_off_and_stop(trained):
    """NaN inputs make every solve fail: the weights must stay exactly as they
    were (never NaN), damping backs off, and StopOnFailedSteps ends the walk."""
    ds, weights, target = trained
    walker = _walker(ds, weights, target, step_size=0.05, damping=0.0, cg_max_iterations=5)
    walker.compile(jit_compile=False)
    bad = np.full((64,) + ds.train.x.shape[1:], np.nan, np.float32)
    stop = callbacks.StopOnFailedSteps(patience=3)
    history = walker.fit(tf.data.Dataset.from_tensors((bad, ds.train.y[:64])).repeat(10),
                         epochs=1, verbose=0, callbacks=[stop])
    for w, w0 in zip(walker.model.get_weights(), weights):
        np.testing.assert_array_equal(w, w0)
    assert stop.stopped_at == 2 and history.history["failed_steps"][-1] == 3
    assert float(walker.backoff.extra_damping.numpy()) == pytest.approx(1e-2)  # 1e-4, 1e-3, 1e-2


def test_extra_damping_decays_after_successes(trained):
    ds, weights, target = trained
    walker = _walker(ds, weights, target, step_size=0.05, damping=1e-3, cg_max_iterations=5)
    walker.backoff.extra_damping.assign(1e-3)
    _fit(walker, ds, jit=False, steps=3)
    assert float(walker.backoff.extra_damping.numpy()) == pytest.approx(1e-6)
    assert float(walker.backoff.consecutive_failures.numpy()) == 0


def test_h5_is_refused_and_keras_format_works(trained, tmp_path):
    ds, weights, target = trained
    walker = _walker(ds, weights, target)
    with pytest.raises(ValueError, match=r"\.keras"):
        walker.save(str(tmp_path / "walker.h5"))


def test_zero_direction_and_empty_data_are_reported(trained):
    ds, weights, _ = trained
    net = mlp_lib.mlp(ds.input_shape, ds.num_classes, hidden=(32,))
    net.set_weights(weights)
    # The keep-mask given as the pulled coordinates: the direction is zero.
    keep = [np.ones_like(w) for w in weights]
    walker = geodesic_model.GeodesicModel(net, objectives.TowardTarget(weights, pull=keep))
    walker.compile()
    with pytest.raises(ValueError, match="direction is zero"):
        walker.fit(ds.train.x[:64], epochs=1, verbose=0)
    walker = geodesic_model.GeodesicModel(net, objectives.TaskLossDescent())
    walker.compile()
    empty = tf.data.Dataset.from_tensor_slices((ds.train.x[:0], ds.train.y[:0])).batch(8)
    with pytest.raises(ValueError, match="ran no step"):
        walker.fit(empty, epochs=1, verbose=0)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"step_size": float("inf")}, ValueError, "step_size"),
    ({"metric": "hidden:nope"}, ValueError, "nope"),
    ({"preconditioner": "ilu"}, ValueError, "preconditioner"),
])
def test_bad_walk_settings_are_named(trained, kwargs, error, match):
    ds, weights, target = trained
    with pytest.raises(error, match=match):
        _walker(ds, weights, target, **kwargs)


def test_softmax_outputs_and_weightless_models_are_refused(trained):
    ds, weights, target = trained
    soft = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
    with pytest.raises(ValueError, match="logits"):
        geodesic_model.GeodesicModel(soft, objectives.TaskLossDescent())
    empty = keras.Sequential([keras.Input((4,)), keras.layers.Flatten()])
    with pytest.raises(ValueError, match="no trainable weights"):
        geodesic_model.GeodesicModel(empty, objectives.TaskLossDescent())


@pytest.mark.parametrize("metric,preconditioner", [("hidden", "none"), ("hidden", "kfac"),
                                                   ("logits", "diagonal"), ("kfac", "none")])
def test_walks_with_other_metrics_and_preconditioners_converge_and_move(trained, metric,
                                                                        preconditioner):
    ds, weights, target = trained
    walker = _walker(ds, weights, target, step_size=0.05, metric=metric,
                     preconditioner=preconditioner, cg_max_iterations=100, cg_tolerance=0.1)
    history = _fit(walker, ds, jit=True, steps=6)
    assert history.history["failed_steps"][-1] == 0
    assert history.history["cg_residual"][-1] <= 0.1 + 1e-6  # the true residual
    moved = max(np.abs(a - w).max() for a, w in zip(walker.model.get_weights(), weights))
    assert moved > 1e-3

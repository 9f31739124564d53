"""Hostile input to the core operators (issue: hostile input and a newcomer's first
hour): each is refused with one clear error of the right type, or gives a
failed (ok=False) step instead of a silently non-finite one."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import dense_reference as ref
from tfgeo import geodesic
from tfgeo import geodesic_model
from tfgeo import hidden_metric
from tfgeo import krylov
from tfgeo import metric
from tfgeo import objectives
from tfgeo.sparsify import projection


def _problem():
    model = ref.small_mlp("float64")
    x = tf.constant(np.random.default_rng(11).standard_normal((7, 6)))
    return model, x, metric.MetricOperator(model, x, "fisher"), ref.random_vector(model, seed=12)


def test_a_step_too_long_for_the_dtype_is_a_failed_step_not_an_infinite_one():
    model = ref.small_mlp("float32")
    x = tf.constant(np.random.default_rng(11).standard_normal((7, 6)), tf.float32)
    op = metric.MetricOperator(model, x, "fisher")
    v = [tf.cast(t, tf.float32) for t in ref.random_vector(model, seed=12)]
    result = geodesic.geodesic_step(op, v, 1e30)
    assert not bool(result.ok)
    assert all(np.all(np.isfinite(t.numpy())) for t in result.step)
    assert np.isfinite(float(result.functional_change))


@pytest.mark.parametrize("kwargs, match", [
    ({"tolerance": float("inf")}, "tolerance must be a finite number"),
    ({"tolerance": float("nan")}, "tolerance must be a finite number"),
    ({"damping": float("inf")}, "damping must be a finite number"),
    ({"damping": tf.constant(-1.0, tf.float64)}, "damping must be a finite number"),
    ({"damping": np.float32(-0.5)}, "damping must be a finite number"),
])
def test_conjugate_gradient_refuses_settings_no_solve_can_honour(kwargs, match):
    _, _, op, v = _problem()
    with pytest.raises(ValueError, match=match):
        krylov.conjugate_gradient(op, v, **kwargs)


def _softmax_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="tanh"),
                             keras.layers.Dense(3, activation="softmax")])


def _two_outputs():
    inp = keras.Input((6,))
    h = keras.layers.Dense(5)(inp)
    return keras.Model(inp, [keras.layers.Dense(3)(h), keras.layers.Dense(2)(h)])


@pytest.mark.parametrize("build, match", [(_softmax_model, "softmax"),
                                          (_two_outputs, "2 outputs")])
def test_metrics_and_the_projection_refuse_networks_without_one_logits_output(build, match):
    net = build()
    x = np.random.default_rng(0).standard_normal((8, 6)).astype("float32")
    v = [tf.zeros_like(w) for w in net.trainable_variables]
    with pytest.raises(ValueError, match=match):
        metric.MetricOperator(net, x, "fisher")
    with pytest.raises(ValueError, match=match):
        metric.metric_vector_product(net, x, v, "fisher")
    with pytest.raises(ValueError, match=match):
        hidden_metric.HiddenMetricOperator(net, x, None, "fisher")
    with pytest.raises(ValueError, match=match):
        projection.gauss_newton_projection(net, [np.ones(w.shape) for w in
                                                 net.trainable_variables], x)


def test_a_metric_over_no_inputs_is_refused():
    model, x, _, _ = _problem()
    with pytest.raises(ValueError, match="no examples"):
        metric.MetricOperator(model, x[:0], "fisher")
    with pytest.raises(ValueError, match="no examples"):
        hidden_metric.HiddenMetricOperator(model, x[:0], None, "fisher")


@pytest.mark.parametrize("value", [np.float32(0.05), np.float64(0.05), np.int64(1)])
def test_geodesic_model_accepts_every_real_numpy_scalar(value):
    model = ref.small_mlp("float32")
    walker = geodesic_model.GeodesicModel(model, objectives.TaskLossDescent(), step_size=value,
                                          damping=np.float32(1e-3))
    assert walker.step_size == pytest.approx(float(value))
    with pytest.raises(ValueError, match="step_size"):
        geodesic_model.GeodesicModel(model, objectives.TaskLossDescent(), step_size=True)


def test_a_mask_of_the_wrong_shape_is_refused_naming_it():
    model, x, op, v = _problem()
    masks = [tf.ones_like(w) for w in model.trainable_variables]
    masks[1] = tf.ones([3])
    with pytest.raises(ValueError, match=r"Mask 1 has shape \(3,\)"):
        op.restricted(masks)
    with pytest.raises(ValueError, match="masks for an operator"):
        op.restricted(masks[:1])


@pytest.mark.parametrize("jit_compile", [False, True])
def test_labels_outside_the_logits_classes_are_named(jit_compile):
    model = ref.small_mlp("float32")
    walker = geodesic_model.GeodesicModel(model, objectives.TaskLossDescent())
    walker.compile(jit_compile=jit_compile)
    x = np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32)
    classes = model.output_shape[-1]
    with pytest.raises(ValueError, match=f"a label is {classes + 2}, outside the {classes} classes"):
        walker.fit(x, np.full(8, classes + 2), batch_size=4, verbose=0)
    if not jit_compile:  # a bad label in a later batch: TensorFlow's kernel error, named
        y = np.r_[np.zeros(4), np.full(4, classes)].astype(np.int32)
        batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
        with pytest.raises(ValueError, match=f"a label is {classes}, outside"):
            walker.fit(batches, verbose=0)

import numpy as np
import pytest
import tensorflow as tf

from tests import dense_reference as ref
from tfgeo import objectives
from tfgeo import vectors


def test_toward_target_direction_and_mask():
    model = ref.small_mlp("float64")
    w = [v.numpy() for v in model.trainable_variables]
    rng = np.random.default_rng(0)
    target = [rng.standard_normal(x.shape) for x in w]
    mask = [(rng.random(x.shape) > 0.5).astype(np.float64) for x in w]
    obj = objectives.TowardTarget(target, pull=mask)
    got = obj.direction(model)
    for g, t, x, m in zip(got, target, w, mask):
        np.testing.assert_allclose(g.numpy(), m * (t - x), rtol=1e-14)
    want = np.sqrt(sum(np.sum((m * (t - x)) ** 2) for t, x, m in zip(target, w, mask)))
    np.testing.assert_allclose(float(obj.distance(model)), want, rtol=1e-12)


def test_toward_target_rejects_other_architecture():
    model = ref.small_mlp("float64")
    other = ref.small_mlp("float64", hidden=4)
    obj = objectives.TowardTarget([v.numpy() for v in other.trainable_variables])
    with pytest.raises(ValueError, match="shapes"):
        obj.direction(model)


def test_task_loss_descent_is_minus_gradient():
    model = ref.small_mlp("float64")
    x = tf.constant(np.random.default_rng(1).standard_normal((8, 6)))
    y = tf.constant([0, 1, 2, 0, 1, 2, 0, 1])
    # A float64 loss: Keras losses compute in float32 by default, too coarse
    # for a finite-difference check.
    import keras
    obj = objectives.TaskLossDescent(
        keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64"))
    got = obj.direction(model, x, y)
    # Finite differences of the loss along a random direction u: <grad, u>.
    u = ref.random_vector(model, seed=3)
    w0 = [v.numpy() for v in model.trainable_variables]

    def loss_at(t):
        for var, w, d in zip(model.trainable_variables, w0, u):
            var.assign(w + t * d.numpy())
        return float(obj.loss(y, model(x)))

    h = 1e-5
    fd = (loss_at(h) - loss_at(-h)) / (2 * h)
    loss_at(0.0)
    np.testing.assert_allclose(-float(vectors.dot(got, u)), fd, rtol=1e-6)


def test_task_loss_descent_needs_a_batch():
    with pytest.raises(ValueError, match="needs a batch"):
        objectives.TaskLossDescent().direction(ref.small_mlp())


def test_toward_target_masks_are_named_and_checked():
    model = ref.small_mlp("float64")
    w = [v.numpy() for v in model.trainable_variables]
    ones = [np.ones_like(x) for x in w]
    # `mask=` is ambiguous (pulled or kept?): refused with the two names to use.
    with pytest.raises(TypeError, match="keep="):
        objectives.TowardTarget(w, mask=ones)
    with pytest.raises(ValueError, match="not both"):
        objectives.TowardTarget(w, pull=ones, keep=ones)
    for bad in (0.5, -1.0, np.nan):
        masks = [np.ones_like(x) for x in w]
        masks[1].flat[0] = bad
        with pytest.raises(ValueError, match=r"keep\[1\] must hold only 0 and 1"):
            objectives.TowardTarget(w, keep=masks)
    # keep is the complement of pull: the same direction.
    rng = np.random.default_rng(1)
    target = [rng.standard_normal(x.shape) for x in w]
    keep = [(rng.random(x.shape) > 0.5).astype(np.float64) for x in w]
    a = objectives.TowardTarget(target, keep=keep).direction(model)
    b = objectives.TowardTarget(target, pull=[1 - k for k in keep]).direction(model)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_toward_target_in_another_dtype_is_named():
    model = ref.small_mlp("float32")
    target = [v.numpy().astype(np.float64) for v in model.trainable_variables]
    with pytest.raises(ValueError, match="dtype"):
        objectives.TowardTarget(target).direction(model)

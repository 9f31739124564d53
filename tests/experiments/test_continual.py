"""Continual learning: scores against hand-worked examples, tasks, memory, and
the geodesic method's core property on a small problem."""
import keras
import numpy as np
import pytest

from tfgeo.models import mlp as mlp_lib
from tfgeo import multihead
from tfgeo.experiments import continual
from tfgeo.experiments import data
from tfgeo import geodesic
from tfgeo import metric
from tfgeo import objectives
from tfgeo import vectors


def test_scores_hand_worked():
    R = [[0.9, 0.1, 0.2],
         [0.7, 0.8, 0.3],
         [0.6, 0.5, 0.95]]
    assert continual.average_accuracy(R) == pytest.approx((0.6 + 0.5 + 0.95) / 3)
    # BWT = ((0.6 - 0.9) + (0.5 - 0.8)) / 2 = -0.3
    assert continual.backward_transfer(R) == pytest.approx(-0.3)
    assert continual.backward_transfer([[0.9]]) == 0.0
    assert continual.backward_transfer([[0.5, 0.0], [0.75, 0.9]]) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="square"):
        continual.backward_transfer([[1.0, 2.0]])


@pytest.fixture(scope="module")
def digits():
    return data.load_digits(seed=0, flat=False)


def test_make_tasks(digits):
    seq = continual.make_tasks(digits, "split", "task")
    assert [t.head for t in seq.tasks] == [0, 1] and seq.num_heads == 2
    assert seq.classes_per_head == 5
    assert set(np.unique(seq.tasks[1].train.y)) == set(range(5))  # relabelled within task
    seq = continual.make_tasks(digits, "split5", "class")
    assert len(seq.tasks) == 5 and seq.num_heads == 1 and seq.classes_per_head == 10
    assert set(np.unique(seq.tasks[2].test.y)) == {4, 5}
    seq = continual.make_tasks(digits, "permuted", "domain", num_tasks=3)
    assert len(seq.tasks) == 3 and all(t.head == 0 for t in seq.tasks)
    with pytest.raises(ValueError, match="share"):
        continual.make_tasks(digits, "permuted", "class", num_tasks=3)


def test_memory_is_bounded_balanced_and_label_free(digits):
    seq = continual.make_tasks(digits, "split5", "task")
    mem = continual.memory(seq.tasks[:3], 100, seed=0)
    assert set(mem) == {"x", "task"}  # inputs and heads only, no labels
    assert len(mem["x"]) == 100
    assert np.bincount(mem["task"]).tolist() == [34, 33, 33]


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def test_geodesic_forgets_less_per_unit_of_new_task_progress_than_gradient_descent(digits):
    """Task A (digits 0-4) trained; then equal-length steps down task B's loss
    (5-9): the geodesic step (metric on task-A inputs) changes task-A outputs
    less per unit decrease of task-B loss than a plain gradient step."""
    keras.utils.set_random_seed(0)
    seq = continual.make_tasks(digits, "split", "domain")
    a, b = seq.tasks
    body = mlp_lib.mlp(seq.input_shape, 5, hidden=(32,))
    net = multihead.multi_head(body, 1, 5)
    net.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    net.fit(continual.inputs(a.train.x, 0), a.train.y, epochs=60, batch_size=64, verbose=0)
    start = net.get_weights()
    xa, xb = continual.inputs(a.test.x, 0), continual.inputs(b.train.x, 0)
    anchor = _softmax(net(xa).numpy())
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    loss_b0 = float(loss(b.train.y, net(xb)))
    objective = objectives.TaskLossDescent()
    memory = continual.memory([a], 300, seed=0)

    def walk(kind, steps=15, eps=0.1):
        net.set_weights(start)
        for _ in range(steps):
            v = objective.direction(net, xb, b.train.y)
            if kind == "geodesic":
                op = metric.MetricOperator(net, memory, "fisher")
                theta = geodesic.geodesic_step(op, v, eps, damping=1e-3, max_iterations=20).step
            else:
                theta = vectors.scale(eps / vectors.norm(v), v)
            for var, t in zip(net.trainable_variables, theta):
                var.assign_add(t)
        p = _softmax(net(xa).numpy())
        kl = float(np.mean(np.sum(anchor * (np.log(anchor + 1e-12) - np.log(p + 1e-12)), axis=1)))
        progress = loss_b0 - float(loss(b.train.y, net(xb)))
        return kl, progress

    kl_geo, prog_geo = walk("geodesic")
    kl_gd, prog_gd = walk("gradient")
    assert prog_geo > 0 and prog_gd > 0
    print(f"KL/progress geodesic {kl_geo / prog_geo:.4g} gradient {kl_gd / prog_gd:.4g}")
    assert kl_geo / prog_geo < 0.5 * (kl_gd / prog_gd), (kl_geo, prog_geo, kl_gd, prog_gd)

"""Continual learning: scores against hand-worked examples, tasks, memory, and
the geodesic method's core property on a small problem."""
import keras
import numpy as np
import pytest

from tfgeo.models import mlp as mlp_lib
from tfgeo.continual import multihead
from tfgeo.continual import learner as learner_lib
from tfgeo.experiments import continual_experiment as continual
from tfgeo.experiments import data
from tfgeo import geodesic
from tfgeo import metric
from tfgeo import objectives
from tfgeo import vectors


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
    mem = learner_lib.memory(continual.task_data(seq.tasks[:3]), 100, seed=0)
    assert set(mem) == {"x", "task"}  # inputs and heads only, no labels
    assert len(mem["x"]) == 100
    assert np.bincount(mem["task"]).tolist() == [34, 33, 33]


def test_memory_rows_shrink_by_prefix_and_labels_match(digits):
    seq = continual.make_tasks(digits, "split5", "class")
    tasks = continual.task_data(seq.tasks)
    assert learner_lib.memory_shares(3, 100) == [34, 33, 33]
    # Task 1's rows in a memory of 2 tasks contain its rows in a memory of 5 tasks.
    big = learner_lib.memory_rows(tasks[1], 1, learner_lib.memory_shares(2, 60)[1], seed=3)
    small = learner_lib.memory_rows(tasks[1], 1, learner_lib.memory_shares(5, 60)[1], seed=3)
    np.testing.assert_array_equal(big[:len(small)], small)
    # A task's share is largest when it enters the memory (what store_outputs keeps).
    for size in (7, 60, 101):
        for position in range(5):
            entry = learner_lib.memory_shares(position + 1, size)[position]
            assert all(learner_lib.memory_shares(n, size)[position] <= entry
                       for n in range(position + 1, 12))
    inputs, labels = learner_lib.memory(tasks[:3], 60, seed=3, with_labels=True)
    again = learner_lib.memory(tasks[:3], 60, seed=3)
    np.testing.assert_array_equal(inputs["x"], again["x"])  # one sampling for every method
    rows = learner_lib.memory_rows(tasks[2], 2, 20, seed=3)
    np.testing.assert_array_equal(labels[40:], seq.tasks[2].train.y[rows])
    assert set(labels[:20]) <= {0, 1} and set(labels[40:]) <= {4, 5}  # original labels


def test_stored_outputs_follow_the_memory():
    stored = [np.arange(10)[:, None] * np.ones((1, 2)), 100 + np.arange(6)[:, None] * np.ones(
        (1, 2))]

    def task(n):
        return learner_lib.TaskData(np.zeros((n, 1)), np.zeros(n, np.int32))

    got = learner_lib.memory_outputs(stored, [task(50), task(50)], 9)
    np.testing.assert_array_equal(got[:, 0], [0, 1, 2, 3, 4, 100, 101, 102, 103])
    with pytest.raises(ValueError, match="stored outputs"):
        learner_lib.memory_outputs(stored, [task(50), task(50)], 20)


def _tiny_config(tmp_path, methods, **kwargs):
    from tfgeo.experiments import config as config_lib
    return continual.ContinualConfig(
        run=config_lib.RunConfig(seed=0, output_dir=str(tmp_path), verbose=0),
        network=config_lib.NetworkConfig(hidden=(16,)), methods=tuple(methods), epochs=1,
        batch_size=32, memory_size=60, memory_batch=16, metric_batch=16, **kwargs)


def _build(seq):
    def build():
        body = mlp_lib.mlp(seq.input_shape, seq.num_heads * seq.classes_per_head, hidden=(16,))
        return multihead.multi_head(body, seq.num_heads, seq.classes_per_head)
    return build


def test_der_stores_the_logits_of_its_network_right_after_each_task(digits, tmp_path):
    from tfgeo.experiments import run_state
    from tfgeo.continual import replay
    seq = continual.make_tasks(digits, "split5", "class")
    seq = seq._replace(tasks=seq.tasks[:3])
    config = _tiny_config(tmp_path, ["der"])
    seen = []

    def build():
        net = _build(seq)()
        seen.append(net)
        return net

    state = run_state.RunState(str(tmp_path), {"test": 1})
    snapshots = []
    continual.run_sequence(build, seq, config, state, jit_compile=False,
                           on_task=lambda out: snapshots.append(
                               [w.copy() for w in run_state.unpack_weights("der", state.arrays)]))
    for j in range(3):
        net = _build(seq)()
        net.set_weights(snapshots[j])  # the der network right after task j
        rows = learner_lib.memory_rows(continual.task_data(seq.tasks)[j], j,
                                       learner_lib.memory_shares(j + 1, 60)[j], 0)
        expected = replay.network_logits(net, continual.inputs(seq.tasks[j].train.x[rows],
                                                               seq.tasks[j].head))
        np.testing.assert_allclose(state.arrays[f"stored/der/{j}"], expected, rtol=1e-5,
                                   atol=1e-5)
    assert len(state.arrays["stored/der/1"]) == 30 and len(state.arrays["stored/der/2"]) == 20


def test_resumed_run_equals_an_uninterrupted_one(digits, tmp_path):
    from tfgeo.experiments import run_state
    seq = continual.make_tasks(digits, "split5", "domain")
    seq = seq._replace(tasks=seq.tasks[:3])
    methods = ["der", "geodesic"]
    config = _tiny_config(tmp_path, methods, restoring=1.0)
    keras.utils.set_random_seed(0)  # as `continual.run` does before building the networks
    whole = continual.run_sequence(_build(seq), seq, config,
                                   run_state.RunState(str(tmp_path / "a"), {"t": 1}), False)

    class Stop(Exception):
        pass

    def stop_after_two(out):
        if len(next(iter(out.values()))["R"]) == 2:
            raise Stop

    keras.utils.set_random_seed(0)
    with pytest.raises(Stop):
        continual.run_sequence(_build(seq), seq, config,
                               run_state.RunState(str(tmp_path / "b"), {"t": 1}), False,
                               on_task=stop_after_two)
    resumed = continual.run_sequence(_build(seq), seq, config,
                                     run_state.RunState(str(tmp_path / "b"), {"t": 1}), False)
    for m in methods:
        np.testing.assert_allclose(resumed[m]["R"], whole[m]["R"], atol=1e-6)


def test_zero_length_walk_leaves_the_first_row_unchanged(digits, tmp_path):
    from tfgeo.experiments import run_state
    seq = continual.make_tasks(digits, "split", "domain")
    config = _tiny_config(tmp_path, ["geodesic"], geodesic_learning_rate=0.0, restoring=1.0)
    out = continual.run_sequence(_build(seq), seq, config,
                                 run_state.RunState(str(tmp_path), {"t": 1}), False)
    np.testing.assert_array_equal(out["geodesic"]["R"][1], out["geodesic"]["R"][0])


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
    memory = learner_lib.memory(continual.task_data([a]), 300, seed=0)

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

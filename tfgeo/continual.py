"""Continual learning (application 2): task sequences, methods, and their scores.

Scores follow Lopez-Paz & Ranzato (2017). R[i, j] is the test accuracy on
task j after learning tasks 0..i (T x T). Average accuracy is
mean_j R[T-1, j]; backward transfer is
BWT = (1 / (T-1)) sum_{j < T-1} (R[T-1, j] - R[j, j]) (negative: forgetting).

Every network takes {"x": inputs, "task": task ids} (`tfgeo.multihead`):
task-incremental learning gives each task its own head; domain- and
class-incremental learning use one shared head (task id 0 everywhere).

Methods, each continuing from the same network trained on task 0:
  naive     Adam on the new task only (the lower bound);
  ewc       Adam on the new task plus the EWC penalty (`tfgeo.ewc`);
  joint     Adam on all tasks seen so far (the upper bound);
  geodesic  geodesic steps with v = -grad L_new on new-task batches and the
            metric on a bounded memory of earlier tasks' *inputs* (their
            labels are never used).
"""
from __future__ import annotations

import dataclasses
import time
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from tfgeo import multihead
from tfgeo import data
from tfgeo import ewc
from tfgeo import geodesic_model
from tfgeo import objectives
from tfgeo import paths
from tfgeo import run_state

METHODS = ("naive", "ewc", "joint", "geodesic")
BENCHMARKS = ("split", "split5", "permuted", "split_cifar100")
SCENARIOS = ("task", "domain", "class")


def average_accuracy(R) -> float:
    """mean_j R[T-1, j]: accuracy over all tasks after the last one."""
    R = _check_matrix(R)
    return float(R[-1].mean())


def backward_transfer(R) -> float:
    """(1 / (T-1)) sum_{j < T-1} (R[T-1, j] - R[j, j]); 0 for a single task."""
    R = _check_matrix(R)
    T = R.shape[0]
    if T < 2:
        return 0.0
    return float(np.mean([R[-1, j] - R[j, j] for j in range(T - 1)]))


def _check_matrix(R):
    R = np.asarray(R, dtype=np.float64)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] < 1:
        raise ValueError(f"R must be a square T x T matrix, got shape {R.shape}.")
    return R


class Task(NamedTuple):
    name: str
    train: data.ArraySplit
    test: data.ArraySplit
    head: int  # task id fed to the network (0 for a shared head)


class TaskSequence(NamedTuple):
    tasks: list
    num_heads: int
    classes_per_head: int
    input_shape: tuple


def make_tasks(ds: data.ArrayDataset, benchmark: str, scenario: str, num_tasks: int = 0,
               seed: int = 0) -> TaskSequence:
    """Builds a task sequence from a dataset.

    benchmark: 'split' (two halves of the classes, e.g. MNIST 0-4 / 5-9),
      'split5' (five 2-class tasks), 'permuted' (num_tasks pixel
      permutations, 10-way each) or 'split_cifar100' (num_tasks groups of
      10 classes, at most 10).
    scenario: 'task' (a head per task, labels within the task), 'domain'
      (one head, labels within the task) or 'class' (one head over all
      classes, original labels).
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {BENCHMARKS}, got {benchmark!r}.")
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}.")
    if benchmark == "permuted":
        if num_tasks < 2:
            raise ValueError(f"permuted needs num_tasks >= 2, got {num_tasks}.")
        if scenario == "class":
            raise ValueError("permuted tasks share their labels: use scenario 'task' or 'domain'.")
        parts = data.permuted_tasks(ds, num_tasks, seed=seed)
        per_task = ds.num_classes
    else:
        if benchmark == "split":
            half = ds.num_classes // 2
            groups = [list(range(half)), list(range(half, ds.num_classes))]
        elif benchmark == "split5":
            groups = [[2 * i, 2 * i + 1] for i in range(ds.num_classes // 2)]
        else:
            count = num_tasks or 10
            if not 2 <= count <= ds.num_classes // 10:
                raise ValueError(f"split_cifar100 takes 2..{ds.num_classes // 10} tasks, got {count}.")
            groups = [list(range(10 * i, 10 * i + 10)) for i in range(count)]
        parts = data.class_split_tasks(ds, groups, relabel=scenario != "class")
        per_task = len(groups[0])
    heads = len(parts) if scenario == "task" else 1
    classes = per_task if scenario != "class" else ds.num_classes
    tasks = [Task(p.name, p.train, p.test, i if scenario == "task" else 0)
             for i, p in enumerate(parts)]
    return TaskSequence(tasks, heads, classes, ds.input_shape)


def inputs(split_x, head: int) -> dict:
    return {multihead.INPUTS: split_x,
            multihead.TASK: np.full(len(split_x), head, np.int32)}


def task_dataset(task_list, batch_size: int, seed: int, repeat: bool = True,
                 with_labels: bool = True) -> tf.data.Dataset:
    """Shuffled batches of the union of `task_list`'s training splits, with task ids."""
    x = np.concatenate([t.train.x for t in task_list])
    heads = np.concatenate([np.full(len(t.train.y), t.head, np.int32) for t in task_list])
    y = np.concatenate([t.train.y for t in task_list])
    elements = ({multihead.INPUTS: x, multihead.TASK: heads}, y) if with_labels else (
        {multihead.INPUTS: x, multihead.TASK: heads},)
    ds = tf.data.Dataset.from_tensor_slices(elements).shuffle(len(y), seed=seed)
    if repeat:
        ds = ds.repeat()
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def memory(task_list, size: int, seed: int = 0) -> dict:
    """A bounded memory of earlier tasks' inputs: `size` examples split evenly
    across `task_list`, drawn without replacement; labels are not kept."""
    if size < len(task_list):
        raise ValueError(f"memory size {size} is smaller than the {len(task_list)} tasks it holds.")
    rng = np.random.default_rng(seed)
    xs, heads = [], []
    for i, t in enumerate(task_list):
        share = size // len(task_list) + (1 if i < size % len(task_list) else 0)
        pick = rng.choice(len(t.train.y), size=min(share, len(t.train.y)), replace=False)
        xs.append(t.train.x[np.sort(pick)])
        heads.append(np.full(len(pick), t.head, np.int32))
    return {multihead.INPUTS: np.concatenate(xs), multihead.TASK: np.concatenate(heads)}


def evaluate_row(model, tasks) -> list[float]:
    """Test accuracy on each task (one row of R)."""
    return [paths.evaluate_classifier(model, inputs(t.test.x, t.head), t.test.y)["accuracy"]
            for t in tasks]


@dataclasses.dataclass
class ContinualConfig:
    epochs: int = 2  # per task, for the gradient methods (and task 0)
    batch_size: int = 128
    learning_rate: float = 1e-3
    ewc_strength: float = 1000.0
    fisher_examples: int = 1000
    memory_size: int = 1000
    geodesic_steps: int = 300  # per task after the first
    step_size: float = 0.05
    damping: float = 1e-3
    cg_max_iterations: int = 10
    metric_batch: int = 256
    output_metric: str = "fisher"
    jit_compile: bool = True
    seed: int = 0


def _compile_adam(model, config):
    model.compile(keras.optimizers.Adam(config.learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=config.jit_compile)


def _fit_epochs(model, task_list, config, seed, verbose):
    steps = sum(len(t.train.y) for t in task_list) // config.batch_size
    model.fit(task_dataset(task_list, config.batch_size, seed), steps_per_epoch=steps,
              epochs=config.epochs, verbose=verbose, shuffle=False)


def learn_task(method: str, model: keras.Model, tasks, index: int, config: ContinualConfig,
               state: dict, verbose: int = 2) -> dict:
    """Moves `model` (trained on tasks[:index]) to learn tasks[index] by `method`.

    `state` carries what a method keeps between tasks (EWC's penalty model).
    Returns {"seconds", "steps"}.
    """
    seed = config.seed * 1000 + 10 * index + METHODS.index(method)
    keras.utils.set_random_seed(seed)
    began = time.time()
    task = tasks[index]
    if method == "naive":
        _compile_adam(model, config)
        _fit_epochs(model, [task], config, seed, verbose)
        steps = config.epochs * (len(task.train.y) // config.batch_size)
    elif method == "joint":
        _compile_adam(model, config)
        _fit_epochs(model, tasks[:index + 1], config, seed, verbose)
        steps = config.epochs * (sum(len(t.train.y) for t in tasks[:index + 1]) // config.batch_size)
    elif method == "ewc":
        if "ewc" not in state:
            state["ewc"] = ewc.EWCModel(model, config.ewc_strength)
        penalised = state["ewc"]
        previous = tasks[index - 1]
        n = min(config.fisher_examples, len(previous.train.y))
        pick = np.random.default_rng(seed).choice(len(previous.train.y), n, replace=False)
        penalised.consolidate(ewc.diagonal_fisher(model, inputs(previous.train.x[pick],
                                                                 previous.head)))
        _compile_adam(penalised, config)
        _fit_epochs(penalised, [task], config, seed, verbose)
        steps = config.epochs * (len(task.train.y) // config.batch_size)
    elif method == "geodesic":
        walker = geodesic_model.GeodesicModel(
            model, objectives.TaskLossDescent(), step_size=config.step_size,
            damping=config.damping, output_metric=config.output_metric,
            cg_max_iterations=config.cg_max_iterations)
        walker.compile(jit_compile=config.jit_compile,
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"])
        remembered = memory(tasks[:index], config.memory_size, seed)
        metric_ds = (tf.data.Dataset.from_tensor_slices(remembered)
                     .shuffle(len(remembered[multihead.INPUTS]), seed=seed).repeat()
                     .batch(config.metric_batch, drop_remainder=True))
        objective_ds = task_dataset([task], config.batch_size, seed)
        log_every = max(1, min(100, config.geodesic_steps))
        walker.fit(geodesic_model.zip_batches(metric_ds, objective_ds),
                   steps_per_epoch=log_every, epochs=-(-config.geodesic_steps // log_every),
                   verbose=verbose, shuffle=False,
                   callbacks=[geodesic_model.StopOnFailedSteps(20)])
        steps = log_every * -(-config.geodesic_steps // log_every)
    else:
        raise ValueError(f"Unknown method {method!r}; expected one of {METHODS}.")
    return {"seconds": time.time() - began, "steps": int(steps)}


def run(build_model, sequence: TaskSequence, methods, config: ContinualConfig,
        state: run_state.RunState, verbose: int = 2, on_task=None) -> dict:
    """Learns the sequence with every method; returns {method: {"R", ...}}.

    `build_model()` returns a fresh network; task 0 is learnt once (Adam,
    `config.epochs`) and every method starts from that network. Progress is
    checkpointed in `state` after each task (all methods), so an interrupted
    run resumes at the next task. `on_task(results)` runs after each save.
    """
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"Unknown methods {sorted(unknown)}; expected some of {METHODS}.")
    tasks = sequence.tasks
    T = len(tasks)
    model = build_model()
    out = state.payload.get("results") or {}
    if state.completed == 0:
        keras.utils.set_random_seed(config.seed)
        _compile_adam(model, config)
        began = time.time()
        _fit_epochs(model, tasks[:1], config, config.seed, verbose)
        first_row = evaluate_row(model, tasks)
        out = {m: {"R": [first_row], "seconds": [time.time() - began], "steps": [0]}
               for m in methods}
        weights = {m: model.get_weights() for m in methods}
        state.save(1, {"results": out}, {k: v for m in methods
                                         for k, v in run_state.pack_weights(m, weights[m]).items()})
        if on_task is not None:
            on_task(out)
    weights = {m: run_state.unpack_weights(m, state.arrays) for m in methods}
    ewc_state = run_state.unpack_weights("ewc_state", state.arrays)
    for index in range(state.completed, T):
        for method in methods:
            model = build_model()
            model.set_weights(weights[method])
            method_state = {}
            if method == "ewc":
                # The penalty of the tasks consolidated so far travels with the checkpoint.
                method_state["ewc"] = ewc.EWCModel(model, config.ewc_strength)
                if ewc_state:
                    method_state["ewc"].set_penalty_state(ewc_state)
            report = learn_task(method, model, tasks, index, config, method_state, verbose)
            if method == "ewc":
                ewc_state = method_state["ewc"].get_penalty_state()
            out[method]["R"].append(evaluate_row(model, tasks))
            out[method]["seconds"].append(report["seconds"])
            out[method]["steps"].append(report["steps"])
            weights[method] = model.get_weights()
        arrays = run_state.pack_weights("ewc_state", ewc_state)
        for m in methods:
            arrays.update(run_state.pack_weights(m, weights[m]))
        state.save(index + 1, {"results": out}, arrays)
        if on_task is not None:
            on_task(out)
    for m in methods:
        R = np.array(out[m]["R"])
        out[m]["average_accuracy"] = average_accuracy(R)
        out[m]["backward_transfer"] = backward_transfer(R)
    return out

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
import os
import time
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from absl import logging

from tfgeo import ewc
from tfgeo import geodesic_model
from tfgeo import losses
from tfgeo import multihead
from tfgeo import objectives

from . import config as config_lib
from . import data
from . import evaluation
from . import networks
from . import plotting
from . import results
from . import run_state

METHODS = ("naive", "ewc", "joint", "geodesic")
BENCHMARKS = ("split", "split5", "permuted", "split_cifar100")
SCENARIOS = ("task", "domain", "class")
option = config_lib.option


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
    return [evaluation.evaluate_classifier(model, inputs(t.test.x, t.head), t.test.y)["accuracy"]
            for t in tasks]


@dataclasses.dataclass
class ContinualConfig:
    run: config_lib.RunConfig = config_lib.nested(config_lib.RunConfig,
                                                  output_dir="runs/continual")
    data: config_lib.DataConfig = config_lib.nested(config_lib.DataConfig)
    network: config_lib.NetworkConfig = config_lib.nested(config_lib.NetworkConfig)
    geodesic: config_lib.GeodesicConfig = config_lib.nested(config_lib.GeodesicConfig)
    benchmark: str = option("split", "split: two halves of the classes; split5: five 2-class "
                            "tasks; permuted: --num_tasks pixel permutations; split_cifar100: "
                            "10-class tasks.", choices=BENCHMARKS)
    scenario: str = option("task", "task: a head per task; domain: one shared head, labels "
                           "within the task; class: one head over all classes.",
                           choices=SCENARIOS)
    num_tasks: int = option(3, "Tasks for permuted / split_cifar100.", lower=2, upper=100)
    methods: tuple = option(METHODS, "Methods to run.", element=str, choices=METHODS,
                            unique=True, nonempty=True)
    epochs: int = option(2, "Adam epochs per task (task 0 and the gradient methods).", lower=1,
                         upper=10_000)
    batch_size: int = option(128, "Batch size of new-task batches.", lower=1, upper=1_000_000)
    learning_rate: float = option(1e-3, "Adam learning rate.", lower=0.0, lower_open=True,
                                  upper=10.0)
    ewc_strength: float = option(1000.0, "EWC lambda.", lower=0.0)
    fisher_examples: int = option(1000, "Examples for each task's diagonal Fisher.", lower=1)
    memory_size: int = option(1000, "Earlier-task inputs kept for the geodesic metric (in "
                              "total, split evenly over earlier tasks).", lower=1)
    geodesic_steps: int = option(300, "Geodesic steps per task after the first.", lower=1)
    metric_batch: int = option(256, "Memory inputs per metric batch.", lower=1)


def check(config: ContinualConfig) -> None:
    """Raises InputError naming the flag for settings that cannot run together."""
    config_lib.validate(config)
    if config.benchmark == "split_cifar100" and config.data.dataset != "cifar100":
        raise config_lib.InputError(f"--benchmark=split_cifar100 needs --dataset=cifar100, not "
                                    f"{config.data.dataset}.")
    if config.benchmark == "permuted" and config.scenario == "class":
        raise config_lib.InputError("--scenario=class: permuted tasks share labels; use task or "
                                    "domain.")
    networks.check_fits(config.network, config.data.dataset)


def _compile_adam(model, config, jit):
    model.compile(keras.optimizers.Adam(config.learning_rate), losses.classification_loss(),
                  metrics=["accuracy"], jit_compile=jit)


def _fit_epochs(model, task_list, config, seed, verbose):
    steps = sum(len(t.train.y) for t in task_list) // config.batch_size
    model.fit(task_dataset(task_list, config.batch_size, seed), steps_per_epoch=steps,
              epochs=config.epochs, verbose=verbose, shuffle=False)
    return config.epochs * steps


def _naive(model, tasks, index, config, state, seed, jit):
    _compile_adam(model, config, jit)
    return _fit_epochs(model, [tasks[index]], config, seed, config.run.verbose)


def _joint(model, tasks, index, config, state, seed, jit):
    _compile_adam(model, config, jit)
    return _fit_epochs(model, tasks[:index + 1], config, seed, config.run.verbose)


def _ewc(model, tasks, index, config, state, seed, jit):
    if "ewc" not in state:
        state["ewc"] = ewc.EWCModel(model, config.ewc_strength)
    penalised = state["ewc"]
    previous = tasks[index - 1]
    n = min(config.fisher_examples, len(previous.train.y))
    pick = np.random.default_rng(seed).choice(len(previous.train.y), n, replace=False)
    penalised.consolidate(ewc.diagonal_fisher(model, inputs(previous.train.x[pick],
                                                             previous.head)))
    _compile_adam(penalised, config, jit)
    return _fit_epochs(penalised, [tasks[index]], config, seed, config.run.verbose)


def _geodesic(model, tasks, index, config, state, seed, jit):
    g = config.geodesic
    walker = geodesic_model.GeodesicModel(
        model, objectives.TaskLossDescent(), step_size=g.step_size, damping=g.damping,
        output_metric=g.output_metric, cg_max_iterations=g.cg_iterations,
        cg_tolerance=g.cg_tolerance)
    walker.compile(jit_compile=jit, loss=losses.classification_loss(), metrics=["accuracy"])
    remembered = memory(tasks[:index], config.memory_size, seed)
    metric_ds = (tf.data.Dataset.from_tensor_slices(remembered)
                 .shuffle(len(remembered[multihead.INPUTS]), seed=seed).repeat()
                 .batch(config.metric_batch, drop_remainder=True))
    objective_ds = task_dataset([tasks[index]], config.batch_size, seed)
    report = geodesic_model.walk(walker, geodesic_model.zip_batches(metric_ds, objective_ds),
                                 config.geodesic_steps, log_every=100,
                                 verbose=config.run.verbose)
    return report.steps


LEARNERS = {"naive": _naive, "ewc": _ewc, "joint": _joint, "geodesic": _geodesic}


def learn_task(method: str, model: keras.Model, tasks, index: int, config: ContinualConfig,
               state: dict, jit_compile: bool = True) -> dict:
    """Moves `model` (trained on tasks[:index]) to learn tasks[index] by `method`.

    `state` carries what a method keeps between tasks (EWC's penalty model).
    Returns {"seconds", "steps"}.
    """
    if method not in LEARNERS:
        raise ValueError(f"Unknown method {method!r}; expected one of {METHODS}.")
    seed = config.run.seed * 1000 + 10 * index + METHODS.index(method)
    keras.utils.set_random_seed(seed)
    began = time.time()
    steps = LEARNERS[method](model, tasks, index, config, state, seed, jit_compile)
    return {"seconds": time.time() - began, "steps": int(steps)}


def run_sequence(build_model, sequence: TaskSequence, config: ContinualConfig,
                 state: run_state.RunState, jit_compile: bool = True, on_task=None) -> dict:
    """Learns the sequence with every method; returns {method: {"R", ...}}.

    `build_model()` returns a fresh network; task 0 is learnt once (Adam,
    `config.epochs`) and every method starts from that network. Progress is
    checkpointed in `state` after each task (all methods), so an interrupted
    run resumes at the next task. `on_task(results)` runs after each save.
    """
    methods = list(config.methods)
    tasks = sequence.tasks
    model = build_model()
    out = state.payload.get("results") or {}
    if state.completed == 0:
        keras.utils.set_random_seed(config.run.seed)
        _compile_adam(model, config, jit_compile)
        began = time.time()
        _fit_epochs(model, tasks[:1], config, config.run.seed, config.run.verbose)
        first_row = evaluate_row(model, tasks)
        out = {m: {"R": [first_row], "seconds": [time.time() - began], "steps": [0]}
               for m in methods}
        state.save(1, {"results": out}, {k: v for m in methods
                                         for k, v in run_state.pack_weights(
                                             m, model.get_weights()).items()})
        if on_task is not None:
            on_task(out)
    weights = {m: run_state.unpack_weights(m, state.arrays) for m in methods}
    ewc_state = run_state.unpack_weights("ewc_state", state.arrays)
    for index in range(state.completed, len(tasks)):
        for method in methods:
            model = build_model()
            model.set_weights(weights[method])
            method_state = {}
            if method == "ewc":
                # The penalty of the tasks consolidated so far travels with the checkpoint.
                method_state["ewc"] = ewc.EWCModel(model, config.ewc_strength)
                if ewc_state:
                    method_state["ewc"].set_penalty_state(ewc_state)
            report = learn_task(method, model, tasks, index, config, method_state, jit_compile)
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


def _check_memory(ds, config):
    """Refuses task sequences that cannot fit in this machine's memory."""
    if config.benchmark != "permuted":
        return
    per_task = ds.train.x.nbytes + ds.test.x.nbytes
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if config.num_tasks * per_task > available // 2:
        raise config_lib.InputError(
            f"--num_tasks={config.num_tasks}: {config.num_tasks} permuted copies of "
            f"{ds.name} need {config.num_tasks * per_task / 2**30:.1f} GiB; this machine has "
            f"{available / 2**30:.1f} GiB (at most half is used for tasks).")


def report(out, names, title: str, evaluated: str) -> results.Report:
    # While the sequence runs, scores cover the tasks seen so far.
    seen = {m: np.asarray(res["R"])[:, :len(res["R"])] for m, res in out.items()}
    rows = [{"method": m, "average_accuracy": average_accuracy(seen[m]),
             "BWT": backward_transfer(seen[m]),
             "final_row": " ".join(f"{a:.3f}" for a in res["R"][-1]),
             "seconds": round(sum(res["seconds"][1:]), 1)} for m, res in out.items()]
    return results.Report(
        title, {"tasks": names, "evaluated_on": evaluated, "methods": out}, rows,
        list(rows[0]) if rows else [],
        f"{evaluated} accuracy; BWT = mean_j<T (R[T,j] - R[j,j])",
        plots={"accuracy.png": lambda path: plotting.matrix_plot(
            path, {m: np.array(res["R"]) for m, res in out.items()},
            xlabel="evaluated on task j", ylabel="after learning task i",
            title=f"{title}: R[i, j] ({evaluated} accuracy)")})


def run(config: ContinualConfig) -> results.Report:
    """Runs (or resumes) a continual-learning study; see the module docstring."""
    check(config)
    state = run_state.open_run(config)
    ds, train, validation = data.load_run_splits(config.data, config.run.seed)
    # Tuning mode: with a validation split, R is measured on it, never on the test split.
    evaluated = "validation" if validation is not None else "test"
    ds = ds._replace(train=train, test=validation if validation is not None else ds.test)
    _check_memory(ds, config)
    try:
        sequence = make_tasks(ds, config.benchmark, config.scenario, config.num_tasks,
                              config.run.seed)
    except ValueError as e:
        raise config_lib.InputError(f"--benchmark={config.benchmark}: {e}") from None
    logging.info("%d tasks (%s, %s-incremental): %s", len(sequence.tasks), config.benchmark,
                 config.scenario, ", ".join(f"{t.name} ({len(t.train.y)} train)"
                                            for t in sequence.tasks))

    def build():
        body = networks.build(config.network, sequence.input_shape,
                              sequence.num_heads * sequence.classes_per_head)
        return multihead.multi_head(body, sequence.num_heads, sequence.classes_per_head)

    keras.utils.set_random_seed(config.run.seed)
    jit = config_lib.jit_compile(config.run.compile, build())
    names = [t.name for t in sequence.tasks]
    title = f"{config.benchmark} {ds.name}, {config.scenario}-incremental, {len(names)} tasks"

    def progress(out):
        results.write_report(config.run.output_dir, report(out, names, title, evaluated),
                             config_lib.identity(config), echo=False)
        for method, res in out.items():
            logging.info("%s after task %d: %s", method, len(res["R"]) - 1,
                         " ".join(f"{a:.4f}" for a in res["R"][-1]))

    out = run_sequence(build, sequence, config, state, jit, on_task=progress)
    return report(out, names, title, evaluated)

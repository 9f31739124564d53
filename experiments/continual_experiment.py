"""Continual learning (application 2): task sequences, methods, and their scores.

Scores follow Lopez-Paz & Ranzato (2017). R[i, j] is the test accuracy on
task j after learning tasks 0..i (T x T). Average accuracy is
mean_j R[T-1, j]; backward transfer is
BWT = (1 / (T-1)) sum_{j < T-1} (R[T-1, j] - R[j, j]) (negative: forgetting).

Every network takes {"x": inputs, "task": task ids} (`tfgeo.continual.multihead`):
task-incremental learning gives each task its own head; domain- and
class-incremental learning use one shared head (task id 0 everywhere).

Methods, each continuing from the same network trained on task 0; every
memory-based method keeps the same `memory_size` rows of earlier tasks
(`memory`, one sampling for all):
  naive     Adam on the new task only (the lower bound);
  ewc       Adam on the new task plus the EWC penalty (`tfgeo.continual.ewc`);
  joint     Adam on all tasks seen so far (the upper bound);
  replay    Adam on the new task plus the memory's cross-entropy (labels);
  der       Adam on the new task plus alpha times the squared error to the
            logits stored for the memory (Buzzega et al. 2020; no labels);
  fip       the seed authors' first-order practice: SGD with momentum on the
            new task plus the Bhattacharyya output distance on the memory;
  geodesic  the adaptive geodesic rule (`tfgeo.continual.adaptive_geodesic`): steps
            lr (rho g + D)^{-1} m with g the metric on memory inputs and D
            Adam's diagonal, driven by the new task's loss plus the restoring
            term toward the memory's stored logits (`tfgeo.continual.restoring`);
  geodesic_euclidean
            version 0.1's walk: fixed Euclidean steps down the new task's
            loss under the logit metric on memory inputs.
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

from tfgeo import classification
from tfgeo.continual import ewc
from tfgeo.continual import learner as learner_lib
from tfgeo.continual import multihead
from tfgeo.continual import scores

from . import config as config_lib
from . import data
from . import networks
from . import plotting
from . import results
from . import run_state
from . import tensorboard

# Appended in this order so earlier methods keep their seeds (`learn_task`).
METHODS = learner_lib.METHODS
DEFAULT_METHODS = METHODS
STORES_OUTPUTS = learner_lib.STORES_OUTPUTS
GEODESIC_RULES = ("adaptive", "euclidean")
BENCHMARKS = ("split", "split5", "permuted", "split_cifar100")
SCENARIOS = ("task", "domain", "class")
option = config_lib.option


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


def task_data(tasks) -> list:
    """The library's view of the tasks (`tfgeo.continual.learner.TaskData`): training
    inputs with their task ids, and labels."""
    return [learner_lib.TaskData(inputs(t.train.x, t.head), t.train.y) for t in tasks]


def evaluate_row(model, tasks) -> list[float]:
    """Test accuracy on each task (one row of R)."""
    return [classification.evaluate_classifier(model, inputs(t.test.x, t.head),
                                               t.test.y)["accuracy"]
            for t in tasks]


@dataclasses.dataclass
class ContinualConfig:
    run: config_lib.RunConfig = config_lib.nested(config_lib.RunConfig,
                                                  output_dir="runs/continual")
    data: config_lib.DataConfig = config_lib.nested(config_lib.DataConfig)
    network: config_lib.NetworkConfig = config_lib.nested(config_lib.NetworkConfig)
    geodesic: config_lib.GeodesicConfig = config_lib.nested(config_lib.GeodesicConfig)
    start_model: str | None = option(None, "A .keras network to start from instead of "
                                     "--model (inputs the data's; outputs the heads' logits, "
                                     "heads x classes per head); task 0 is learnt from it.",
                                     path="file")
    benchmark: str = option("split", "split: two halves of the classes; split5: five 2-class "
                            "tasks; permuted: --num_tasks pixel permutations; split_cifar100: "
                            "10-class tasks.", choices=BENCHMARKS)
    scenario: str = option("task", "task: a head per task; domain: one shared head, labels "
                           "within the task; class: one head over all classes.",
                           choices=SCENARIOS)
    num_tasks: int = option(3, "Tasks for permuted / split_cifar100.", lower=2, upper=100)
    methods: tuple = option(DEFAULT_METHODS, "Methods to run.", element=str, choices=METHODS,
                            unique=True, nonempty=True)
    epochs: int = option(2, "Adam epochs per task (task 0, the gradient methods and the "
                         "adaptive geodesic walk).", lower=1, upper=10_000)
    batch_size: int = option(128, "Batch size of new-task batches.", lower=1, upper=1_000_000)
    learning_rate: float = option(1e-3, "Adam learning rate.", lower=0.0, lower_open=True,
                                  upper=10.0)
    ewc_strength: float = option(1000.0, "EWC lambda.", lower=0.0)
    fisher_examples: int = option(1000, "Examples for each task's diagonal Fisher.", lower=1)
    memory_size: int = option(1000, "Earlier-task examples kept in memory (in total, split "
                              "evenly over earlier tasks; the same rows for every "
                              "memory-based method).", lower=1)
    memory_batch: int = option(128, "Memory examples per step for replay, der, fip and the "
                               "geodesic's restoring term.", lower=1)
    replay_alpha: float = option(2.0, "Weight of the replayed memory's cross-entropy (replay).",
                                 lower=0.0)
    der_alpha: float = option(1.0, "Weight of DER's squared error to the stored logits.",
                              lower=0.0)
    fip_alpha: float = option(10.0, "Weight of FIP's Bhattacharyya distance on the memory.",
                              lower=0.0)
    fip_learning_rate: float = option(0.01, "FIP's SGD learning rate (momentum 0.9, the "
                                      "authors' optimizer).", lower=0.0, lower_open=True,
                                      upper=10.0)
    geodesic_rule: str = option("adaptive", "Step rule of the geodesic method: adaptive "
                                "(theta = lr (rho g + D)^{-1} m, D Adam's diagonal, "
                                "`tfgeo.continual.adaptive_geodesic`; --epochs of steps) or euclidean "
                                "(--geodesic_steps steps of length --step_size).",
                                choices=GEODESIC_RULES)
    geodesic_metric: str = option("logits", "Metric on the memory: logits (output metric) or "
                                  "hidden (pre-activations of every layer).",
                                  choices=("logits", "hidden"))
    geodesic_learning_rate: float = option(3e-3, "lr of the adaptive geodesic rule.", lower=0.0,
                                           upper=10.0)
    metric_weight: float = option(1.0, "rho: weight of the memory metric against Adam's "
                                  "diagonal (adaptive rule; 0 is Adam).", lower=0.0)
    restoring: float = option(100.0, "Weight of the restoring term: divergence (of "
                              "--output_metric) of the memory's outputs from those stored "
                              "after each task, added to the new task's loss (0: none).",
                              lower=0.0)
    adaptive_cg_iterations: int = option(2, "CG iterations per step of the adaptive rule "
                                         "(preconditioned by Adam's diagonal).", lower=1,
                                         upper=1000)
    geodesic_steps: int = option(300, "Steps per task of the euclidean rule.", lower=1)
    metric_batch: int = option(256, "Memory inputs per metric batch of the euclidean rule (the "
                               "adaptive rule takes --memory_batch).", lower=1)


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


def settings(config: ContinualConfig) -> learner_lib.Settings:
    """The library's settings (`tfgeo.continual.learner.Settings`) from the flags."""
    g = config.geodesic
    return learner_lib.Settings(
        epochs=config.epochs, batch_size=config.batch_size, learning_rate=config.learning_rate,
        memory_size=config.memory_size, memory_batch=config.memory_batch,
        ewc_strength=config.ewc_strength, fisher_examples=config.fisher_examples,
        replay_alpha=config.replay_alpha, der_alpha=config.der_alpha, fip_alpha=config.fip_alpha,
        fip_learning_rate=config.fip_learning_rate, geodesic_rule=config.geodesic_rule,
        geodesic_metric=config.geodesic_metric,
        geodesic_learning_rate=config.geodesic_learning_rate,
        metric_weight=config.metric_weight, restoring=config.restoring,
        adaptive_cg_iterations=config.adaptive_cg_iterations, output_metric=g.output_metric,
        cg_tolerance=g.cg_tolerance, geodesic_steps=config.geodesic_steps,
        metric_batch=config.metric_batch, step_size=g.step_size, damping=g.damping,
        cg_iterations=g.cg_iterations)


def learn_task(method: str, model: keras.Model, tasks, index: int, config: ContinualConfig,
               state: dict, jit_compile: bool = True) -> dict:
    """Moves `model` (trained on tasks[:index]) to learn tasks[index] by `method`,
    through the library (`tfgeo.continual.learner.learn_task`); the memory's rows
    depend on the run's seed only, so every method keeps the same ones."""
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; expected one of {METHODS}.")
    seed = config.run.seed * 1000 + 10 * index + METHODS.index(method)
    return learner_lib.learn_task(method, model, task_data(tasks), index, settings(config),
                                  state, seed, config.run.seed, jit_compile,
                                  config.run.verbose)


def _stored_key(method, task):
    return f"stored/{method}/{task}"


def run_sequence(build_model, sequence: TaskSequence, config: ContinualConfig,
                 state: run_state.RunState, jit_compile: bool = True, on_task=None) -> dict:
    """Learns the sequence with every method; returns {method: {"R", ...}}.

    `build_model()` returns a fresh network; task 0 is learnt once (Adam,
    `config.epochs`) and every method starts from that network. Progress is
    checkpointed in `state` after each task (all methods), so an interrupted
    run resumes at the next task. Methods in `STORES_OUTPUTS` keep the
    logits their own network has on each task's memory rows right after
    learning it (`store_outputs`), in the checkpoint too, so a resumed run
    equals an uninterrupted one. `on_task(results)` runs after each save.
    """
    methods = list(config.methods)
    tasks = sequence.tasks
    model = build_model()
    out = state.payload.get("results") or {}
    mseed = config.run.seed  # one memory for every method
    data_ = task_data(tasks)
    if state.completed == 0:
        began = time.time()
        logging.info("Task 0 (%s), one network shared by every method:", tasks[0].name)
        learner_lib.learn_first(model, data_[0], settings(config), config.run.seed, jit_compile,
                                config.run.verbose)
        first_row = evaluate_row(model, tasks)
        out = {m: {"R": [first_row], "seconds": [time.time() - began], "steps": [0]}
               for m in methods}
        arrays = {k: v for m in methods
                  for k, v in run_state.pack_weights(m, model.get_weights()).items()}
        if any(m in STORES_OUTPUTS for m in methods):
            first = learner_lib.store_outputs(model, data_, 0, config.memory_size, mseed)
            arrays.update({_stored_key(m, 0): first for m in methods if m in STORES_OUTPUTS})
        state.save(1, {"results": out}, arrays)
        if on_task is not None:
            on_task(out)
    weights = {m: run_state.unpack_weights(m, state.arrays) for m in methods}
    stored = {m: [state.arrays[_stored_key(m, j)] for j in range(state.completed)]
              for m in methods if m in STORES_OUTPUTS}
    ewc_state = run_state.unpack_weights("ewc_state", state.arrays)
    for index in range(state.completed, len(tasks)):
        for method in methods:
            model = build_model()
            model.set_weights(weights[method])
            method_state = {"stored": stored.get(method)}
            # Keras's progress lines that follow belong to this method and task.
            logging.info("Task %d (%s), method %s:", index, tasks[index].name, method)
            if method == "ewc":
                # The penalty of the tasks consolidated so far travels with the checkpoint.
                method_state["ewc"] = ewc.EWCModel(model, config.ewc_strength)
                if ewc_state:
                    method_state["ewc"].set_penalty_state(ewc_state)
            report = learn_task(method, model, tasks, index, config, method_state, jit_compile)
            if method == "ewc":
                ewc_state = method_state["ewc"].get_penalty_state()
            if method in stored:
                stored[method].append(learner_lib.store_outputs(model, data_, index,
                                                                config.memory_size, mseed))
            out[method]["R"].append(evaluate_row(model, tasks))
            out[method]["seconds"].append(report["seconds"])
            out[method]["steps"].append(report["steps"])
            weights[method] = model.get_weights()
        arrays = run_state.pack_weights("ewc_state", ewc_state)
        for m in methods:
            arrays.update(run_state.pack_weights(m, weights[m]))
        for m, outputs in stored.items():
            arrays.update({_stored_key(m, j): o for j, o in enumerate(outputs)})
        state.save(index + 1, {"results": out}, arrays)
        if on_task is not None:
            on_task(out)
    for m in methods:
        R = np.array(out[m]["R"])
        out[m]["average_accuracy"] = scores.average_accuracy(R)
        out[m]["backward_transfer"] = scores.backward_transfer(R)
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
    rows = [{"method": m, "average_accuracy": scores.average_accuracy(seen[m]),
             "BWT": scores.backward_transfer(seen[m]),
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


def distribution_obstacle(config: ContinualConfig) -> str | None:
    """Why this study cannot run over several replicas (None: it can); the
    runner refuses the run before any training (`runners.common.strategy`),
    where the library would raise only when it reaches the method."""
    if "geodesic" in config.methods and config.geodesic_rule == "adaptive":
        return ("--methods=geodesic with --geodesic_rule=adaptive is not distributed (each "
                "replica would solve on its own metric); leave it out of --methods")
    return None


def run(config: ContinualConfig) -> results.Report:
    """Runs (or resumes) a continual-learning study; see the module docstring."""
    check(config)
    tensorboard.configure(config.run)
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

    outputs = sequence.num_heads * sequence.classes_per_head

    def build():
        if config.start_model:  # a fresh copy for each method: loaded again
            body = networks.load(config.start_model, sequence.input_shape, outputs)
        else:
            body = networks.build(config.network, sequence.input_shape, outputs)
        return multihead.multi_head(body, sequence.num_heads, sequence.classes_per_head,
                                    input_shape=sequence.input_shape)

    keras.utils.set_random_seed(config.run.seed)
    jit = config_lib.jit_compile(config.run.compile, build())
    names = [t.name for t in sequence.tasks]
    start = f" from {os.path.basename(config.start_model)}" if config.start_model else ""
    title = (f"{config.benchmark} {ds.name}{start}, {config.scenario}-incremental, "
             f"{len(names)} tasks")

    def progress(out):
        results.write_report(config.run.output_dir, report(out, names, title, evaluated),
                             config_lib.identity(config), echo=False)
        for method, res in out.items():
            logging.info("%s after task %d: %s", method, len(res["R"]) - 1,
                         " ".join(f"{a:.4f}" for a in res["R"][-1]))
        # Mean accuracy over the tasks seen so far, one series per method.
        task = len(next(iter(out.values()))["R"]) - 1
        seen = {m: float(np.mean(res["R"][-1][:task + 1])) for m, res in out.items()}
        tensorboard.scalars(f"{evaluated}_average_accuracy", seen, task)

    out = run_sequence(build, sequence, config, state, jit, on_task=progress)
    return report(out, names, title, evaluated)

"""`ContinualLearner`: learn tasks one after another with one method and one bounded memory.

    learner = tfgeo.continual.ContinualLearner(model, method="der", memory_size=1000)
    learner.learn(x_task0, y_task0)      # plain Adam training: nothing to remember yet
    learner.learn(x_task1, y_task1)      # the method keeps task 0 while learning task 1
    learner.evaluate(x_task0, y_task0)   # accuracy

Methods (every memory-based one keeps the same `memory_size` rows of earlier
tasks, split evenly over them, `memory_rows`):
  naive     Adam on the new task only (the lower bound);
  joint     Adam on all tasks seen so far (the upper bound; keeps all data);
  ewc       Adam plus the EWC penalty (`ewc`, exact diagonal Fisher);
  replay    Adam plus the memory's cross-entropy (labels);
  der       Adam plus alpha times the squared error to the logits stored for
            the memory after each task (Buzzega et al. 2020; no labels);
  fip       SGD with momentum plus the Bhattacharyya output distance on the
            memory (the FIP authors' first-order practice);
  geodesic  the adaptive geodesic rule (`adaptive_geodesic`): steps
            lr (rho g + D)^{-1} m, g the metric on memory inputs, D Adam's
            diagonal, down the new task's loss plus the restoring term toward
            the memory's stored logits (`restoring`);
  geodesic_euclidean
            fixed Euclidean geodesic steps down the new task's loss under the
            logit metric on memory inputs (version 0.1's walk).

Inputs may be arrays or dicts of arrays (e.g. `multihead`'s {"x", "task"}).

Inside `strategy.scope()` (MirroredStrategy, MultiWorkerMirroredStrategy)
each batch is split over the replicas and the result is one device's (to
float rounding; tests/test_distribute.py); the adaptive geodesic rule, whose
step is not distributed, is refused there.
"""
from __future__ import annotations

import numbers
import time
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from tfgeo import batching
from tfgeo import distribute
from tfgeo import model_checks
from tfgeo import classification
from tfgeo import geodesic_model
from tfgeo import losses
from tfgeo import objectives
from tfgeo.continual import adaptive_geodesic
from tfgeo.continual import ewc
from tfgeo.continual import output_distance
from tfgeo.continual import replay
from tfgeo.continual import restoring

# Appended in this order so earlier methods keep their seeds (`learn_task`).
METHODS = ("naive", "ewc", "joint", "geodesic", "replay", "der", "fip", "geodesic_euclidean")
#: Methods that keep their network's logits on each task's memory rows after learning it.
STORES_OUTPUTS = ("der", "geodesic")


class Settings(NamedTuple):
    """Every method's settings (defaults: chosen on validation splits, see the docs)."""
    epochs: int = 2  # Adam epochs per task (and the adaptive geodesic rule's)
    batch_size: int = 128  # new-task batch
    learning_rate: float = 1e-3  # Adam
    memory_size: int = 1000  # earlier-task rows kept in all
    memory_batch: int = 128  # memory rows per step (replay, der, fip, restoring)
    ewc_strength: float = 1000.0
    fisher_examples: int = 1000
    replay_alpha: float = 2.0
    der_alpha: float = 1.0
    fip_alpha: float = 10.0
    fip_learning_rate: float = 0.01
    geodesic_rule: str = "adaptive"  # or "euclidean" (version 0.1's steps)
    geodesic_metric: str = "logits"  # or "hidden"
    geodesic_learning_rate: float = 3e-3
    metric_weight: float = 1.0  # rho
    restoring: float = 100.0
    adaptive_cg_iterations: int = 2
    output_metric: str = "fisher"
    cg_tolerance: float = 1e-4
    # The Euclidean walk's.
    geodesic_steps: int = 300
    metric_batch: int = 256
    step_size: float = 0.05
    damping: float = 1e-3
    cg_iterations: int = 10


class TaskData(NamedTuple):
    """One task's training data: inputs (array or dict of arrays) and integer labels."""
    x: object
    y: np.ndarray


# Which rows a bounded memory keeps.

def memory_shares(count: int, size: int) -> list[int]:
    """Rows each of `count` tasks holds in a memory of `size` (even split, the
    first tasks taking the remainder)."""
    return [size // count + (1 if i < size % count else 0) for i in range(count)]


def memory_rows(task: TaskData, position: int, share: int, seed: int = 0) -> np.ndarray:
    """The rows of the task at `position` that a memory holding `share` of them
    keeps: the first `share` of a permutation seeded by (seed, position). A
    smaller share is a prefix of a larger one, so a memory that makes room for
    new tasks drops rows and never draws new ones (stored outputs stay valid).
    A task's share is largest when it enters the memory."""
    order = np.random.default_rng([seed, position]).permutation(len(task.y))
    return order[:min(share, len(order))]


def memory(tasks, size: int, seed: int = 0, with_labels: bool = False):
    """The memory of `tasks` (earlier tasks, in order): `size` rows split evenly
    (`memory_shares`, rows by `memory_rows`). Returns their inputs, or (inputs,
    labels) with `with_labels`."""
    if size < len(tasks):
        raise ValueError(f"memory size {size} is smaller than the {len(tasks)} tasks it holds.")
    xs, ys = [], []
    for i, (t, share) in enumerate(zip(tasks, memory_shares(len(tasks), size))):
        pick = memory_rows(t, i, share, seed)
        xs.append(batching.take_rows(t.x, pick))
        ys.append(np.asarray(t.y)[pick])
    inputs = tf.nest.map_structure(lambda *a: np.concatenate(a), *xs)
    return (inputs, np.concatenate(ys).astype(np.int32)) if with_labels else inputs


def memory_outputs(stored, tasks, size: int) -> np.ndarray:
    """The stored outputs of the rows `memory(tasks, size)` holds: task i's first
    share rows of `stored[i]` (outputs computed on its share when it entered)."""
    parts = []
    for i, share in enumerate(memory_shares(len(tasks), size)):
        rows = min(share, len(tasks[i].y))
        if len(stored[i]) < rows:
            raise ValueError(f"task {i} has {len(stored[i])} stored outputs; the memory needs "
                             f"{rows}.")
        parts.append(np.asarray(stored[i])[:rows])
    return np.concatenate(parts)


def store_outputs(model, tasks, position: int, size: int, seed: int) -> np.ndarray:
    """The network's logits on the rows of tasks[position] that the memory will
    ever hold (its share on entering), computed right after the task is learnt."""
    t = tasks[position]
    rows = memory_rows(t, position, memory_shares(position + 1, size)[position], seed)
    return replay.network_logits(model, batching.take_rows(t.x, rows))


# Learning one task.

def _task_dataset(tasks, batch_size: int, seed: int) -> tf.data.Dataset:
    """Endless shuffled (x, y) batches of the union of `tasks`."""
    x = tf.nest.map_structure(lambda *a: np.concatenate(a), *[t.x for t in tasks])
    y = np.concatenate([np.asarray(t.y) for t in tasks])
    return (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(y), seed=seed).repeat()
            .batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))


def _steps_per_epoch(tasks, s: Settings) -> int:
    return max(1, sum(len(t.y) for t in tasks) // s.batch_size)


def _compile_adam(model, s: Settings, jit):
    model.compile(keras.optimizers.Adam(s.learning_rate), losses.classification_loss(),
                  metrics=["accuracy"], jit_compile=jit)


def _fit_epochs(model, tasks, s: Settings, seed, verbose):
    steps = _steps_per_epoch(tasks, s)
    # Keras's fit, or under several replicas its loop by hand (`distribute.fit`).
    distribute.fit(model, _task_dataset(tasks, s.batch_size, seed), epochs=s.epochs,
                   steps_per_epoch=steps, verbose=verbose)
    return s.epochs * steps


def learn_first(model, task: TaskData, s: Settings, seed: int, jit: bool, verbose: int) -> int:
    """Task 0: Adam for `epochs` (every method starts from this network)."""
    keras.utils.set_random_seed(seed)
    _compile_adam(model, s, jit)
    return _fit_epochs(model, [task], s, seed, verbose)


def _naive(model, tasks, index, s, state, seed, memory_seed, jit, verbose):
    _compile_adam(model, s, jit)
    return _fit_epochs(model, [tasks[index]], s, seed, verbose)


def _joint(model, tasks, index, s, state, seed, memory_seed, jit, verbose):
    _compile_adam(model, s, jit)
    return _fit_epochs(model, tasks[:index + 1], s, seed, verbose)


def _ewc(model, tasks, index, s, state, seed, memory_seed, jit, verbose):
    if state.get("ewc") is None:
        state["ewc"] = ewc.EWCModel(model, s.ewc_strength)
    penalised = state["ewc"]
    previous = tasks[index - 1]
    n = min(s.fisher_examples, len(previous.y))
    pick = np.random.default_rng(seed).choice(len(previous.y), n, replace=False)
    penalised.consolidate(ewc.diagonal_fisher(model, batching.take_rows(previous.x, pick)))
    _compile_adam(penalised, s, jit)
    return _fit_epochs(penalised, [tasks[index]], s, seed, verbose)


def _replay(model, tasks, index, s, state, seed, memory_seed, jit, verbose):
    remembered, labels = memory(tasks[:index], s.memory_size, memory_seed, with_labels=True)
    learner = replay.ReplayModel(model, remembered, labels, mode="replay", alpha=s.replay_alpha,
                                 memory_batch_size=s.memory_batch, seed=seed)
    _compile_adam(learner, s, jit)
    return _fit_epochs(learner, [tasks[index]], s, seed, verbose)


def _der(model, tasks, index, s, state, seed, memory_seed, jit, verbose):
    remembered = memory(tasks[:index], s.memory_size, memory_seed)
    stored = memory_outputs(state["stored"], tasks[:index], s.memory_size)
    learner = replay.ReplayModel(model, remembered, stored, mode="der", alpha=s.der_alpha,
                                 memory_batch_size=s.memory_batch, seed=seed)
    _compile_adam(learner, s, jit)
    return _fit_epochs(learner, [tasks[index]], s, seed, verbose)


def _fip(model, tasks, index, s, state, seed, memory_seed, jit, verbose):
    remembered = memory(tasks[:index], s.memory_size, memory_seed)
    # The network before this task, on the memory (the authors' previous network).
    previous = replay.network_logits(model, remembered)
    learner = output_distance.FIPModel(model, remembered, previous, alpha=s.fip_alpha,
                                       memory_batch_size=s.memory_batch, seed=seed)
    learner.compile(keras.optimizers.SGD(s.fip_learning_rate, momentum=0.9),
                    losses.classification_loss(), metrics=["accuracy"], jit_compile=jit)
    return _fit_epochs(learner, [tasks[index]], s, seed, verbose)


def _metric_dataset(remembered, batch, seed):
    n = len(tf.nest.flatten(remembered)[0])
    return (tf.data.Dataset.from_tensor_slices(remembered).shuffle(n, seed=seed).repeat()
            .batch(min(batch, n), drop_remainder=True))


def _restoring_objective(tasks, index, s, state, seed, remembered):
    if s.restoring == 0:
        return objectives.TaskLossDescent()
    stored = memory_outputs(state["stored"], tasks[:index], s.memory_size)
    return restoring.RestoringDescent(remembered, stored, strength=s.restoring,
                                      output_metric=s.output_metric,
                                      memory_batch_size=s.memory_batch, seed=seed)


def _geodesic(model, tasks, index, s, state, seed, memory_seed, jit, verbose):
    if s.geodesic_rule == "euclidean":
        return _euclidean_walk(model, tasks, index, s, state, seed, memory_seed, jit, verbose,
                               s.geodesic_metric, s.restoring)
    remembered = memory(tasks[:index], s.memory_size, memory_seed)
    walker = adaptive_geodesic.AdaptiveGeodesicModel(
        model, _restoring_objective(tasks, index, s, state, seed, remembered),
        learning_rate=s.geodesic_learning_rate, metric_weight=s.metric_weight,
        output_metric=s.output_metric, metric=s.geodesic_metric,
        cg_max_iterations=s.adaptive_cg_iterations, cg_tolerance=s.cg_tolerance)
    # No compiled loss or metrics: they would cost a forward pass per step.
    walker.compile(jit_compile=jit)
    steps = _steps_per_epoch([tasks[index]], s)
    walker.fit(geodesic_model.zip_batches(_metric_dataset(remembered, s.memory_batch, seed),
                                          _task_dataset([tasks[index]], s.batch_size, seed)),
               steps_per_epoch=steps, epochs=s.epochs, verbose=verbose, shuffle=False)
    return s.epochs * steps


def _euclidean_walk(model, tasks, index, s, state, seed, memory_seed, jit, verbose,
                    metric="logits", restoring_strength=0.0):
    remembered = memory(tasks[:index], s.memory_size, memory_seed)
    objective = (_restoring_objective(tasks, index, s, state, seed, remembered)
                 if restoring_strength > 0 else objectives.TaskLossDescent())
    walker = geodesic_model.GeodesicModel(
        model, objective, step_size=s.step_size, damping=s.damping,
        output_metric=s.output_metric, cg_max_iterations=s.cg_iterations,
        cg_tolerance=s.cg_tolerance, metric=metric)
    walker.compile(jit_compile=jit, loss=losses.classification_loss(), metrics=["accuracy"])
    report = geodesic_model.walk(
        walker, geodesic_model.zip_batches(_metric_dataset(remembered, s.metric_batch, seed),
                                           _task_dataset([tasks[index]], s.batch_size, seed)),
        s.geodesic_steps, log_every=100, verbose=verbose)
    return report.steps


def _geodesic_euclidean(model, tasks, index, s, state, seed, memory_seed, jit, verbose):
    return _euclidean_walk(model, tasks, index, s, state, seed, memory_seed, jit, verbose)


_LEARNERS = {"naive": _naive, "ewc": _ewc, "joint": _joint, "geodesic": _geodesic,
             "replay": _replay, "der": _der, "fip": _fip,
             "geodesic_euclidean": _geodesic_euclidean}


def check_distributed(method: str, settings: Settings) -> None:
    """Raises ValueError if `method` cannot run over the current strategy's
    replicas: the adaptive geodesic rule solves on each replica's own metric
    and assigns in place, so the replicas' weights would silently part."""
    replicas = distribute.num_replicas_in_scope()
    if replicas > 1 and method == "geodesic" and settings.geodesic_rule == "adaptive":
        raise ValueError(f"method='geodesic' (the adaptive rule) does not run over {replicas} "
                         f"replicas; under a strategy use one of "
                         f"{[m for m in METHODS if m != 'geodesic']}.")


def learn_task(method: str, model: keras.Model, tasks, index: int, settings: Settings,
               state: dict, seed: int, memory_seed: int, jit_compile: bool = False,
               verbose: int = 0) -> dict:
    """Moves `model` (trained on tasks[:index]) to learn tasks[index] by `method`.

    tasks: `TaskData` in order. state: what a method keeps between tasks
    ("ewc": its penalty model; "stored": the outputs stored after each earlier
    task). Seeds `keras.utils.set_random_seed(seed)` first; `memory_seed`
    chooses the memory's rows (one for every method). Returns {"seconds", "steps"}.
    """
    if method not in _LEARNERS:
        raise ValueError(f"Unknown method {method!r}; expected one of {METHODS}.")
    check_distributed(method, settings)
    keras.utils.set_random_seed(seed)
    began = time.time()
    steps = _LEARNERS[method](model, tasks, index, settings, state, seed, memory_seed,
                              jit_compile, verbose)
    return {"seconds": time.time() - began, "steps": int(steps)}


class ContinualLearner:
    """Learns tasks one after another with `method` (module docstring).

    Args:
      model: a built Keras classifier with logits outputs; trained in place.
      method: one of `METHODS` (default "der": it wins every MNIST benchmark on
        average accuracy, docs/continual.md).
      seed: seeds each task's training (reproducible under a seed) and the
        memory's rows.
      jit_compile: XLA-compile the training steps (slow for conv nets on CPU).
      verbose: Keras's fit verbosity for each task (0, 1 or 2).
      **settings: any field of `Settings` (memory_size, epochs, batch_size,
        learning_rate, der_alpha, restoring, ...).

    Attributes: tasks (the `TaskData` learnt so far), history (per task:
    {"seconds", "steps"}).
    """

    def __init__(self, model: keras.Model, method: str = "der", *, seed: int = 0,
                 jit_compile: bool = False, verbose: int = 0, **settings):
        if not isinstance(model, keras.Model):
            raise ValueError(f"model must be a keras.Model, got {type(model).__name__}.")
        model_checks.check_network(model)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
        unknown = set(settings) - set(Settings._fields)
        if unknown:
            raise ValueError(f"Unknown settings {sorted(unknown)}; expected some of "
                             f"{Settings._fields}.")
        self.settings = Settings(**settings)
        check_distributed(method, self.settings)
        for name in ("epochs", "batch_size", "memory_size", "memory_batch"):
            value = getattr(self.settings, name)
            if not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}.")
        self.model, self.method, self.seed = model, method, int(seed)
        self.jit_compile, self.verbose = jit_compile, verbose
        self.tasks, self.history = [], []
        self.state = {"stored": [], "ewc": None}

    def learn(self, x, y) -> dict:
        """Learns one more task from inputs `x` [N, ...] (array or dict of arrays)
        and integer labels `y` [N]; returns {"seconds", "steps"}."""
        task = self._check_task(x, y)
        self.tasks.append(task)
        index = len(self.tasks) - 1
        if index == 0:
            began = time.time()
            steps = learn_first(self.model, task, self.settings, self.seed, self.jit_compile,
                                self.verbose)
            report = {"seconds": time.time() - began, "steps": int(steps)}
        else:
            seed = self.seed * 1000 + 10 * index + METHODS.index(self.method)
            report = learn_task(self.method, self.model, self.tasks, index, self.settings,
                                self.state, seed, self.seed, self.jit_compile, self.verbose)
        if self.method in STORES_OUTPUTS:
            self.state["stored"].append(store_outputs(
                self.model, self.tasks, index, self.settings.memory_size, self.seed))
        self.history.append(report)
        return report

    def evaluate(self, x, y, batch_size: int = 1024) -> float:
        """Accuracy of the model on (x, y)."""
        self._check_task(x, y)
        return classification.evaluate_classifier(self.model, x, y, batch_size)["accuracy"]

    def _check_task(self, x, y) -> TaskData:
        y = np.asarray(y)
        leaves = tf.nest.flatten(x)
        if not leaves or any(len(np.asarray(a)) != len(y) for a in leaves) or len(y) < 1:
            raise ValueError(f"x and y must hold the same number (>= 1) of examples, got "
                             f"{[len(np.asarray(a)) for a in leaves]} and {len(y)}.")
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"y must hold integer labels, got dtype {y.dtype}.")
        classes = model_checks.output_classes(self.model, x)
        if y.min() < 0 or y.max() >= classes:
            raise ValueError(f"labels must be in [0, {classes}), got [{y.min()}, {y.max()}].")
        return TaskData(x, y)

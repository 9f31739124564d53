"""Keras integration: `model.fit` drives a geodesic walk, one step per batch.

    walker = GeodesicModel(net, TowardTarget(target), step_size=0.05)
    walker.compile(jit_compile=True, loss=..., metrics=["accuracy"])  # loss/metrics for evaluate()
    walker.fit(dataset, epochs=..., callbacks=[...])

Each dataset element is `(x, y)` (or `x`). The metric is taken on x and the
objective's direction on (x, y). To use different batches for the two, make
x a dict `{"metric": x_metric, "objective": x_objective}`; `zip_batches`
builds such a dataset from two datasets.
"""
from __future__ import annotations

import math
import numbers
import re
from typing import NamedTuple

import keras
import tensorflow as tf

from tfgeo import callbacks as callbacks_lib
from tfgeo import distribute
from tfgeo import geodesic
from tfgeo import hidden_metric
from tfgeo import metric_specs as metrics_lib
from tfgeo import model_wrapper
from tfgeo import objectives as objectives_lib
from tfgeo import output_metrics
from tfgeo import weights as weights_lib

#: TensorFlow's message for an integer label outside [0, classes).
_LABEL_ERROR = re.compile(r"label value of (-?\d+) which is outside the valid range of \[0, (\d+)\)")

METRIC_KEY = "metric"
OBJECTIVE_KEY = "objective"


class LastValue(keras.metrics.Metric):
    """Reports the most recent value it was given (e.g. a running total)."""

    def __init__(self, name="last_value", dtype=None):
        super().__init__(name=name, dtype=dtype)
        # Replicas report the same value; "mean" keeps it under tf.distribute.
        self.value = self.add_variable(shape=(), initializer="zeros", name="value",
                                       aggregation="mean")

    def update_state(self, value):
        self.value.assign(tf.cast(value, self.value.dtype))

    def result(self):
        return tf.convert_to_tensor(self.value)

    def reset_state(self):
        # A last value survives epoch boundaries: resetting would print 0
        # for a running total that is not zero.
        pass


def zip_batches(metric_dataset: tf.data.Dataset, objective_dataset: tf.data.Dataset):
    """Pairs metric inputs with objective batches for `GeodesicModel.fit`.

    `metric_dataset` yields x (or (x, ...), of which x is used);
    `objective_dataset` yields (x, y). The result yields
    ({"metric": x_metric, "objective": x_objective}, y).
    """

    def pair(m, o):
        xm = m[0] if isinstance(m, (tuple, list)) else m
        xo, yo = o
        return {METRIC_KEY: xm, OBJECTIVE_KEY: xo}, yo

    return tf.data.Dataset.zip((metric_dataset, objective_dataset)).map(pair)


def split_inputs(x):
    """(metric inputs, objective inputs) of a batch's x (see `zip_batches`)."""
    if isinstance(x, dict) and METRIC_KEY in x and OBJECTIVE_KEY in x:
        return x[METRIC_KEY], x[OBJECTIVE_KEY]
    return x, x


class DampingBackoff(keras.layers.Layer):
    """Extra damping after failed steps, so a nearly singular or indefinite
    metric gets regularised instead of failing again.

    A failed step (zero step, weights kept) sets the extra damping to
    `START` or multiplies it by `GROWTH`; a successful one divides it by
    `DECAY`, down to 0 once it falls below `FLOOR`. `consecutive_failures`
    counts failures since the last success (see `callbacks.StopOnFailedSteps`).
    """

    START = 1e-4
    GROWTH = 10.0
    DECAY = 10.0
    FLOOR = 1e-10

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Every replica computes the same values: keep the first replica's.
        self.extra_damping = self.add_weight(
            name="extra_damping", shape=(), initializer="zeros", trainable=False,
            dtype="float64", aggregation="only_first_replica")
        self.consecutive_failures = self.add_weight(
            name="consecutive_failures", shape=(), initializer="zeros", trainable=False,
            aggregation="only_first_replica")
        self.built = True

    def update(self, failed) -> None:
        extra = self.extra_damping
        self.extra_damping.assign(tf.where(
            failed, tf.maximum(self.GROWTH * extra, self.START),
            tf.where(extra > self.FLOOR, extra / self.DECAY, tf.zeros_like(extra))))
        self.consecutive_failures.assign(
            tf.where(failed, self.consecutive_failures + 1.0, tf.zeros_like(self.consecutive_failures)))

    def call(self, inputs):  # a layer must be callable; the back-off is not used as one
        return inputs


class WalkModel(model_wrapper.ModelWrapper):
    """The base of models whose `fit` steps walk (`GeodesicModel`,
    `tfgeo.continual.adaptive_geodesic.AdaptiveGeodesicModel`): batches zipped by
    `zip_batches`, the walk's diagnostics logged beside compile's loss and
    metrics, and evaluation on the objective inputs.

    Subclasses define `walk_trackers` (the diagnostics logged) and may list in
    `optional_trackers` the trackers they own but log only in some settings.
    """

    @property
    def walk_trackers(self) -> list:
        raise NotImplementedError

    @property
    def optional_trackers(self) -> list:
        return []

    @property
    def metrics(self):
        # Compile's loss tracker only when a loss was compiled (else it stays
        # empty); optional trackers only when `walk_trackers` lists them.
        own = {id(t) for t in (*self.walk_trackers, *self.optional_trackers)}
        compiled = [m for m in super().metrics if id(m) not in own
                    and not (m.name == "loss" and self.loss is None)]
        return compiled + self.walk_trackers

    def call(self, inputs, training=False):
        # Keras may call the wrapper on a zipped {"metric", "objective"} batch
        # (e.g. to build it under tf.distribute): the objective part is the input.
        _, inputs = split_inputs(inputs)
        return self.model(inputs, training=training)

    def _update_compiled(self, x, y, sample_weight):
        """Compiled loss and metrics on (x, y) at the current weights."""
        y_pred = self(x, training=False)
        if self.loss is not None:
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)
            self.record_loss(loss, tf.shape(y_pred)[0])
        self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        _, x = split_inputs(x)
        self._update_compiled(x, y, sample_weight)
        walk = {id(t) for t in self.walk_trackers}
        return {k: v for m in self.metrics if id(m) not in walk
                for k, v in _results(m).items()}


@keras.saving.register_keras_serializable(package="tfgeo")
class GeodesicModel(WalkModel):
    """Wraps a model so that each `fit` step is a geodesic step.

    Args:
      model: the network being walked (a built Keras model with logits outputs).
      objective: a `tfgeo.objectives.Objective` giving v.
      step_size: eps > 0, Euclidean length of each step.
      damping: lambda >= 0 in (g + lambda I).
      output_metric: a name from `tfgeo.output_metrics.NAMES`.
      cg_max_iterations, cg_tolerance: conjugate-gradient budget per step.
      unroll_cg: straight-line CG (needed under tf.distribute all-reduces).
      clip_to_distance: for objectives with a goal point, shorten the last
        steps to eps_t = min(eps, distance to the goal) so a walk does not
        overshoot and circle its goal.
      metric: which metric g is (`tfgeo.metric_specs.METRICS`: logits, hidden,
        hidden:<layers>, kfac, diagonal).
      preconditioner: none, kfac or diagonal (`tfgeo.metric_specs`).
      kfac_decay, kfac_inverse_every: the Kronecker factors' moving average
        over metric batches and how often their eigendecompositions are redone.
      warm_start: start each solve from the previous step's solution.
      true_residual: log the solve's true relative residual as `cg_residual`
        (one more product per step) instead of CG's recursive one.

    Compute is counted in non-trainable variables (saved with the model):
    `metric_products` (operator products computed, the true residual's
    included), `quadratic_forms` (one JVP each, for <theta, g theta>),
    `objective_gradients` (one per step for objectives that need a batch)
    and `curvature_updates` (one Kronecker-factor update per step when a
    K-FAC metric or preconditioner is used: a forward and a backward pass).
    """

    config_keys = ("step_size", "damping", "output_metric", "cg_max_iterations",
                   "cg_tolerance", "unroll_cg", "clip_to_distance", "metric", "preconditioner",
                   "kfac_decay", "kfac_inverse_every", "warm_start", "true_residual")
    object_keys = ("objective",)

    def __init__(
        self,
        model: keras.Model,
        objective: objectives_lib.Objective,
        step_size: float = 0.05,
        damping: float = 1e-3,
        output_metric: str = "fisher",
        cg_max_iterations: int = 10,
        cg_tolerance: float = 1e-4,
        unroll_cg: bool = False,
        clip_to_distance: bool = True,
        metric: str = "logits",
        preconditioner: str = "none",
        kfac_decay: float = 0.95,
        kfac_inverse_every: int = 10,
        warm_start: bool = True,
        true_residual: bool = True,
        **kwargs,
    ):
        super().__init__(model, **kwargs)
        if not isinstance(objective, objectives_lib.Objective):
            raise TypeError(
                f"objective must be a tfgeo.objectives.Objective, got {type(objective).__name__}.")
        # Any real number, numpy scalars included (np.float32(0.05) is not a float).
        if not (isinstance(step_size, numbers.Real) and not isinstance(step_size, bool)
                and math.isfinite(step_size) and step_size > 0):
            raise ValueError(f"step_size must be a finite number > 0, got {step_size!r}.")
        if not (isinstance(damping, numbers.Real) and not isinstance(damping, bool)
                and math.isfinite(damping) and damping >= 0):
            raise ValueError(f"damping must be a finite number >= 0, got {damping!r}.")
        if isinstance(cg_max_iterations, bool) or int(cg_max_iterations) != cg_max_iterations \
                or cg_max_iterations < 1:
            raise ValueError(f"cg_max_iterations must be an integer >= 1, got {cg_max_iterations!r}.")
        output_metrics.get(output_metric)  # validates the name
        kind, layers = metrics_lib.parse_metric(metric)
        if kind == "hidden":
            hidden_metric.representation_names(model, layers)  # validates the names
        metrics_lib.check_preconditioner(preconditioner)
        objective.check_model(model)
        self.objective = objective
        self.step_size = float(step_size)
        self.damping = float(damping)
        self.output_metric = output_metric
        self.cg_max_iterations = int(cg_max_iterations)
        self.cg_tolerance = float(cg_tolerance)
        self.unroll_cg = bool(unroll_cg)
        self.clip_to_distance = bool(clip_to_distance) and objective.has_distance
        self.metric, self.preconditioner = metric, preconditioner
        self.kfac_decay, self.kfac_inverse_every = float(kfac_decay), int(kfac_inverse_every)
        self.warm_start, self.true_residual = bool(warm_start), bool(true_residual)
        # A preconditioner for a hidden-representation metric approximates that metric.
        hidden = (hidden_metric.representation_names(model, layers) if kind == "hidden"
                  else None)
        self.curvature = (metrics_lib.CurvatureState(model, self.kfac_decay,
                                                     self.kfac_inverse_every, hidden=hidden,
                                                     name="curvature")
                          if metrics_lib.needs_curvature(metric, preconditioner) else None)
        # The previous solve's solution (a warm start); every replica holds the same.
        self.previous_solution = [
            self.add_weight(name=f"previous_solution_{i}", shape=tuple(w.shape),
                            initializer="zeros", trainable=False, dtype=w.dtype,
                            aggregation="only_first_replica")
            for i, w in enumerate(model.trainable_variables)] if self.warm_start else []
        counter = dict(shape=(), initializer="zeros", trainable=False, dtype="float64",
                       aggregation="only_first_replica")  # every replica adds the same amounts
        self.path_length = self.add_weight(name="path_length", **{**counter, "dtype": None})
        self.metric_products = self.add_weight(name="metric_products", **counter)
        self.quadratic_forms = self.add_weight(name="quadratic_forms", **counter)
        self.objective_gradients = self.add_weight(name="objective_gradients", **counter)
        self.curvature_updates = self.add_weight(name="curvature_updates", **counter)
        self.backoff = DampingBackoff(name="damping_backoff")
        self.functional_change_tracker = keras.metrics.Mean(name="functional_change")
        self.path_length_tracker = LastValue(name="path_length")
        self.cg_iterations_tracker = keras.metrics.Mean(name="cg_iterations")
        self.cg_residual_tracker = keras.metrics.Mean(name="cg_residual")
        self.cosine_tracker = keras.metrics.Mean(name="cosine")
        self.failed_steps_tracker = keras.metrics.Sum(name="failed_steps")
        self.distance_tracker = LastValue(name="distance_to_target")
        self.built = True

    @property
    def walk_trackers(self) -> list:
        """The walk's diagnostics, as logged (epoch means, except the running
        `path_length`, the summed `failed_steps` and the last `distance_to_target`)."""
        trackers = [self.functional_change_tracker, self.path_length_tracker,
                    self.cg_iterations_tracker, self.cg_residual_tracker, self.cosine_tracker,
                    self.failed_steps_tracker]
        if self.objective.has_distance:
            trackers.append(self.distance_tracker)
        return trackers

    @property
    def optional_trackers(self) -> list:
        return [self.distance_tracker]  # logged only for objectives with a goal

    def check_direction(self) -> None:
        """Raises ValueError if the objective's direction is zero at the current weights."""
        if self.objective.has_distance:
            distance = float(distribute.on_one_replica(self.objective.distance, self.model))
            if distance == 0.0:
                raise ValueError(
                    "The objective's direction is zero at the start of the walk: the model "
                    "already equals the target on every pulled coordinate (a pruning mask "
                    "belongs in TowardTarget(keep=...), the pulled coordinates in pull=...).")

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit`, refusing a walk that cannot move or labels outside
        the logits' classes, and saying when no step ran."""
        self.check_direction()
        self.check_labels(x, y)
        try:
            history = super().fit(x, y, *args, **kwargs)
        except tf.errors.InvalidArgumentError as e:
            # The cross-entropy kernel's check of a later batch, buried in a
            # graph-execution trace (an XLA step has no such check).
            label = _LABEL_ERROR.search(e.message)
            if label is None:
                raise
            raise _label_error(label[1], label[2]) from None
        if not history.history and kwargs.get("epochs", 1) > kwargs.get("initial_epoch", 0):
            # Keras logs nothing when no batch arrived.
            raise ValueError("GeodesicModel.fit ran no step: the dataset is empty.")
        return history

    def check_labels(self, x, y=None) -> None:
        """Raises ValueError if integer labels for a sparse cross-entropy (the
        objective's or the compiled loss) fall outside [0, classes): checked on
        `y`, or on the first batch of a `tf.data.Dataset` `x`. Compiled with
        XLA, the loss would silently turn such labels into NaN."""
        if not any(isinstance(loss, keras.losses.SparseCategoricalCrossentropy)
                   for loss in (getattr(self.objective, "loss", None), getattr(self, "loss", None))):
            return
        if y is None and isinstance(x, tf.data.Dataset):
            for batch in x.take(1):  # a tf.data pipeline restarts for fit
                _, y, _ = keras.utils.unpack_x_y_sample_weight(batch)
        if y is None or isinstance(y, (dict, list, tuple)):
            return
        y = tf.convert_to_tensor(y)
        if not y.dtype.is_integer or y.shape.num_elements() == 0:
            return
        try:
            classes = int(self.model.output_shape[-1])
        except (AttributeError, ValueError):  # a subclassed model states no output shape
            return
        bad = tf.boolean_mask(y, (y < 0) | (y >= classes))
        if tf.size(bad) > 0:
            raise _label_error(int(bad[0]), classes)

    def metric_operator(self, metric_inputs):
        """The metric g at the current weights on `metric_inputs`, as an operator."""
        return metrics_lib.make_metric(self.metric, self.model, metric_inputs,
                                       self.output_metric, curvature=self.curvature)

    def update_curvature(self, metric_inputs) -> None:
        """Folds the metric batch into the Kronecker factors (walks that use them)."""
        if self.curvature is None:
            return
        step = tf.cast(self.quadratic_forms, tf.int32)
        self.curvature.update(self.model, metric_inputs, self.output_metric,
                              tf.stack([tf.constant(7919, tf.int32), step]))
        self.curvature_updates.assign_add(tf.constant(1.0, tf.float64))

    def geodesic_step(self, metric_inputs, objective_inputs=None, targets=None):
        """Computes one step at the current weights without applying it."""
        operator = self.metric_operator(metric_inputs)
        direction = self.objective.direction(self.model, objective_inputs, targets)
        distributed = distribute.num_replicas() > 1
        if distributed:
            # Global-batch metric and direction; all replicas then take the same step.
            operator = distribute.ReplicaMeanOperator(operator)
            direction = distribute.replica_mean(list(direction))
        step_size = self.step_size
        if self.clip_to_distance:
            distance = self.objective.distance(self.model)
            step_size = tf.minimum(tf.cast(step_size, distance.dtype), distance)
        damping = self.damping + tf.convert_to_tensor(self.backoff.extra_damping)
        preconditioner = metrics_lib.make_preconditioner(
            self.preconditioner, self.model, self.curvature,
            tf.cast(damping, operator.dtype)) if self.curvature is not None else None
        return geodesic.geodesic_step(
            operator,
            direction,
            step_size=step_size,
            damping=damping,
            max_iterations=self.cg_max_iterations,
            tolerance=self.cg_tolerance,
            unroll=self.unroll_cg or distributed,  # no all-reduce inside while_loop
            preconditioner=preconditioner,
            initial=[tf.convert_to_tensor(v) for v in self.previous_solution] or None,
            true_residual=self.true_residual,
        )

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        metric_inputs, objective_inputs = split_inputs(x)
        self.update_curvature(metric_inputs)
        result = self.geodesic_step(metric_inputs, objective_inputs, y)
        for var, x_new in zip(self.previous_solution, result.cg.solution):
            var.assign(tf.where(result.ok, x_new, var))
        distribute.apply_update(weights_lib.backing_variables(self.model), result.step)
        change = tf.cast(result.functional_change, self.path_length.dtype)
        self.path_length.assign_add(tf.sqrt(tf.maximum(change, 0.0)))
        self.functional_change_tracker.update_state(change)
        self.path_length_tracker.update_state(self.path_length)
        self.cg_iterations_tracker.update_state(tf.cast(result.cg.iterations, tf.float32))
        self.cg_residual_tracker.update_state(
            result.true_residual if self.true_residual else result.cg.relative_residual)
        self.cosine_tracker.update_state(result.cosine)
        self.failed_steps_tracker.update_state(tf.cast(~result.ok, tf.float32))
        self.backoff.update(~result.ok)
        self.metric_products.assign_add(tf.cast(result.cg.products, tf.float64)
                                        + (1.0 if self.true_residual else 0.0))
        self.quadratic_forms.assign_add(tf.constant(1.0, tf.float64))
        if self.objective.needs_batch:
            self.objective_gradients.assign_add(tf.constant(1.0, tf.float64))
        if self.objective.has_distance:
            self.distance_tracker.update_state(self.objective.distance(self.model))
        # Compiled loss/metrics (e.g. task loss, accuracy) on the objective
        # batch after the step, so the progress bar shows what the walk does.
        if y is not None:
            self._update_compiled(objective_inputs, y, sample_weight)
        elif self.has_compiled_metrics():
            raise ValueError(
                "GeodesicModel was compiled with metrics but the training data has no "
                "labels: give (x, y) batches or compile without `metrics`.")
        return self.get_metrics_result()


def _label_error(label, classes) -> ValueError:
    return ValueError(f"GeodesicModel.fit: a label is {label}, outside the {classes} classes "
                      f"[0, {classes}) of the model's logits.")


def _results(tracker) -> dict:
    result = tracker.result()
    return result if isinstance(result, dict) else {tracker.name: result}


class WalkReport(NamedTuple):
    steps: int  # geodesic steps taken
    failed_steps: float  # steps whose solve failed (zero steps)
    history: keras.callbacks.History


def walk(walker: GeodesicModel, dataset, max_steps: int, log_every: int = 100, callbacks=(),
         verbose: int = 2, patience: int = 20) -> WalkReport:
    """Runs `walker.fit` on an endless `dataset` for at most `max_steps` steps.

    Each Keras epoch is `log_every` steps (one progress line); the walk also
    ends when a callback stops it (e.g. `StopAtDistance`) or after `patience`
    consecutive failed steps (`StopOnFailedSteps`).
    """
    if max_steps < 1 or log_every < 1:
        raise ValueError(f"max_steps and log_every must be >= 1, got {max_steps}, {log_every}.")
    per_epoch = min(log_every, max_steps)
    counter = callbacks_lib.StepCounter(limit=max_steps)
    hooks = [counter, callbacks_lib.StopOnFailedSteps(patience), *callbacks]
    if distribute.num_replicas_in_scope() > 1:  # one device's batches (`distribute.fit`)
        walker.check_direction()
        history = keras.callbacks.History()
        history.history = distribute.fit(walker, dataset, math.ceil(max_steps / per_epoch),
                                         per_epoch, hooks, verbose)
    else:
        history = walker.fit(dataset, steps_per_epoch=per_epoch,
                             epochs=math.ceil(max_steps / per_epoch), verbose=verbose,
                             shuffle=False, callbacks=hooks)
    failed = float(sum(history.history.get("failed_steps", [0.0])))
    return WalkReport(counter.count, failed, history)

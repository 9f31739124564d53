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

import keras
import tensorflow as tf

from tfgeo import distribute
from tfgeo import geodesic
from tfgeo import metric
from tfgeo import objectives as objectives_lib
from tfgeo import output_metrics

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


def _split_inputs(x):
    if isinstance(x, dict) and METRIC_KEY in x and OBJECTIVE_KEY in x:
        return x[METRIC_KEY], x[OBJECTIVE_KEY]
    return x, x


@keras.saving.register_keras_serializable(package="tfgeo")
class GeodesicModel(keras.Model):
    """Wraps a model so that each `fit` step is a geodesic step.

    Args:
      model: the network being walked (a built Keras model with logits outputs
        for the 'fisher' metric).
      objective: a `tfgeo.objectives.Objective` giving v.
      step_size: eps > 0, Euclidean length of each step.
      damping: lambda >= 0 in (g + lambda I).
      output_metric: 'euclidean' or 'fisher'.
      cg_max_iterations, cg_tolerance: conjugate-gradient budget per step.
      unroll_cg: straight-line CG (needed under tf.distribute all-reduces).
      clip_to_distance: for objectives with a goal point, shorten the last
        steps to eps_t = min(eps, distance to the goal) so a walk does not
        overshoot and circle its goal.

    Compute is counted in non-trainable variables (saved with the model):
    `metric_products` (CG operator products), `quadratic_forms` (one JVP each,
    for <theta, g theta>) and `objective_gradients` (one per step for
    objectives that need a batch).
    """

    def __init__(
        self,
        model: keras.Model,
        objective: objectives_lib.Objective,
        step_size: float = 1e-2,
        damping: float = 1e-3,
        output_metric: str = "fisher",
        cg_max_iterations: int = 10,
        cg_tolerance: float = 1e-4,
        unroll_cg: bool = False,
        clip_to_distance: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(model, keras.Model):
            raise TypeError(f"model must be a keras.Model, got {type(model).__name__}.")
        if not model.built:
            raise ValueError("model must be built (call it once or give it an Input).")
        if not isinstance(objective, objectives_lib.Objective):
            raise TypeError(
                f"objective must be a tfgeo.objectives.Objective, got {type(objective).__name__}."
            )
        if not step_size > 0:
            raise ValueError(f"step_size must be > 0, got {step_size}.")
        if not damping >= 0:
            raise ValueError(f"damping must be >= 0, got {damping}.")
        if int(cg_max_iterations) < 1:
            raise ValueError(f"cg_max_iterations must be >= 1, got {cg_max_iterations}.")
        output_metrics.get(output_metric)  # validates the name
        self.model = model
        self.objective = objective
        self.step_size = float(step_size)
        self.damping = float(damping)
        self.output_metric = output_metric
        self.cg_max_iterations = int(cg_max_iterations)
        self.cg_tolerance = float(cg_tolerance)
        self.unroll_cg = bool(unroll_cg)
        self.clip_to_distance = bool(clip_to_distance) and objective.has_distance
        # Every replica adds the same amounts: count them once.
        self.path_length = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="path_length",
            aggregation="only_first_replica",
        )
        counter = dict(shape=(), initializer="zeros", trainable=False, dtype="float64",
                       aggregation="only_first_replica")
        self.metric_products = self.add_weight(name="metric_products", **counter)
        # Back-off after a failed step (CG breakdown, non-finite values): the
        # step is zero (weights kept) and extra damping is added, x10 per
        # failure from 1e-4, /10 per success, so a nearly singular or
        # indefinite metric gets regularised instead of failing again.
        self.extra_damping = self.add_weight(
            name="extra_damping", shape=(), initializer="zeros", trainable=False,
            dtype="float64", aggregation="only_first_replica")
        self.consecutive_failures = self.add_weight(
            name="consecutive_failures", shape=(), initializer="zeros", trainable=False,
            aggregation="only_first_replica")
        self.quadratic_forms = self.add_weight(name="quadratic_forms", **counter)
        self.objective_gradients = self.add_weight(name="objective_gradients", **counter)
        self.functional_change_tracker = keras.metrics.Mean(name="functional_change")
        self.path_length_tracker = LastValue(name="path_length")
        self.cg_iterations_tracker = keras.metrics.Mean(name="cg_iterations")
        self.cg_residual_tracker = keras.metrics.Mean(name="cg_residual")
        self.cosine_tracker = keras.metrics.Mean(name="cosine")
        self.failed_steps_tracker = keras.metrics.Sum(name="failed_steps")
        self.distance_tracker = LastValue(name="distance_to_target")
        self.built = True

    def call(self, inputs, training=False):
        # Keras may call the wrapper on a zipped {"metric", "objective"} batch
        # (e.g. to build it under tf.distribute): the objective part is the input.
        _, inputs = _split_inputs(inputs)
        return self.model(inputs, training=training)

    @property
    def _walk_trackers(self):
        trackers = [
            self.functional_change_tracker,
            self.path_length_tracker,
            self.cg_iterations_tracker,
            self.cg_residual_tracker,
            self.cosine_tracker,
            self.failed_steps_tracker,
        ]
        if self.objective.has_distance:
            trackers.append(self.distance_tracker)
        return trackers

    def geodesic_step(self, metric_inputs, objective_inputs=None, targets=None):
        """Computes one step at the current weights without applying it."""
        operator = metric.MetricOperator(self.model, metric_inputs, self.output_metric)
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
        return geodesic.geodesic_step(
            operator,
            direction,
            step_size=step_size,
            damping=self.damping + tf.convert_to_tensor(self.extra_damping),
            max_iterations=self.cg_max_iterations,
            tolerance=self.cg_tolerance,
            unroll=self.unroll_cg or distributed,  # no all-reduce inside while_loop
        )

    def _update_compiled(self, x, y, sample_weight):
        """Compiled loss and metrics on (x, y) at the current weights."""
        y_pred = self(x, training=False)
        loss_tracker = getattr(self, "_loss_tracker", None)
        if loss_tracker is not None and getattr(self, "_compile_loss", None) is not None:
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)
            # compute_loss divides by the replica count (for summed gradients); undo
            # it for the tracker, as Keras's own train_step does.
            loss = loss * tf.cast(distribute.num_replicas(), loss.dtype)
            loss_tracker.update_state(loss, sample_weight=tf.shape(y_pred)[0])
        self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _logs(self, include_walk):
        walk = {m.name for m in self._walk_trackers}
        hidden = {self.distance_tracker.name} - walk
        if getattr(self, "_compile_loss", None) is None:
            hidden.add("loss")  # compiled without a loss: its tracker stays empty
        logs = {}
        for name, value in self.get_metrics_result().items():
            if name in hidden or (not include_walk and name in walk):
                continue
            logs[name] = value
        return logs

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        metric_inputs, objective_inputs = _split_inputs(x)
        result = self.geodesic_step(metric_inputs, objective_inputs, y)
        distribute.apply_update(metric.backing_variables(self.model), result.step)
        change = tf.cast(result.functional_change, self.path_length.dtype)
        self.path_length.assign_add(tf.sqrt(tf.maximum(change, 0.0)))
        self.functional_change_tracker.update_state(change)
        self.path_length_tracker.update_state(self.path_length)
        self.cg_iterations_tracker.update_state(tf.cast(result.cg.iterations, tf.float32))
        self.cg_residual_tracker.update_state(result.cg.relative_residual)
        self.cosine_tracker.update_state(result.cosine)
        self.failed_steps_tracker.update_state(tf.cast(~result.ok, tf.float32))
        failed = ~result.ok
        self.extra_damping.assign(tf.where(
            failed, tf.maximum(10.0 * self.extra_damping, 1e-4),
            tf.where(self.extra_damping > 1e-10, self.extra_damping / 10.0, 0.0)))
        self.consecutive_failures.assign(
            tf.where(failed, self.consecutive_failures + 1.0, 0.0))
        self.metric_products.assign_add(tf.cast(result.cg.iterations, tf.float64))
        self.quadratic_forms.assign_add(tf.constant(1.0, tf.float64))
        if self.objective.needs_batch:
            self.objective_gradients.assign_add(tf.constant(1.0, tf.float64))
        if self.objective.has_distance:
            self.distance_tracker.update_state(self.objective.distance(self.model))
        # Compiled loss/metrics (e.g. task loss, accuracy) on the objective
        # batch after the step, so the progress bar shows what the walk does.
        if y is not None:
            self._update_compiled(objective_inputs, y, sample_weight)
        elif getattr(self, "_compile_metrics", None) is not None:
            raise ValueError(
                "GeodesicModel was compiled with metrics but the training data has no "
                "labels: give (x, y) batches or compile without `metrics`."
            )
        return self._logs(include_walk=True)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        _, x = _split_inputs(x)
        self._update_compiled(x, y, sample_weight)
        return self._logs(include_walk=False)

    def get_config(self):
        return {
            "model": keras.saving.serialize_keras_object(self.model),
            "objective": keras.saving.serialize_keras_object(self.objective),
            "step_size": self.step_size,
            "damping": self.damping,
            "output_metric": self.output_metric,
            "cg_max_iterations": self.cg_max_iterations,
            "cg_tolerance": self.cg_tolerance,
            "unroll_cg": self.unroll_cg,
            "clip_to_distance": self.clip_to_distance,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(
            config["model"], custom_objects=custom_objects
        )
        config["objective"] = keras.saving.deserialize_keras_object(
            config["objective"], custom_objects=custom_objects
        )
        return cls(**config)


class StopAtDistance(keras.callbacks.Callback):
    """Stops a `GeodesicModel.fit` once `distance_to_target` <= `tolerance`."""

    def __init__(self, tolerance: float):
        super().__init__()
        if not tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}.")
        self.tolerance = float(tolerance)
        self.stopped_at = None

    def on_train_batch_end(self, batch, logs=None):
        distance = (logs or {}).get("distance_to_target")
        if distance is not None and float(distance) <= self.tolerance:
            self.stopped_at = batch
            self.model.stop_training = True


class StopOnFailedSteps(keras.callbacks.Callback):
    """Stops a `GeodesicModel.fit` after `patience` consecutive failed steps,
    logging why. Failed steps leave the weights unchanged, so the model keeps
    the last good weights."""

    def __init__(self, patience: int = 10):
        super().__init__()
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}.")
        self.patience = int(patience)
        self.stopped_at = None

    def on_train_batch_end(self, batch, logs=None):
        failures = float(self.model.consecutive_failures.numpy())
        if failures >= self.patience:
            from absl import logging

            self.stopped_at = batch
            logging.warning(
                "Stopping the walk: %d consecutive failed geodesic steps (conjugate gradient "
                "broke down or met non-finite values, even with extra damping %.3g); the "
                "weights are the last good ones.", int(failures),
                float(self.model.extra_damping.numpy()))
            self.model.stop_training = True

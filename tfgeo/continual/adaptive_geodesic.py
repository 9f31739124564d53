"""Geodesic steps under an adaptive base metric: g_memory weighted against Adam's diagonal.

The Euclidean geodesic step (`tfgeo.geodesic`) moves a fixed length eps along
(g + lambda I)^{-1} v: far shorter than an Adam step on a network with many
weights, so a walk learns a new task slowly, and longer or more steps drift
further from the memory's function. Here each step solves

    theta_t = argmin_theta  -<m_t, theta> + (1 / (2 lr)) <theta, (rho g_t + D_t) theta>
            = lr (rho g_t + D_t)^{-1} m_t,

with g_t the metric on the step's metric batch (e.g. a memory of earlier-task
inputs: logits or hidden representations, `tfgeo.metric_specs`), m_t the bias-
corrected moving average of the objective's direction v (Adam's first moment)
and D_t = sqrt(s_t) + epsilon Adam's diagonal (s_t the bias-corrected moving
average of v^2). It is the geodesic step with the multiplier fixed by the
learning rate (the `beta` parametrisation of `tfgeo.geodesic`) in the metric
rho g + D:

* rho = 0 is Adam exactly (no metric product is computed);
* rho > 0 shortens and bends the Adam step away from directions that change
  the memory's function: its length is set by the functional change it costs
  on the memory, not by a fixed Euclidean length.

The system is solved by conjugate gradient preconditioned by D (its first
iterate is the Adam step rescaled by the exact line minimiser of the
quadratic, so even one iteration shortens steps that change the memory).
A solve that fails falls back to the Adam step (counted in `failed_steps`).
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf

from tfgeo import geodesic_model
from tfgeo import krylov
from tfgeo import linear_operator
from tfgeo import metric_specs as metrics_lib
from tfgeo import objectives as objectives_lib
from tfgeo import output_metrics
from tfgeo import vectors
from tfgeo import weights as weights_lib


@keras.saving.register_keras_serializable(package="tfgeo")
class AdaptiveGeodesicModel(geodesic_model.WalkModel):
    """Wraps a model so that each `fit` step is theta = lr (rho g + D)^{-1} m (module docstring).

    Batches are as for `GeodesicModel` (`tfgeo.zip_batches(metric_ds, objective_ds)`).

    Args:
      model: the network (a built Keras model with logits outputs).
      objective: a `tfgeo.objectives.Objective` giving v (a descent direction).
      learning_rate: lr >= 0 (0 leaves the weights unchanged).
      metric_weight: rho >= 0, the weight of the metric against Adam's diagonal.
      beta_1, beta_2, epsilon: Adam's moment decays and epsilon (Keras's defaults).
      output_metric, metric: the metric g (`tfgeo.metric_specs.METRICS`, e.g.
        "logits" or "hidden").
      cg_max_iterations, cg_tolerance: the solve's budget.
      track_change: also compute <theta, g theta> (one more JVP per step) and
        log it as `functional_change`.

    Compute is counted in `metric_products`, `objective_gradients` and
    `quadratic_forms` (non-trainable counters, as in `GeodesicModel`).
    """

    config_keys = ("learning_rate", "metric_weight", "beta_1", "beta_2", "epsilon",
                   "output_metric", "metric", "cg_max_iterations", "cg_tolerance",
                   "track_change")
    object_keys = ("objective",)

    def __init__(self, model: keras.Model, objective: objectives_lib.Objective,
                 learning_rate: float = 1e-3, metric_weight: float = 1.0, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7, output_metric: str = "fisher",
                 metric: str = "logits", cg_max_iterations: int = 3,
                 cg_tolerance: float = 1e-3, track_change: bool = False, **kwargs):
        super().__init__(model, **kwargs)
        if not isinstance(objective, objectives_lib.Objective):
            raise TypeError(
                f"objective must be a tfgeo.objectives.Objective, got {type(objective).__name__}.")
        for name, value in (("learning_rate", learning_rate), ("metric_weight", metric_weight)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
        for name, value in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}.")
        if not epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon!r}.")
        krylov.check_arguments(0.0, int(cg_max_iterations), cg_tolerance)
        output_metrics.get(output_metric)
        metrics_lib.parse_metric(metric)
        objective.check_model(model)
        self.objective = objective
        self.learning_rate, self.metric_weight = float(learning_rate), float(metric_weight)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        self.output_metric, self.metric = output_metric, metric
        self.cg_max_iterations, self.cg_tolerance = int(cg_max_iterations), float(cg_tolerance)
        self.track_change = bool(track_change)
        slot = dict(initializer="zeros", trainable=False)
        self.first_moment = [self.add_weight(name=f"m_{i}", shape=tuple(w.shape), dtype=w.dtype,
                                             **slot)
                             for i, w in enumerate(model.trainable_variables)]
        self.second_moment = [self.add_weight(name=f"s_{i}", shape=tuple(w.shape),
                                              dtype=w.dtype, **slot)
                              for i, w in enumerate(model.trainable_variables)]
        counter = dict(shape=(), initializer="zeros", trainable=False, dtype="float64")
        self.steps = self.add_weight(name="steps", **counter)
        self.metric_products = self.add_weight(name="metric_products", **counter)
        self.quadratic_forms = self.add_weight(name="quadratic_forms", **counter)
        self.objective_gradients = self.add_weight(name="objective_gradients", **counter)
        self.functional_change_tracker = keras.metrics.Mean(name="functional_change")
        self.cg_iterations_tracker = keras.metrics.Mean(name="cg_iterations")
        self.shrink_tracker = keras.metrics.Mean(name="step_ratio")
        self.failed_steps_tracker = keras.metrics.Sum(name="failed_steps")
        self.built = True

    @property
    def walk_trackers(self) -> list:
        trackers = [self.cg_iterations_tracker, self.shrink_tracker, self.failed_steps_tracker]
        return ([self.functional_change_tracker] if self.track_change else []) + trackers

    @property
    def optional_trackers(self) -> list:
        return [self.functional_change_tracker]  # logged only with track_change

    def metric_operator(self, metric_inputs):
        """The metric g at the current weights on `metric_inputs`."""
        return metrics_lib.make_metric(self.metric, self.model, metric_inputs,
                                       self.output_metric)

    def adaptive_step(self, metric_inputs, objective_inputs=None, targets=None):
        """Updates the moments and returns (theta, cg iterations, ok, Adam step)."""
        direction = self.objective.direction(self.model, objective_inputs, targets)
        self.steps.assign_add(tf.constant(1.0, tf.float64))
        t = tf.cast(self.steps, direction[0].dtype)
        m_hat, diagonal = [], []
        for m, s, v in zip(self.first_moment, self.second_moment, direction):
            m.assign(self.beta_1 * m + (1.0 - self.beta_1) * v)
            s.assign(self.beta_2 * s + (1.0 - self.beta_2) * tf.square(v))
            m_hat.append(tf.convert_to_tensor(m) / (1.0 - tf.pow(self.beta_1, t)))
            diagonal.append(tf.sqrt(tf.convert_to_tensor(s) / (1.0 - tf.pow(self.beta_2, t)))
                            + self.epsilon)
        adam = [mh / d for mh, d in zip(m_hat, diagonal)]
        if self.metric_weight == 0.0:
            return vectors.scale(self.learning_rate, adam), tf.constant(0, tf.int32), \
                tf.constant(True), adam
        base = linear_operator.DiagonalOperator(diagonal)
        operator = self.metric_weight * self.metric_operator(metric_inputs) + base
        cg = krylov.conjugate_gradient(operator, m_hat, damping=0.0,
                                       max_iterations=self.cg_max_iterations,
                                       tolerance=self.cg_tolerance, preconditioner=base)
        self.metric_products.assign_add(tf.cast(cg.products, tf.float64))
        ok = vectors.all_finite(cg.solution) & (cg.iterations > 0)
        solution = [tf.where(ok, x, a) for x, a in zip(cg.solution, adam)]
        return vectors.scale(self.learning_rate, solution), cg.iterations, ok, adam

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        metric_inputs, objective_inputs = geodesic_model.split_inputs(x)
        theta, iterations, ok, adam = self.adaptive_step(metric_inputs, objective_inputs, y)
        if self.objective.needs_batch:
            self.objective_gradients.assign_add(tf.constant(1.0, tf.float64))
        adam_norm = vectors.norm(adam) * self.learning_rate
        ratio = vectors.norm(theta) / tf.where(adam_norm > 0, adam_norm, tf.ones_like(adam_norm))
        if self.track_change:
            change = self.metric_operator(metric_inputs).quadratic_form(theta)
            self.quadratic_forms.assign_add(tf.constant(1.0, tf.float64))
            self.functional_change_tracker.update_state(change)
        for var, step in zip(weights_lib.backing_variables(self.model), theta):
            var.assign_add(step)
        self.cg_iterations_tracker.update_state(tf.cast(iterations, tf.float32))
        self.shrink_tracker.update_state(ratio)
        self.failed_steps_tracker.update_state(tf.cast(~ok, tf.float32))
        if y is not None and (self.loss is not None or self.has_compiled_metrics()):
            # Compiled loss/metrics on the objective batch after the step (one more forward).
            self._update_compiled(objective_inputs, y, sample_weight)
        return self.get_metrics_result()

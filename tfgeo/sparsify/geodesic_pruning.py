"""Sparsification (application 1): geodesic pruning and its baselines.

A stage takes the current weights w and a target sparsity s:

* geodesic (`GeodesicPruner.prune`): the mask m keeps the largest |w|; the
  walk pulls the entries to be pruned toward zero, v = (1 - m) * (0 - w),
  while the kept entries move freely, each step minimising the change in the
  network's function (metric on training inputs). It stops when
  ||(1 - m) * w|| <= tolerance * (its value at the start of the stage) or
  after max_steps, then projects exactly: w <- w * m.
* one-shot: w <- w * m, no recovery.
* masked fine-tuning: one-shot, then gradient steps projected onto m.
* gradual (Zhu & Gupta 2017): fine-tuning while the mask's sparsity rises
  from the previous stage's to s along the cubic polynomial schedule.

Weights here mean the model's trainable variables (as numpy arrays).
"""
from __future__ import annotations

import time

import keras
import numpy as np

from tfgeo import callbacks as callbacks_lib
from tfgeo import distribute
from tfgeo import geodesic_model
from tfgeo import losses
from tfgeo.sparsify import masked_training
from tfgeo import objectives
from tfgeo.sparsify import pruning
from tfgeo import weights as weights_lib


class GeodesicPruner:
    """Walks `model` toward magnitude-pruned copies of itself, one stage per call.

    One `GeodesicModel` (and one compiled step) serves every stage; only the
    objective's mask changes. See the module docstring for the stage.
    """

    def __init__(self, model: keras.Model, step_size: float = 0.05, damping: float = 1e-3,
                 output_metric: str = "fisher", cg_max_iterations: int = 10,
                 cg_tolerance: float = 1e-4, tolerance: float = 0.02, max_steps: int = 500,
                 jit_compile: bool = True, log_every: int = 50, verbose: int = 2):
        if not 0 <= tolerance < 1:
            raise ValueError(f"tolerance must be in [0, 1), got {tolerance}.")
        if max_steps < 1 or log_every < 1:
            raise ValueError("max_steps and log_every must be >= 1.")
        zeros = [np.zeros(w.shape, w.dtype) for w in weights_lib.get_trainable(model)]
        self.objective = objectives.TowardTarget(zeros, pull=[np.ones_like(z) for z in zeros])
        self.walker = geodesic_model.GeodesicModel(
            model, self.objective, step_size=step_size, damping=damping,
            output_metric=output_metric, cg_max_iterations=cg_max_iterations,
            cg_tolerance=cg_tolerance, clip_to_distance=True,
        )
        self.walker.compile(jit_compile=jit_compile)
        self.model = model
        self.tolerance, self.max_steps = float(tolerance), int(max_steps)
        self.log_every, self.verbose = int(log_every), verbose

    def prune(self, masks, metric_dataset, callbacks=()) -> dict:
        """Walks toward w * masks, then projects onto masks.

        Args:
          masks: 0/1 arrays shaped like the trainable variables.
          metric_dataset: an endless dataset of (x, y) (or x) training batches;
            x gives the metric, y is unused.
        Returns:
          dict: steps, metric_products, quadratic_forms, start_distance,
          end_distance (just before projecting), failed_steps, seconds.
        """
        zeros = [np.zeros_like(m) for m in masks]
        self.objective.set_target(zeros, keep=masks)
        start_distance = float(self.objective.distance(self.model))
        counters = (float(self.walker.metric_products.numpy()),
                    float(self.walker.quadratic_forms.numpy()))
        began = time.time()
        steps, failed = 0, 0.0
        if start_distance > 0:
            stop = callbacks_lib.StopAtDistance(self.tolerance * start_distance)
            steps, failed, _ = geodesic_model.walk(
                self.walker, metric_dataset, self.max_steps, self.log_every,
                callbacks=[stop, *callbacks], verbose=self.verbose)
        end_distance = float(self.objective.distance(self.model))
        weights_lib.set_trainable(self.model,
                                  pruning.apply_masks(weights_lib.get_trainable(self.model), masks))
        return {
            "steps": steps,
            "metric_products": float(self.walker.metric_products.numpy()) - counters[0],
            "quadratic_forms": float(self.walker.quadratic_forms.numpy()) - counters[1],
            "start_distance": start_distance,
            "end_distance": end_distance,
            "failed_steps": failed,
            "seconds": time.time() - began,
        }


def one_shot(weights, sparsity: float, which=None, scope: str = "global"):
    """(pruned weights, masks): magnitude pruning with no recovery."""
    masks = pruning.magnitude_masks(weights, sparsity, which, scope)
    return pruning.apply_masks(weights, masks), masks


LR_SCHEDULES = ("constant", "cosine")


def adam(learning_rate: float, steps: int, lr_schedule: str = "constant") -> keras.optimizers.Adam:
    """Adam at `learning_rate`, constant or cosine-decayed to 0 over `steps` steps."""
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}.")
    if lr_schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, max(int(steps), 1))
    return keras.optimizers.Adam(learning_rate)


def masked_finetune(model: keras.Model, masks, dataset, steps: int, learning_rate: float = 1e-4,
                    loss=None, jit_compile: bool = True, verbose: int = 0,
                    callbacks=(), lr_schedule: str = "constant") -> dict:
    """Projects `model` onto `masks`, then `steps` Adam steps projected onto them
    (rate constant or cosine-decayed to 0 over the steps, `adam`).

    `dataset` is endless (x, y) batches. Returns steps, gradients (= steps)
    and seconds. A fresh optimizer per call: stages do not share moments.
    """
    masked = masked_training.MaskedModel(model, masks)
    began = time.time()
    if steps > 0:
        masked.compile(adam(learning_rate, steps, lr_schedule), _loss(loss),
                       jit_compile=jit_compile)
        distribute.fit(masked, dataset, steps_per_epoch=int(steps), verbose=verbose,
                       callbacks=callbacks)
    return {"steps": int(steps), "gradients": float(steps), "seconds": time.time() - began}


def gradual_prune(model: keras.Model, dataset, initial: float, final: float, steps: int,
                  learning_rate: float = 1e-4, frequency: int = 50,
                  pruning_fraction: float = 0.75, which=None, scope: str = "global",
                  loss=None, jit_compile: bool = True, verbose: int = 0, callbacks=(),
                  lr_schedule: str = "constant") -> dict:
    """Fine-tunes for `steps` while the sparsity rises from `initial` to `final`
    along the Zhu & Gupta cubic schedule over the first `pruning_fraction` of
    the steps (then fine-tunes at `final`). Ends exactly at `final`. The Adam
    rate is constant or cosine-decayed to 0 over the steps (`adam`)."""
    if not 0 < pruning_fraction <= 1:
        raise ValueError(f"pruning_fraction must be in (0, 1], got {pruning_fraction}.")
    masks = pruning.magnitude_masks(weights_lib.get_trainable(model), initial, which, scope)
    masked = masked_training.MaskedModel(model, masks)
    schedule = masked_training.GradualPruning(
        initial, final, begin_step=0, end_step=max(int(pruning_fraction * steps) - 1, 0),
        frequency=frequency, which=which, scope=scope)
    began = time.time()
    if steps > 0:
        masked.compile(adam(learning_rate, steps, lr_schedule), _loss(loss),
                       jit_compile=jit_compile)
        distribute.fit(masked, dataset, steps_per_epoch=int(steps), verbose=verbose,
                       callbacks=[schedule, *callbacks])
    else:
        masked.set_masks(pruning.magnitude_masks(weights_lib.get_trainable(model), final, which,
                                                 scope))
    return {"steps": int(steps), "gradients": float(steps), "seconds": time.time() - began,
            "mask_updates": len(schedule.sparsities)}


def _loss(loss):
    return loss or losses.classification_loss()

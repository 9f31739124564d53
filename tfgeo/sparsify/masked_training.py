"""Training under a pruning mask: masked fine-tuning and gradual magnitude pruning.

`MaskedModel` wraps a network so that every `fit` step is an ordinary
gradient step followed by the exact projection w <- w * m, inside the
compiled step. `GradualPruning` is a callback that raises the mask's
sparsity along the Zhu & Gupta (2017) polynomial schedule while training
(what tfmot's `PolynomialDecay` does for Keras 2; implemented here because
tfmot does not support Keras 3).
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfgeo import distribute
from tfgeo import model_wrapper
from tfgeo.sparsify import pruning
from tfgeo import weights as weights_lib


@keras.saving.register_keras_serializable(package="tfgeo")
class MaskedModel(model_wrapper.ModelWrapper):
    """Gradient steps projected onto a 0/1 mask per trainable variable.

    Args:
      model: a built Keras model.
      masks: list of 0/1 arrays shaped like `model.trainable_variables`
        (default all ones). Change them with `set_masks`.
    """

    def __init__(self, model: keras.Model, masks=None, **kwargs):
        super().__init__(model, **kwargs)
        self.masks = [
            self.add_weight(shape=tuple(w.shape), initializer="ones", trainable=False,
                            dtype=w.dtype, name=f"mask_{i}")
            for i, w in enumerate(model.trainable_variables)
        ]
        if masks is not None:
            self.set_masks(masks)
        self.built = True

    def set_masks(self, masks, project: bool = True):
        """Replaces the masks (and, by default, projects the weights onto them)."""
        if len(masks) != len(self.masks):
            raise ValueError(f"{len(masks)} masks for {len(self.masks)} trainable variables.")
        for var, m in zip(self.masks, masks):
            if tuple(np.shape(m)) != tuple(var.shape):
                raise ValueError(f"mask of shape {np.shape(m)} for a variable of shape {var.shape}.")
            var.assign(np.asarray(m, dtype=var.dtype))
        if project:
            self.project()

    def project(self):
        for w, m in zip(self.model.trainable_variables, self.masks):
            w.assign(w * m)

    def train_step(self, data):
        x, y, sample_weight, y_pred, loss, grads = self.loss_and_gradients(data)
        variables = self.model.trainable_variables
        # Masked gradients keep the optimizer's moments of pruned weights at
        # zero; the projection after the update makes the zeros exact.
        grads = [g * tf.cast(m, g.dtype) for g, m in zip(grads, self.masks)]
        self.optimizer.apply(grads, variables)
        # Projection as an update (w + (w m - w) is exactly w m for m in {0, 1}),
        # so it also runs in a replica context under tf.distribute.
        distribute.apply_update(weights_lib.backing_variables(self.model),
                                [w * tf.cast(m, w.dtype) - w for w, m in zip(variables, self.masks)])
        self.record_loss(loss, tf.shape(y_pred)[0])
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


class GradualPruning(keras.callbacks.Callback):
    """Raises a `MaskedModel`'s sparsity along the polynomial schedule.

    Every `frequency` steps from `begin_step` to `end_step` (and at
    `end_step`) the mask is recomputed by magnitude at
    s_t = `pruning.polynomial_decay_sparsity(t, initial, final, begin, end, power)`
    and the weights are projected onto it. After `end_step` the mask stays at
    exactly `final` sparsity.
    """

    def __init__(self, initial: float, final: float, begin_step: int, end_step: int,
                 frequency: int = 100, power: float = 3.0, which=None, scope: str = "global"):
        super().__init__()
        pruning.polynomial_decay_sparsity(0, initial, final, begin_step, end_step, power)
        if frequency < 1:
            raise ValueError(f"frequency must be >= 1, got {frequency}.")
        self.initial, self.final = float(initial), float(final)
        self.begin_step, self.end_step = int(begin_step), int(end_step)
        self.frequency, self.power = int(frequency), float(power)
        self.which, self.scope = which, scope
        self.step = 0
        self.sparsities = []  # (step, sparsity) of each mask update

    def _due(self, step):
        if step < self.begin_step or step > self.end_step:
            return False
        return step == self.end_step or (step - self.begin_step) % self.frequency == 0

    def _prune_to(self, sparsity):
        weights = weights_lib.get_trainable(self.model.model)
        self.model.set_masks(pruning.magnitude_masks(weights, sparsity, self.which, self.scope))
        self.sparsities.append((self.step, sparsity))

    def on_train_batch_begin(self, batch, logs=None):
        if self._due(self.step):
            self._prune_to(pruning.polynomial_decay_sparsity(
                self.step, self.initial, self.final, self.begin_step, self.end_step, self.power))
        self.step += 1

    def on_train_end(self, logs=None):
        # A run shorter than end_step still ends at the final sparsity.
        if not self.sparsities or self.sparsities[-1][1] != self.final:
            self._prune_to(self.final)

"""Elastic weight consolidation (Kirkpatrick et al. 2017) with the exact diagonal Fisher.

For a logits classifier, the Fisher is F = E_x[J^T (diag p - p p^T) J]
(the same matrix as `tfgeo.metric` with the 'fisher' output metric); its
diagonal is computed exactly (`tfgeo.diagonal_metric`, no label sampling),
so it is checked against the dense Fisher in tests.

`EWCModel` trains on a new task with the penalty
(lambda / 2) sum_t sum_i F_t,i (w_i - w*_t,i)^2 over consolidated tasks t,
kept in expanded form (sum_t F_t, sum_t F_t w*_t, sum_t F_t w*_t^2) so its
size does not grow with the number of tasks.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfgeo import diagonal_metric
from tfgeo import distribute
from tfgeo import model_wrapper


def diagonal_fisher(model: keras.Model, inputs, chunk_elements: int = 2 ** 25) -> list[np.ndarray]:
    """(1/N) sum_i diag(J_i^T (diag p_i - p_i p_i^T) J_i), shaped like the trainable
    variables: `tfgeo.diagonal_metric.diagonal` with the Fisher."""
    return diagonal_metric.diagonal(model, inputs, "fisher", chunk_elements)


@keras.saving.register_keras_serializable(package="tfgeo")
class EWCModel(model_wrapper.ModelWrapper):
    """`model` trained on the compiled loss plus the EWC penalty.

    Args:
      model: a built Keras model.
      strength: lambda >= 0.
    """

    config_keys = ("strength",)

    def __init__(self, model: keras.Model, strength: float = 100.0, **kwargs):
        super().__init__(model, **kwargs)
        if not (np.isfinite(strength) and strength >= 0):
            raise ValueError(f"strength must be a finite number >= 0, got {strength}.")
        self.strength = float(strength)
        zeros = dict(initializer="zeros", trainable=False)
        shapes = [tuple(w.shape) for w in model.trainable_variables]
        self.fisher_sum = [self.add_weight(shape=s, name=f"f_{i}", **zeros) for i, s in enumerate(shapes)]
        self.fisher_anchor = [self.add_weight(shape=s, name=f"fa_{i}", **zeros) for i, s in enumerate(shapes)]
        self.fisher_anchor_sq = self.add_weight(shape=(), name="faa", **zeros)
        self.penalty_tracker = keras.metrics.Mean(name="ewc_penalty")
        self.built = True

    def consolidate(self, fisher) -> None:
        """Adds a task: anchors at the current weights with diagonal Fisher `fisher`."""
        extra = 0.0
        for f_sum, fa, f, w in zip(self.fisher_sum, self.fisher_anchor, fisher,
                                   self.model.trainable_variables):
            w = w.numpy()
            f_sum.assign_add(f)
            fa.assign_add(f * w)
            extra += float(np.sum(f * w * w))
        self.fisher_anchor_sq.assign_add(extra)

    def get_penalty_state(self) -> list[np.ndarray]:
        """The consolidated penalty as arrays (for checkpoints)."""
        return [v.numpy() for v in (*self.fisher_sum, *self.fisher_anchor, self.fisher_anchor_sq)]

    def set_penalty_state(self, arrays) -> None:
        variables = (*self.fisher_sum, *self.fisher_anchor, self.fisher_anchor_sq)
        if len(arrays) != len(variables):
            raise ValueError(f"{len(arrays)} arrays for an EWC state of {len(variables)}.")
        for var, a in zip(variables, arrays):
            var.assign(a)

    def penalty(self):
        """(lambda / 2) sum_t sum_i F_t,i (w_i - w*_t,i)^2."""
        quad = tf.add_n([tf.reduce_sum(f * tf.square(w) - 2.0 * fa * w)
                         for f, fa, w in zip(self.fisher_sum, self.fisher_anchor,
                                             self.model.trainable_variables)])
        return 0.5 * self.strength * (quad + self.fisher_anchor_sq)

    def train_step(self, data):
        # Divided by the replica count like `compute_loss`: the gradients summed
        # over replicas weigh the penalty once.
        x, y, sample_weight, y_pred, loss, grads = self.loss_and_gradients(
            data, lambda: self.penalty() / distribute.num_replicas())
        self.optimizer.apply(grads, self.model.trainable_variables)
        self.record_loss(loss, tf.shape(y_pred)[0])
        self.penalty_tracker.update_state(self.penalty())
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

"""Second objectives: each returns the direction v that a geodesic step tilts toward.

Objectives are Keras layers so that their state (target weights, masks) is
tracked, saved in `.keras` files and restored by `BackupAndRestore` together
with the model they steer. They hold no trainable weights.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfgeo import metric
from tfgeo import vectors


class Objective(keras.layers.Layer):
    """Base class: `direction(model, inputs, targets)` -> v (list shaped like weights)."""

    #: Whether `direction` needs a data batch (inputs/targets).
    needs_batch = True
    #: Whether `distance` returns a value (a goal point exists).
    has_distance = False

    def direction(self, model, inputs=None, targets=None):
        raise NotImplementedError

    def distance(self, model):
        """Distance from the model to the objective's goal, or None if it has none."""
        return None

    def call(self, inputs):  # Layers must be callable; objectives are not used as layers.
        return inputs


def _shapes(weights):
    return [tuple(int(d) for d in np.shape(w)) for w in weights]


@keras.saving.register_keras_serializable(package="tfgeo")
class TowardTarget(Objective):
    """v = m * (w_target - w): move toward a target weight vector.

    Args:
      target: list of arrays shaped like the model's trainable variables.
      mask: optional list of 0/1 arrays of the same shapes; coordinates with
        mask 0 get no pull (and are left out of `distance`).
      shapes: for deserialisation only (weights are then loaded from the file).
    """

    needs_batch = False
    has_distance = True

    def __init__(self, target=None, mask=None, shapes=None, masked=None, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        if target is None and shapes is None:
            raise ValueError("TowardTarget needs `target` (list of arrays).")
        shapes = _shapes(target) if target is not None else [tuple(s) for s in shapes]
        self.masked = bool(mask is not None) if masked is None else bool(masked)
        if mask is not None and _shapes(mask) != shapes:
            raise ValueError(f"mask shapes {_shapes(mask)} differ from target shapes {shapes}.")
        self._shape_list = shapes
        self.targets = [
            self.add_weight(
                shape=s, initializer="zeros", trainable=False, name=f"target_{i}",
                dtype=None if target is None else np.asarray(target[i]).dtype.name,
            )
            for i, s in enumerate(shapes)
        ]
        self.masks = (
            [self.add_weight(shape=s, initializer="ones", trainable=False, name=f"mask_{i}",
                             dtype=None if target is None else np.asarray(target[i]).dtype.name)
             for i, s in enumerate(shapes)]
            if self.masked else []
        )
        if target is not None:
            self.set_target(target, mask)
        self.built = True

    def set_target(self, target, mask=None):
        """Replaces the target (and mask, when the objective is masked)."""
        if _shapes(target) != self._shape_list:
            raise ValueError(f"target shapes {_shapes(target)} differ from {self._shape_list}.")
        for var, t in zip(self.targets, target):
            var.assign(np.asarray(t))
        if mask is not None:
            if not self.masked:
                raise ValueError("This TowardTarget was built without a mask.")
            for var, m in zip(self.masks, mask):
                var.assign(np.asarray(m))

    def _difference(self, model):
        _check_shapes(model, self._shape_list)
        diff = [tf.convert_to_tensor(t) - tf.convert_to_tensor(w)
                for t, w in zip(self.targets, metric.backing_variables(model))]
        if self.masked:
            diff = vectors.multiply(diff, [tf.convert_to_tensor(m) for m in self.masks])
        return diff

    def direction(self, model, inputs=None, targets=None):
        return self._difference(model)

    def distance(self, model):
        """||m * (w_target - w)||."""
        return vectors.norm(self._difference(model))

    def get_config(self):
        config = super().get_config()
        config.update(shapes=[list(s) for s in self._shape_list], masked=self.masked)
        return config


@keras.saving.register_keras_serializable(package="tfgeo")
class TaskLossDescent(Objective):
    """v = -grad_w L(model(x), y): descend a task loss on the given batch.

    Args:
      loss: a Keras loss (name, function or `keras.losses.Loss`); default
        sparse categorical cross-entropy on logits.
    """

    def __init__(self, loss=None, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.loss = keras.losses.get(
            loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
        self.built = True

    def direction(self, model, inputs=None, targets=None):
        if inputs is None or targets is None:
            raise ValueError("TaskLossDescent needs a batch: inputs and targets.")
        variables = metric.backing_variables(model)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            loss = self.loss(targets, model(inputs, training=False))
        grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return [-g for g in grads]

    def get_config(self):
        config = super().get_config()
        config.update(loss=keras.losses.serialize(self.loss))
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["loss"] = keras.losses.deserialize(config["loss"])
        return cls(**config)


def _check_shapes(model, shapes):
    model_shapes = [tuple(int(d) for d in w.shape) for w in model.trainable_variables]
    if model_shapes != list(shapes):
        raise ValueError(
            "Objective was built for weights of shapes "
            f"{list(shapes)} but the model's trainable variables have shapes {model_shapes}."
        )

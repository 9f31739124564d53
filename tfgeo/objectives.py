"""Second objectives: each returns the direction v that a geodesic step tilts toward.

Objectives are Keras layers so that their state (target weights, masks) is
tracked, saved in `.keras` files and restored by `BackupAndRestore` together
with the model they steer. They hold no trainable weights.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfgeo import vectors
from tfgeo import weights as weights_lib


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

    def check_model(self, model) -> None:
        """Raises ValueError if this objective cannot steer `model`."""

    def call(self, inputs):  # Layers must be callable; objectives are not used as layers.
        return inputs


def _shapes(weights):
    return [tuple(int(d) for d in np.shape(w)) for w in weights]


def _pull_mask(pull, keep):
    """The pulled coordinates (1) from either `pull` or `keep` (its complement)."""
    if pull is not None and keep is not None:
        raise ValueError("Give TowardTarget either pull= or keep=, not both.")
    if keep is not None:
        _check_binary(keep, "keep")
        return [1.0 - np.asarray(k) for k in keep]
    if pull is not None:
        _check_binary(pull, "pull")
    return pull


def _check_binary(masks, argument):
    for i, m in enumerate(masks):
        m = np.asarray(m)
        if not np.all((m == 0) | (m == 1)):
            bad = m[(m != 0) & (m != 1)].ravel()[:3]
            raise ValueError(f"{argument}[{i}] must hold only 0 and 1, found {bad.tolist()}.")


@keras.saving.register_keras_serializable(package="tfgeo")
class TowardTarget(Objective):
    """v = m * (w_target - w): move toward a target weight vector.

    Args:
      target: list of arrays shaped like the model's trainable variables.
      pull: optional 0/1 arrays of the same shapes: the coordinates pulled
        toward the target (1); the others (0) get no pull, move freely, and
        are left out of `distance`.
      keep: the complement, as a pruning mask reads: 1 marks a weight that is
        kept (free), 0 one that is pulled toward the target (to zero, for a
        pruned target). Give at most one of `pull` and `keep`.
      shapes, masked: for deserialisation only (weights are then loaded from the file).
    """

    needs_batch = False
    has_distance = True

    def __init__(self, target=None, pull=None, keep=None, shapes=None, masked=None, **kwargs):
        if "mask" in kwargs:
            raise TypeError("TowardTarget takes pull= (the coordinates pulled toward the target) "
                            "or keep= (a pruning mask: 1 = kept and free, 0 = pulled), not mask=.")
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        if target is None and shapes is None:
            raise ValueError("TowardTarget needs `target` (list of arrays).")
        pull = _pull_mask(pull, keep)
        shapes = _shapes(target) if target is not None else [tuple(s) for s in shapes]
        self.masked = bool(pull is not None) if masked is None else bool(masked)
        if pull is not None and _shapes(pull) != shapes:
            raise ValueError(f"mask shapes {_shapes(pull)} differ from target shapes {shapes}.")
        self._shape_list = shapes
        dtypes = [None] * len(shapes) if target is None else [
            np.asarray(t).dtype.name for t in target]
        self.targets = [
            self.add_weight(shape=s, initializer="zeros", trainable=False, name=f"target_{i}",
                            dtype=d)
            for i, (s, d) in enumerate(zip(shapes, dtypes))
        ]
        self.masks = (
            [self.add_weight(shape=s, initializer="ones", trainable=False, name=f"mask_{i}",
                             dtype=d)
             for i, (s, d) in enumerate(zip(shapes, dtypes))]
            if self.masked else []
        )
        if target is not None:
            self.set_target(target, pull=pull)
        self.built = True

    def set_target(self, target, pull=None, keep=None):
        """Replaces the target (and the mask, given as `pull` or `keep`)."""
        if _shapes(target) != self._shape_list:
            raise ValueError(f"target shapes {_shapes(target)} differ from {self._shape_list}.")
        if not all(np.isfinite(np.asarray(t)).all() for t in target):
            raise ValueError("target has NaN or Inf entries.")
        pull = _pull_mask(pull, keep)
        for var, t in zip(self.targets, target):
            var.assign(np.asarray(t))
        if pull is not None:
            if not self.masked:
                raise ValueError("This TowardTarget was built without a mask.")
            for var, m in zip(self.masks, pull):
                var.assign(np.asarray(m))

    def check_model(self, model):
        if _shapes(model.trainable_variables) != list(self._shape_list):
            raise ValueError(
                "Objective was built for weights of shapes "
                f"{list(self._shape_list)} but the model's trainable variables have shapes "
                f"{_shapes(model.trainable_variables)}.")
        for t, w in zip(self.targets, model.trainable_variables):
            if t.dtype != w.dtype:
                raise ValueError(f"target dtype {t.dtype} differs from the model's weight "
                                 f"{w.path} dtype {w.dtype}: build the target in the model's dtype.")

    def _difference(self, model):
        self.check_model(model)
        diff = [tf.convert_to_tensor(t) - tf.convert_to_tensor(w)
                for t, w in zip(self.targets, weights_lib.backing_variables(model))]
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
        variables = weights_lib.backing_variables(model)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            loss = self.loss(targets, model(inputs, training=False))
        grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return [-g for g in vectors.dense(grads)]

    def get_config(self):
        config = super().get_config()
        config.update(loss=keras.losses.serialize(self.loss))
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["loss"] = keras.losses.deserialize(config["loss"])
        return cls(**config)

"""A restoring objective: descend a new task's loss while pulling a memory back to stored outputs.

    v = -grad_w [ L(f(x), y) + strength * (1/b) sum_i D(f(x~_i), z~_i) ]
      = -grad_w L(f(x), y) - strength * (1/b) sum_i J_i^T r_i,

for a new-task batch (x, y) and a batch of b memory inputs x~_i drawn from a
fixed memory with stored outputs z~_i (the logits the network had when the
inputs were stored). D is an output metric's divergence
(`OutputMetric.divergence`: KL(softmax(z~) || softmax(f)) for the Fisher, half
the squared distance for the Euclidean metric) and r_i = dD/df its residual
(`OutputMetric.residual`: softmax(f) - softmax(z~) for the Fisher), so the
memory term is the Gauss-Newton gradient of the distance back to the stored
function, re-linearised at every step. A geodesic step under the metric on
the memory then moves down the new task's loss while every step also undoes
the drift on the memory accumulated by the steps before (each step's metric
only limits the change from the *current* point).

The memory lives in non-trainable variables (saved with the objective) and
each step draws `memory_batch_size` distinct rows uniformly (stateless random
ops from a Keras `SeedGenerator`, so the step compiles under XLA), as
`tfgeo.continual.replay.MemoryModel` does.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfgeo.continual import memory as memory_lib
from tfgeo import objectives
from tfgeo import output_metrics
from tfgeo import weights as weights_lib


@keras.saving.register_keras_serializable(package="tfgeo")
class RestoringDescent(objectives.Objective):
    """v = -grad [L_new + strength * mean_i D(f(x~_i), z~_i)] (module docstring).

    Args:
      memory_inputs: an array [M, ...] or a dict of arrays [M, ...] (the
        network's inputs, e.g. {"x": images, "task": task ids}).
      memory_outputs: [M, C] stored outputs (logits) of those inputs.
      strength: weight >= 0 of the restoring term (0: `TaskLossDescent`).
      output_metric: whose divergence measures the distance to the stored
        outputs (a name from `tfgeo.output_metrics.NAMES`).
      memory_batch_size: b, memory rows per step (min(b, M), distinct).
      seed: seed of the memory draws (None: from Keras's global seed).
      loss: the new task's loss (default sparse cross-entropy on logits).
    """

    def __init__(self, memory_inputs, memory_outputs, strength: float = 1.0,
                 output_metric: str = "fisher", memory_batch_size: int = 128,
                 seed: int | None = None, loss=None, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        if not (np.isfinite(strength) and strength >= 0):
            raise ValueError(f"strength must be a finite number >= 0, got {strength}.")
        if int(memory_batch_size) < 1:
            raise ValueError(f"memory_batch_size must be >= 1, got {memory_batch_size}.")
        self.strength = float(strength)
        self.output_metric_name = output_metric
        self.divergence_metric = output_metrics.get(output_metric)
        self.memory_batch_size = int(memory_batch_size)
        self.seed = None if seed is None else int(seed)
        self.loss = keras.losses.get(
            loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        outputs = np.asarray(memory_outputs)
        if outputs.ndim != 2 or outputs.dtype.kind != "f":
            raise ValueError(f"memory_outputs must be [M, C] float outputs, got shape "
                             f"{outputs.shape} of {outputs.dtype}.")
        if not np.isfinite(outputs).all():
            raise ValueError("memory_outputs have NaN or Inf entries.")
        arrays = dict(memory_inputs) if isinstance(memory_inputs, dict) else memory_inputs
        self.memory_size = memory_lib.num_rows(arrays, outputs, "outputs")
        self.memory_inputs, self.memory_outputs = memory_lib.store(
            self, arrays, outputs, "float32", "memory_outputs")
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self.built = True

    def sample_indices(self):
        """[min(b, M)] distinct memory rows, uniformly random."""
        return memory_lib.sample_indices(self.memory_size, self.memory_batch_size,
                                         self.seed_generator)

    def memory_batch(self, indices):
        return memory_lib.gather(self.memory_inputs, self.memory_outputs, indices)

    def restoring_loss(self, model, indices=None):
        """mean_i D(f(x~_i), z~_i) on the memory rows `indices` (default: all)."""
        if indices is None:
            indices = tf.range(self.memory_size)
        inputs, stored = self.memory_batch(indices)
        outputs = model(inputs, training=False)
        return tf.reduce_mean(self.divergence_metric.divergence(
            outputs, tf.cast(stored, outputs.dtype)))

    def direction(self, model, inputs=None, targets=None):
        if inputs is None or targets is None:
            raise ValueError("RestoringDescent needs a batch: inputs and targets.")
        variables = weights_lib.backing_variables(model)
        indices = self.sample_indices() if self.strength > 0 else None
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            total = self.loss(targets, model(inputs, training=False))
            if indices is not None:
                total = total + self.strength * self.restoring_loss(model, indices)
        grads = tape.gradient(total, variables,
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return [-g for g in grads]

    def get_config(self):
        config = super().get_config()
        config.update(memory_inputs=memory_lib.spec(self.memory_inputs),
                      memory_outputs=memory_lib.spec(self.memory_outputs), strength=self.strength,
                      output_metric=self.output_metric_name,
                      memory_batch_size=self.memory_batch_size, seed=self.seed,
                      loss=keras.losses.serialize(self.loss))
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["memory_inputs"] = memory_lib.zeros(config["memory_inputs"])
        config["memory_outputs"] = memory_lib.zeros(config["memory_outputs"])
        config["loss"] = keras.losses.deserialize(config["loss"])
        return cls(**config)

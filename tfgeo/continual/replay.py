"""Rehearsal baselines for continual learning: experience replay and dark experience replay.

Both train `model` on new-task batches (x, y) and, in the same step, on a
batch of b examples drawn from a fixed memory of M earlier-task examples:

    replay  L = CE(y, f(x)) + alpha * (1/b) sum_i CE(y~_i, f(x~_i)),
    der     L = CE(y, f(x)) + alpha * (1/(b C)) sum_i ||f(x~_i) - z~_i||^2,

where CE(y, f(x)) is the compiled loss, (x~_i, y~_i) are stored labelled
examples and z~_i [C] the logits of the network when x~_i was stored (DER,
Buzzega et al. 2020; `network_logits` computes them). DER's mean squared
error is over all b * C logits, as `F.mse_loss` in the authors' code.

`MemoryModel` is the shared mechanism (also behind `tfgeo.continual.output_distance.
FIPModel`): the memory lives in non-trainable variables, and each step draws
b distinct indices uniformly (the top b of M uniform draws from a Keras
`SeedGenerator`: stateless random ops, so the step compiles under XLA). The
memory here is filled once (e.g. at a task boundary), not by reservoir
sampling during training as in Buzzega et al.; the stored logits are those of
the network that `network_logits` was given.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfgeo import distribute
from tfgeo.continual import memory as memory_lib
from tfgeo import model_wrapper

MODES = ("replay", "der")


def network_logits(model: keras.Model, inputs, batch_size: int = 256) -> np.ndarray:
    """[M, C] logits of `model` (inference mode) on `inputs` (an array or a dict of arrays
    with leading dimension M): DER's stored logits, FIP's previous-network outputs."""
    return np.asarray(model.predict(inputs, batch_size=batch_size, verbose=0))


class MemoryModel(model_wrapper.ModelWrapper):
    """`model` trained on the compiled loss of new-task batches plus
    alpha * `memory_term` on a random batch of a fixed memory.

    Subclasses define `memory_term(logits, targets) -> scalar` (logits
    [b, C] of the network on the memory batch, targets its stored rows) and
    `term_name`, the name of the metric that tracks the term (before alpha).

    Args:
      model: a built Keras model that outputs logits.
      memory_inputs: an array [M, ...] or a dict of arrays [M, ...] (the
        network's inputs, e.g. {"x": images, "task": task ids}).
      memory_targets: [M] integer labels or [M, C] stored logits (subclass).
      alpha: weight >= 0 of the memory term.
      memory_batch_size: b, memory examples per step (min(b, M) are drawn,
        distinct within a step).
      seed: seed of the memory draws (None: from Keras's global seed).

    The memory is copied into non-trainable variables (integer arrays keep
    their dtype, float arrays take the dtype of the network's weights).

    Saving: `.keras` files keep the memory (its variables are saved with the
    weights; the config records only their shapes and dtypes).
    """

    config_keys = ("alpha", "memory_batch_size", "seed")
    term_name = "memory_term"
    targets_argument = "memory_targets"  # the constructor's name for the targets

    def __init__(self, model: keras.Model, memory_inputs, memory_targets, alpha: float = 1.0,
                 memory_batch_size: int = 32, seed: int | None = None, **kwargs):
        super().__init__(model, **kwargs)
        if not (np.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha}.")
        if int(memory_batch_size) < 1:
            raise ValueError(f"memory_batch_size must be >= 1, got {memory_batch_size}.")
        self.alpha = float(alpha)
        self.memory_batch_size = int(memory_batch_size)
        self.seed = None if seed is None else int(seed)
        memory_targets = np.asarray(memory_targets)
        self.check_targets(memory_targets)
        arrays = dict(memory_inputs) if isinstance(memory_inputs, dict) else memory_inputs
        self.memory_size = memory_lib.num_rows(arrays, memory_targets)
        self.memory_inputs, self.memory_targets = memory_lib.store(
            self, arrays, memory_targets, model.trainable_variables[0].dtype, "memory_targets")
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self.term_tracker = keras.metrics.Mean(name=self.term_name)
        self.built = True

    def check_targets(self, targets: np.ndarray) -> None:
        """Raises unless `targets` suit `memory_term`."""

    def memory_term(self, logits, targets):
        raise NotImplementedError

    def sample_indices(self):
        """[min(b, M)] distinct memory indices, uniformly random (int32)."""
        return memory_lib.sample_indices(self.memory_size, self.memory_batch_size,
                                         self.seed_generator)

    def memory_batch(self, indices):
        """(inputs, targets) of the memory rows `indices`."""
        return memory_lib.gather(self.memory_inputs, self.memory_targets, indices)

    def memory_loss(self, indices=None, training: bool = False):
        """`memory_term` on the memory rows `indices` (default: the whole memory)."""
        if indices is None:
            indices = tf.range(self.memory_size)
        inputs, targets = self.memory_batch(indices)
        return self.memory_term(self.model(inputs, training=training), targets)

    def get_memory(self):
        """(inputs, targets) of the whole memory as arrays."""
        return memory_lib.to_arrays(self.memory_inputs), memory_lib.to_arrays(self.memory_targets)

    def train_step(self, data):
        indices = self.sample_indices()
        terms = []

        def penalty():
            term = self.memory_loss(indices, training=True)
            terms.append(term)
            # Divided by the replica count like `compute_loss`, so the gradients
            # summed over replicas weigh it by alpha.
            return (self.alpha / distribute.num_replicas()) * term

        x, y, sample_weight, y_pred, loss, grads = self.loss_and_gradients(data, penalty)
        self.optimizer.apply(grads, self.model.trainable_variables)
        self.record_loss(loss, tf.shape(y_pred)[0])
        self.term_tracker.update_state(terms[0])
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        config["memory_inputs"] = memory_lib.spec(self.memory_inputs)
        config[self.targets_argument] = memory_lib.spec(self.memory_targets)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Zero-filled memory of the saved shapes; loading the weights fills it.
        config = dict(config)
        config["memory_inputs"] = memory_lib.zeros(config["memory_inputs"])
        config[cls.targets_argument] = memory_lib.zeros(config[cls.targets_argument])
        return super().from_config(config, custom_objects)


@keras.saving.register_keras_serializable(package="tfgeo")
class ReplayModel(MemoryModel):
    """Experience replay (`mode="replay"`, memory targets: [M] integer labels)
    or dark experience replay (`mode="der"`, memory targets: [M, C] logits of
    the network when the examples were stored, e.g. `network_logits`).

    The memory term, tracked as `replay_loss` (before alpha), is the mean
    sparse cross-entropy from logits on the memory batch (replay) or the mean
    squared error over its b * C logits (der). Other arguments: `MemoryModel`.
    """

    config_keys = ("mode", *MemoryModel.config_keys)
    term_name = "replay_loss"

    def __init__(self, model: keras.Model, memory_inputs, memory_targets, mode: str = "replay",
                 alpha: float = 1.0, memory_batch_size: int = 32, seed: int | None = None,
                 **kwargs):
        if mode not in MODES:
            raise ValueError(f"Unknown mode {mode!r}; expected one of {MODES}.")
        self.mode = mode
        super().__init__(model, memory_inputs, memory_targets, alpha=alpha,
                         memory_batch_size=memory_batch_size, seed=seed, **kwargs)

    def check_targets(self, targets):
        if self.mode == "replay" and (targets.ndim != 1 or targets.dtype.kind not in "iu"):
            raise ValueError(f"mode 'replay' needs [M] integer labels, got shape "
                             f"{targets.shape} of {targets.dtype}.")
        if self.mode == "der" and (targets.ndim != 2 or targets.dtype.kind != "f"):
            raise ValueError(f"mode 'der' needs [M, C] float logits, got shape "
                             f"{targets.shape} of {targets.dtype}.")

    def memory_term(self, logits, targets):
        if self.mode == "replay":
            return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
                targets, logits, from_logits=True))
        return keras.ops.mean(keras.ops.square(logits - keras.ops.cast(targets, logits.dtype)))

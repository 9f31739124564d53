"""Training a base classifier (Adam, optional cosine decay), as every runner needs one."""
from __future__ import annotations

import os

import keras
import tensorflow as tf

from tfgeo import data

SCHEDULES = ("constant", "cosine")


def train_classifier(model: keras.Model, train: data.ArraySplit, validation=None,
                     epochs: int = 20, batch_size: int = 128, learning_rate: float = 1e-3,
                     lr_schedule: str = "constant", seed: int = 0, backup_dir: str | None = None,
                     jit_compile: bool = False, verbose: int = 2) -> keras.callbacks.History:
    """Trains a logits classifier with Adam on sparse cross-entropy.

    Args:
      train, validation: `data.ArraySplit`s (validation may be None).
      lr_schedule: 'constant' or 'cosine' (cosine decay to 0 over all steps).
      backup_dir: if given, `BackupAndRestore` there: an interrupted run
        resumes from its last epoch.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}.")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}.")
    if lr_schedule not in SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {lr_schedule!r}.")
    steps = epochs * -(-len(train.y) // batch_size)
    lr = (keras.optimizers.schedules.CosineDecay(learning_rate, steps)
          if lr_schedule == "cosine" else learning_rate)
    model.compile(keras.optimizers.Adam(lr),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=jit_compile)
    if validation is not None and tf.distribute.get_strategy().num_replicas_in_sync > 1:
        # Keras's evaluate under MirroredStrategy fails on a last batch that
        # splits unevenly across replicas; the runners evaluate afterwards.
        validation = None
    callbacks = []
    if backup_dir:
        callbacks.append(keras.callbacks.BackupAndRestore(os.path.join(backup_dir)))
    return model.fit(
        data.to_dataset(train, batch_size, shuffle=True, seed=seed), epochs=epochs,
        validation_data=None if validation is None else data.to_dataset(validation, 1024),
        verbose=verbose, callbacks=callbacks, shuffle=False,  # the pipeline shuffles
    )

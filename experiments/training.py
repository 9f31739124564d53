"""Training a base classifier (Adam, optional cosine decay), resumable epoch by epoch.

Each epoch shuffles the training split with its own seed (derived from the
run's seed and the epoch), so a run that resumes from its checkpoint after
epoch k sees exactly the batches the uninterrupted run sees, and ends with
the same weights.
"""
from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np
from absl import logging

from tfgeo import classification
from tfgeo import distribute
from tfgeo import losses

from . import config as config_lib
from . import data
from . import networks
from . import results
from . import run_state as run_state_lib
from . import tensorboard

SCHEDULES = config_lib.LR_SCHEDULES


def epoch_seed(seed: int, epoch: int) -> int:
    return int(seed) * 100_003 + int(epoch)


def train_classifier(model: keras.Model, train: data.ArraySplit, validation=None,
                     epochs: int = 20, batch_size: int = 128, learning_rate: float = 1e-3,
                     lr_schedule: str = "constant", seed: int = 0, jit_compile: bool = False,
                     verbose: int = 2, state: run_state_lib.RunState | None = None,
                     augment: str = "none", validation_name: str = "val") -> dict:
    """Trains a logits classifier with Adam on sparse cross-entropy.

    Args:
      train, validation: `data.ArraySplit`s (validation may be None).
      lr_schedule: 'constant' or 'cosine' (cosine decay to 0 over all steps).
      state: if given, the weights, optimizer state and history are saved in
        it after every epoch, and training resumes after `state.completed` epochs.
      augment: 'none', 'crop_flip' or 'auto' (crop_flip for 32x32x3 images).
      validation_name: prefix of the metrics on `validation` in the progress
        output and the history ('test' when it is the test split).
    Returns:
      {metric name: [value per epoch]} (loss, accuracy, {validation_name}_loss,
      {validation_name}_accuracy).
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}.")
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate}.")
    if lr_schedule not in SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {lr_schedule!r}.")
    steps = epochs * -(-len(train.y) // batch_size)
    lr = (keras.optimizers.schedules.CosineDecay(learning_rate, steps)
          if lr_schedule == "cosine" else learning_rate)
    model.compile(keras.optimizers.Adam(lr), losses.classification_loss(),
                  metrics=["accuracy"], jit_compile=jit_compile)
    history: dict = {}
    start = 0
    if state is not None and state.completed:
        start, history = state.completed, dict(state.payload["history"])
        model.set_weights(run_state_lib.unpack_weights("model", state.arrays))
        model.optimizer.build(model.trainable_variables)
        for var, value in zip(model.optimizer.variables,
                              run_state_lib.unpack_weights("optimizer", state.arrays)):
            var.assign(value)
        logging.info("Resuming training after epoch %d of %d.", start, epochs)
    evaluations = []
    if validation is not None and (validation_name != "val"
                                   or distribute.num_replicas_in_scope() > 1):
        # Keras names every validation_data metric val_*, a test split is not
        # one; and under several replicas Keras's evaluate fails on a last batch
        # that splits unevenly.
        evaluations = [_EvaluateSplit(validation_name, validation)]
        validation = None
    for epoch in range(start, epochs):
        batches = data.to_dataset(train, batch_size, shuffle=True, seed=epoch_seed(seed, epoch),
                                  augment=resolve_augment(augment, train))
        hooks = evaluations + tensorboard.callbacks("training")
        if distribute.num_replicas_in_scope() > 1:
            # One device's batches, each split over the replicas (and workers).
            fitted = distribute.fit(model, batches, epochs=epoch + 1, initial_epoch=epoch,
                                    callbacks=hooks, verbose=verbose)
        else:
            fitted = model.fit(
                batches, epochs=epoch + 1, initial_epoch=epoch,
                validation_data=None if validation is None else data.to_dataset(validation, 1024),
                verbose=verbose, shuffle=False,  # the pipeline shuffles
                callbacks=hooks).history
        for name, values in fitted.items():
            history.setdefault(name, []).extend(float(v) for v in values)
        if not all(np.isfinite(v[-1]) for v in history.values()):
            raise results.NonFiniteError(
                f"training diverged at epoch {epoch + 1} (loss {history['loss'][-1]}); "
                "lower the learning rate.")
        if state is not None:
            arrays = run_state_lib.pack_weights("model", model.get_weights())
            arrays.update(run_state_lib.pack_weights(
                "optimizer", [v.numpy() for v in model.optimizer.variables]))
            state.save(epoch + 1, {"history": history}, arrays)
    return history


class _EvaluateSplit(keras.callbacks.Callback):
    """Adds `{name}_accuracy` and `{name}_loss` on `split` to each epoch's logs
    (before the progress line is printed: Keras appends its progress logger
    last). Calls the model (`classification`), which any strategy allows."""

    def __init__(self, name: str, split):
        super().__init__()
        self.name, self.split = name, split

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            scores = classification.evaluate_classifier(self.model, self.split.x, self.split.y)
            logs.update({f"{self.name}_{k}": v for k, v in scores.items()})


def resolve_augment(augment: str, split) -> str:
    """'auto' is crop_flip for 32x32 colour images, none otherwise."""
    if augment != "auto":
        return augment
    return "crop_flip" if tuple(split.x.shape[1:]) == (32, 32, 3) else "none"


@dataclasses.dataclass
class BaseTrainingConfig:
    run: config_lib.RunConfig = config_lib.nested(config_lib.RunConfig, output_dir="runs/train",
                                                  compile="graph")
    data: config_lib.DataConfig = config_lib.nested(config_lib.DataConfig)
    network: config_lib.NetworkConfig = config_lib.nested(config_lib.NetworkConfig)
    train: config_lib.TrainConfig = config_lib.nested(config_lib.TrainConfig)


def run(config: BaseTrainingConfig) -> results.Report:
    """Trains (or resumes training) a zoo network; saves model.keras."""
    config_lib.validate(config)
    tensorboard.configure(config.run)
    networks.check_fits(config.network, config.data.dataset)
    state = run_state_lib.open_run(config)
    ds, train, validation = data.load_run_splits(config.data, config.run.seed)
    keras.utils.set_random_seed(config.run.seed)
    model = networks.build(config.network, ds.input_shape, ds.num_classes)
    t = config.train
    # Without a validation split, the test split is shown each epoch, named so.
    train_classifier(model, train, validation if validation is not None else ds.test,
                     epochs=t.epochs, batch_size=t.batch_size, learning_rate=t.learning_rate,
                     lr_schedule=t.lr_schedule, seed=config.run.seed,
                     jit_compile=config_lib.jit_compile(config.run.compile, model),
                     verbose=config.run.verbose, state=state, augment=t.augment,
                     validation_name="val" if validation is not None else "test")
    train_eval = classification.evaluate_classifier(model, train.x, train.y)
    test_eval = classification.evaluate_classifier(model, ds.test.x, ds.test.y)
    summary = {"train_loss": train_eval["loss"], "train_accuracy": train_eval["accuracy"],
               "test_loss": test_eval["loss"], "test_accuracy": test_eval["accuracy"],
               "params": int(model.count_params())}
    results.save_model(model, state.artifact("model.keras"))
    return results.Report(f"{config.network.model} on {ds.name}",
                          {"dataset": ds.name, "summary": summary,
                           "history": state.payload.get("history", {})},
                          [summary], list(summary))


def start_network(path: str | None, network: config_lib.NetworkConfig,
                  train: config_lib.TrainConfig, ds: data.ArrayDataset,
                  train_split: data.ArraySplit, validation, state: run_state_lib.RunState,
                  seed: int, name: str = "start.keras", argument: str = "--start_model",
                  jit_compile: bool = False, verbose: int = 2) -> keras.Model:
    """The run's starting network: loaded from `path`, or trained with `train`
    from `seed` and saved as `name` in the run's folder (reused by a resumed
    run with the same flags, never by a run with other flags)."""
    if path:
        model = networks.load(path, ds.input_shape, ds.num_classes, argument)
        logging.info("Starting network: %s", path)
        return model
    if state.reusable(name):
        logging.info("Reusing %s trained earlier by this run.", name)
        return networks.load(os.path.join(state.output_dir, name), ds.input_shape, ds.num_classes,
                    argument)
    keras.utils.set_random_seed(seed)  # same seed, same starting network
    model = networks.build(network, ds.input_shape, ds.num_classes)
    logging.info("Training %s (%s, %d epochs, seed %d)...", name, network.model, train.epochs,
                 seed)
    train_classifier(model, train_split, validation, epochs=train.epochs,
                     batch_size=train.batch_size, learning_rate=train.learning_rate,
                     lr_schedule=train.lr_schedule, seed=seed, jit_compile=jit_compile,
                     verbose=verbose, augment=train.augment)
    results.save_model(model, state.artifact(name))
    return model

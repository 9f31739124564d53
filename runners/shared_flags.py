"""Flags every runner shares (model, data, base training, seed, output) and
the two steps they drive: loading the data and building or loading the model.

Each `define_*` is called once, at import of the runner that wants it.
"""
from __future__ import annotations

import os
import sys

from absl import flags
from absl import logging
import numpy as np

import models
from tfgeo import data
from tfgeo import results
from tfgeo import training

FLAGS = flags.FLAGS


def define_model_and_data(default_model="mlp", default_dataset="digits"):
    flags.DEFINE_enum("model", default_model, list(models.names()), "Zoo model.")
    flags.DEFINE_list("hidden", ["300", "100"], "Hidden widths for --model=mlp.")
    flags.DEFINE_bool("batch_norm", False, "Batch normalization for VGG models.")
    flags.DEFINE_float("width", 1.0, "Channel-width multiplier for VGG models (> 0).")
    flags.DEFINE_enum("dataset", default_dataset, list(data.NAMES), "Dataset.")
    flags.DEFINE_string("image_folder", None, "Folder or .tar.gz for --dataset=image_folder.")
    flags.DEFINE_string("data_dir", None, f"tfds cache folder (default ${data.DATA_DIR_ENV}).")
    flags.DEFINE_string("manual_dir", None, "Folder of original dataset files for offline tfds "
                        f"(default ${data.MANUAL_DIR_ENV}).")
    flags.register_validator("width", lambda v: v > 0, "--width must be > 0.")
    flags.register_validator("hidden", lambda v: all(s.isdigit() and int(s) > 0 for s in v),
                             "--hidden must be positive integers.")
    flags.register_validator("manual_dir", lambda v: v is None or os.path.isdir(v),
                             "--manual_dir must be an existing folder.")
    flags.register_validator("image_folder", lambda v: v is None or os.path.exists(v),
                             "--image_folder does not exist.")


def define_training(prefix="", epochs=20, batch_size=128, learning_rate=1e-3, lr_schedule="constant"):
    """Base-network training flags, named `{prefix}epochs` etc."""
    flags.DEFINE_integer(f"{prefix}epochs", epochs, "Training epochs.", lower_bound=1)
    flags.DEFINE_integer(f"{prefix}batch_size", batch_size, "Training batch size.", lower_bound=1)
    flags.DEFINE_float(f"{prefix}learning_rate", learning_rate, "Adam learning rate (> 0).")
    flags.DEFINE_enum(f"{prefix}lr_schedule", lr_schedule, list(training.SCHEDULES),
                      "Learning-rate schedule over all training steps.")
    flags.register_validator(f"{prefix}learning_rate", lambda v: v > 0,
                             f"--{prefix}learning_rate must be > 0.")


def define_run(output_dir, validation_fraction=0.0):
    flags.DEFINE_integer("seed", 0, "Random seed (data split, initialisation, shuffling).")
    flags.DEFINE_string("output_dir", output_dir, "Folder for the run's outputs.")
    flags.DEFINE_float("validation_fraction", validation_fraction,
                       "Hold out this fraction of the training split for validation (tuning "
                       "without the test set).")
    flags.DEFINE_integer("train_examples", 0, "Use a seeded random subset of this many training "
                         "examples (after the validation split); 0 uses all.", lower_bound=0)
    define_strategy()
    flags.register_validator("validation_fraction", lambda v: 0.0 <= v < 1.0,
                             "--validation_fraction must be in [0, 1).")
    flags.register_validator("output_dir", results.writable_directory,
                             "--output_dir must be a writable directory path.")


def define_strategy():
    flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker", "tpu"],
                      "tf.distribute strategy: default (one device), mirrored (all local "
                      "GPUs), multi_worker (TF_CONFIG cluster), tpu (see --tpu).")
    flags.DEFINE_string("tpu", None, "TPU name or grpc:// address for --strategy=tpu.")
    flags.DEFINE_integer("logical_cpus", 0, "Split the CPU into this many logical devices (for "
                         "--strategy=mirrored without GPUs, e.g. to test it); 0 leaves it whole.",
                         lower_bound=0)


def model_options():
    if FLAGS.model == "mlp":
        return {"hidden": tuple(int(h) for h in FLAGS.hidden)}
    if FLAGS.model.startswith("vgg"):
        return {"batch_norm": FLAGS.batch_norm, "width": FLAGS.width}
    return {}


def check_model_fits_dataset():
    """Exits with one line if the model cannot take the dataset's images."""
    if FLAGS.model.startswith("vgg") and FLAGS.dataset in ("digits", "mnist"):
        sys.exit(f"FATAL --model={FLAGS.model} needs 32x32 inputs; --dataset={FLAGS.dataset} "
                 "has 8x8 or 28x28 images.")


def load_data() -> data.ArrayDataset:
    try:
        ds = data.load(FLAGS.dataset, seed=FLAGS.seed, data_dir=FLAGS.data_dir,
                       manual_dir=FLAGS.manual_dir, image_folder=FLAGS.image_folder)
    except ValueError as e:
        sys.exit(f"FATAL --dataset={FLAGS.dataset}: {e}")
    logging.info("%s: %d train / %d test, input %s, %d classes", ds.name, len(ds.train.y),
                 len(ds.test.y), ds.input_shape, ds.num_classes)
    return ds


def build_model(ds: data.ArrayDataset):
    try:
        return models.get(FLAGS.model, ds.input_shape, ds.num_classes, **model_options())
    except ValueError as e:  # e.g. a conv net on inputs too small for its pooling
        sys.exit(f"FATAL --model={FLAGS.model} does not fit --dataset={FLAGS.dataset}: {e}")


def split_validation(ds: data.ArrayDataset):
    """(train, validation) splits; validation is None when the fraction is 0."""
    train, validation = ds.train, None
    if FLAGS.validation_fraction > 0:
        train, validation = data.validation_split(ds.train, FLAGS.validation_fraction, FLAGS.seed)
    if 0 < FLAGS.train_examples < len(train.y):
        keep = np.random.default_rng(FLAGS.seed).permutation(len(train.y))[:FLAGS.train_examples]
        train = data.ArraySplit(train.x[np.sort(keep)], train.y[np.sort(keep)])
        logging.info("Using %d of the training examples (--train_examples).", len(train.y))
    return train, validation


def train_base(model, train_split, val_split, prefix="", backup_dir=None, jit_compile=False,
               seed=None):
    """Trains `model` with the `{prefix}*` training flags (and --seed unless given)."""
    return training.train_classifier(
        model, train_split, val_split, epochs=FLAGS[f"{prefix}epochs"].value,
        batch_size=FLAGS[f"{prefix}batch_size"].value,
        learning_rate=FLAGS[f"{prefix}learning_rate"].value,
        lr_schedule=FLAGS[f"{prefix}lr_schedule"].value,
        seed=FLAGS.seed if seed is None else seed,
        backup_dir=backup_dir, jit_compile=jit_compile)


def flag_values(*modules) -> dict:
    """{name: value} of the flags defined by this module and the given runner modules."""
    names = {__name__, *modules}
    return {f.name: f.value for m in names for f in FLAGS.get_key_flags_for_module(m)}


def start_model(path, ds, train_split, val_split, output_dir, prefix="train_",
                flag_name="--start_model"):
    """The run's starting network: loaded from `path` (a `.keras` file), or
    trained with the `{prefix}*` flags and saved as `output_dir/start.keras`
    (reused by a rerun, so a resumed run does not retrain)."""
    import keras

    saved = os.path.join(output_dir, "start.keras")
    source = path or (saved if os.path.exists(saved) else None)
    if source is not None:
        try:
            model = keras.saving.load_model(source)
        except Exception as e:  # noqa: BLE001 - any failure means an unusable file
            sys.exit(f"FATAL {flag_name}={source} cannot be loaded: {type(e).__name__}: "
                     f"{str(e).splitlines()[0] if str(e) else ''}")
        expected = (None, *ds.input_shape)
        got = tuple(model.input_shape) if hasattr(model, "input_shape") else None
        outputs = int(model.output_shape[-1])
        if got != expected or outputs != ds.num_classes:
            sys.exit(f"FATAL {flag_name}={source} takes inputs {got} with {outputs} outputs; "
                     f"--dataset={FLAGS.dataset} has inputs {expected} and {ds.num_classes} "
                     "classes.")
        if not all(np.isfinite(w).all() for w in model.get_weights()):
            sys.exit(f"FATAL {flag_name}={source} has NaN or Inf weights.")
        logging.info("Starting network: %s", source)
        return model
    keras.utils.set_random_seed(FLAGS.seed)  # same seed, same starting network
    model = build_model(ds)
    logging.info("Training the starting network (%d epochs)...", FLAGS[f"{prefix}epochs"].value)
    train_base(model, train_split, val_split, prefix=prefix)
    results.save_model(model, saved)
    return model


def strategy():
    """The --strategy, built before any model (exits with one line if it cannot be)."""
    import tensorflow as tf

    from tfgeo import distribute

    if FLAGS.strategy == "multi_worker":
        sys.exit("FATAL --strategy=multi_worker: Keras 3's fit does not run under "
                 "MultiWorkerMirroredStrategy (keras-team/keras#20585), and the runners use "
                 "fit; drive GeodesicModel with tfgeo.distribute.run_steps instead (tested "
                 "with two worker processes).")
    if FLAGS.logical_cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.logical_cpus)
    try:
        if FLAGS.strategy == "mirrored" and FLAGS.logical_cpus > 1 and not tf.config.list_physical_devices("GPU"):
            chosen = tf.distribute.MirroredStrategy(
                [f"/cpu:{i}" for i in range(FLAGS.logical_cpus)])
        else:
            chosen = distribute.make_strategy(FLAGS.strategy, FLAGS.tpu)
    except ValueError as e:
        sys.exit(f"FATAL --strategy={FLAGS.strategy}: {e}")
    logging.info("Strategy %s: %d replica(s)", FLAGS.strategy, chosen.num_replicas_in_sync)
    if chosen.num_replicas_in_sync > 1 and FLAGS.strategy == "mirrored" and getattr(
            FLAGS, "jit_compile", False):
        # XLA cannot compile a step that reads mirrored variables held on other
        # devices (tensorflow.org/xla/known_issues, "tf.Variable on a different device").
        logging.warning("--jit_compile turned off: XLA does not compile MirroredStrategy steps "
                        "across %d devices.", chosen.num_replicas_in_sync)
        FLAGS.jit_compile = False
    return chosen

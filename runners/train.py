r"""Trains a base network from the zoo and saves it as `.keras`.

    python -m runners.train --model=lenet_300_100 --dataset=mnist \
        --manual_dir=../shared/data/mnist --epochs=20 --output_dir=runs/mnist_mlp

Writes `model.keras` and `results.json` (final train/test loss and accuracy,
and the flags used). Bad flags exit with one line naming the flag before any
data is loaded.
"""
from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from absl import logging

import models
from tfgeo import data
from tfgeo import results

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", "mlp", list(models.names()), "Zoo model.")
flags.DEFINE_list("hidden", ["300", "100"], "Hidden widths for --model=mlp.")
flags.DEFINE_enum("dataset", "digits", list(data.NAMES), "Dataset.")
flags.DEFINE_string("image_folder", None, "Folder or .tar.gz for --dataset=image_folder.")
flags.DEFINE_string("data_dir", None, f"tfds cache folder (default ${data.DATA_DIR_ENV}).")
flags.DEFINE_string("manual_dir", None,
                    f"Folder of original dataset files for offline tfds (default ${data.MANUAL_DIR_ENV}).")
flags.DEFINE_integer("epochs", 20, "Training epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 128, "Batch size.", lower_bound=1)
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate (> 0).")
flags.DEFINE_enum("lr_schedule", "constant", ["constant", "cosine"],
                  "Learning-rate schedule over all training steps.")
flags.DEFINE_float("validation_fraction", 0.0,
                   "Hold out this fraction of the training split for validation (tuning "
                   "without the test set); 0 evaluates on the test split each epoch.")
flags.DEFINE_bool("batch_norm", False, "Batch normalization for VGG models.")
flags.DEFINE_float("width", 1.0, "Channel-width multiplier for VGG models (> 0).")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("output_dir", "runs/train", "Where model.keras and results.json go.")
flags.DEFINE_bool("jit_compile", False, "XLA-compile training (slower for conv nets on CPU).")

flags.register_validator("learning_rate", lambda v: v > 0, "--learning_rate must be > 0.")
flags.register_validator("validation_fraction", lambda v: 0.0 <= v < 1.0,
                         "--validation_fraction must be in [0, 1).")
flags.register_validator("width", lambda v: v > 0, "--width must be > 0.")
flags.register_validator("hidden", lambda v: all(s.isdigit() and int(s) > 0 for s in v),
                         "--hidden must be positive integers.")
flags.register_validator("output_dir", results.writable_directory,
                         "--output_dir must be a writable directory path.")
flags.register_validator("manual_dir", lambda v: v is None or os.path.isdir(v),
                         "--manual_dir must be an existing folder.")
flags.register_validator("image_folder", lambda v: v is None or os.path.exists(v),
                         "--image_folder does not exist.")


def model_options():
    if FLAGS.model == "mlp":
        return {"hidden": tuple(int(h) for h in FLAGS.hidden)}
    if FLAGS.model.startswith("vgg"):
        return {"batch_norm": FLAGS.batch_norm, "width": FLAGS.width}
    return {}


def main(argv):
    del argv
    import keras

    keras.utils.set_random_seed(FLAGS.seed)
    if FLAGS.model.startswith("vgg") and FLAGS.dataset in ("digits", "mnist"):
        sys.exit(f"FATAL --model={FLAGS.model} needs 32x32 inputs; --dataset={FLAGS.dataset} "
                 "has 8x8 or 28x28 images.")
    ds = data.load(FLAGS.dataset, seed=FLAGS.seed, data_dir=FLAGS.data_dir,
                   manual_dir=FLAGS.manual_dir, image_folder=FLAGS.image_folder)
    logging.info("%s: %d train / %d test, input %s, %d classes", ds.name, len(ds.train.y),
                 len(ds.test.y), ds.input_shape, ds.num_classes)
    try:
        model = models.get(FLAGS.model, ds.input_shape, ds.num_classes, **model_options())
    except ValueError as e:  # e.g. a conv net on inputs too small for its pooling
        sys.exit(f"FATAL --model={FLAGS.model} does not fit --dataset={FLAGS.dataset}: {e}")
    if FLAGS.validation_fraction > 0:
        train_split, val_split = data.validation_split(ds.train, FLAGS.validation_fraction, FLAGS.seed)
    else:
        train_split, val_split = ds.train, ds.test
    steps = FLAGS.epochs * -(-len(train_split.y) // FLAGS.batch_size)
    lr = (keras.optimizers.schedules.CosineDecay(FLAGS.learning_rate, steps)
          if FLAGS.lr_schedule == "cosine" else FLAGS.learning_rate)
    model.compile(keras.optimizers.Adam(lr),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=FLAGS.jit_compile)
    train = data.to_dataset(train_split, FLAGS.batch_size, shuffle=True, seed=FLAGS.seed)
    test = data.to_dataset(ds.test, 1024)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    model.fit(train, epochs=FLAGS.epochs, validation_data=data.to_dataset(val_split, 1024), verbose=2,
              callbacks=[keras.callbacks.BackupAndRestore(os.path.join(FLAGS.output_dir, "backup"))])
    train_eval = model.evaluate(data.to_dataset(train_split, 1024), verbose=0, return_dict=True)
    test_eval = model.evaluate(test, verbose=0, return_dict=True)
    summary = {"train_loss": train_eval["loss"], "train_accuracy": train_eval["accuracy"],
               "test_loss": test_eval["loss"], "test_accuracy": test_eval["accuracy"],
               "params": model.count_params()}
    model.save(os.path.join(FLAGS.output_dir, "model.keras"))
    results.write_json(os.path.join(FLAGS.output_dir, "results.json"), {
        "flags": {f.name: f.value for f in FLAGS.get_key_flags_for_module(__name__)},
        "dataset": ds.name, "summary": summary,
    })
    print(results.format_table([summary], list(summary)))


if __name__ == "__main__":
    app.run(main)

r"""Trains a base network from the zoo and saves it as `.keras`.

    python -m runners.train --model=lenet_300_100 --dataset=mnist \
        --manual_dir=../shared/data/mnist --epochs=20 --output_dir=runs/mnist_mlp

Writes `model.keras` and `results.json` (final train/test loss and accuracy,
and the flags used). Bad flags exit with one line naming the flag before any
data is loaded.
"""
from __future__ import annotations

import os

from absl import app
from absl import flags

from runners import shared_flags
from tfgeo import data
from tfgeo import results

FLAGS = flags.FLAGS
shared_flags.define_model_and_data()
shared_flags.define_training()
shared_flags.define_run("runs/train")
flags.DEFINE_bool("jit_compile", False, "XLA-compile training (slower for conv nets on CPU).")


def run():
    import keras

    keras.utils.set_random_seed(FLAGS.seed)
    shared_flags.check_model_fits_dataset()
    ds = shared_flags.load_data()
    model = shared_flags.build_model(ds)
    train_split, val_split = shared_flags.split_validation(ds)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    # Without a validation split, the test split is shown each epoch.
    shared_flags.train_base(model, train_split, val_split if val_split is not None else ds.test,
                            backup_dir=os.path.join(FLAGS.output_dir, "backup"),
                            jit_compile=FLAGS.jit_compile)
    train_eval = model.evaluate(data.to_dataset(train_split, 1024), verbose=0, return_dict=True)
    test_eval = model.evaluate(data.to_dataset(ds.test, 1024), verbose=0, return_dict=True)
    summary = {"train_loss": train_eval["loss"], "train_accuracy": train_eval["accuracy"],
               "test_loss": test_eval["loss"], "test_accuracy": test_eval["accuracy"],
               "params": model.count_params()}
    model.save(os.path.join(FLAGS.output_dir, "model.keras"))
    results.write_json(os.path.join(FLAGS.output_dir, "results.json"), {
        "flags": shared_flags.flag_values(__name__), "dataset": ds.name, "summary": summary,
    })
    print(results.format_table([summary], list(summary)))


def main(argv):
    del argv
    with shared_flags.strategy().scope():
        run()


if __name__ == "__main__":
    app.run(main)

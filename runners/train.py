r"""Trains a base network from the zoo and saves it as `.keras`.

    python -m runners.train --model=lenet_300_100 --dataset=mnist \
        --manual_dir=../shared/data/mnist --epochs=20 --output_dir=runs/mnist_mlp

Writes `model.keras` and `results.json` (final train/test loss and accuracy,
the flags used). Training checkpoints after every epoch and, rerun with the
same flags, resumes to the same weights as an uninterrupted run. Bad flags
exit with one line naming the flag before any data is loaded.
"""
from tfgeo.experiments import training
from tfgeo.runners import common

entry = common.runner(training.BaseTrainingConfig, training.run)

if __name__ == "__main__":
    entry()

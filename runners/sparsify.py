r"""Sparsification: the label-free methods of `tfgeo.sparsify.prune` against label-using peers.

    python -m runners.sparsify --model=lenet_300_100 --dataset=mnist \
        --manual_dir=../shared/data/mnist --sparsities=0.5,0.8,0.9,0.95,0.98 \
        --output_dir=runs/sparsify_mnist

Starts from --start_model (a `.keras` file) or trains one; then each method
carries its own network through the sparsity schedule
(`tfgeo.experiments.sparsify_experiment`): the label-free methods on
--calibration_size unlabelled inputs, the label-using ones on
--label_budget gradient-equivalents per stage; every row records its own
gradient-equivalents and seconds.
Writes results.json (after every stage), accuracy.png, a `.keras` model per
method, and prints a summary table. An interrupted run restarts from its
last completed stage when rerun with the same flags.
"""
from tfgeo.experiments import sparsify_experiment
from tfgeo.runners import common

entry = common.runner(sparsify_experiment.SparsifyConfig, sparsify_experiment.run)

if __name__ == "__main__":
    entry()

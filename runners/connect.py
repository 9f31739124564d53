r"""Connecting two trained networks: the geodesic path against the straight line.

    python -m runners.connect --model=lenet_300_100 --dataset=mnist \
        --manual_dir=../shared/data/mnist --output_dir=runs/connect_mnist

Endpoints: --model_a and --model_b (`.keras` files of one architecture), or
two networks trained here from --seed_a and --seed_b. Each of --methods
(the relaxed boundary-value geodesic, the shooting walk, the straight line,
Bezier and polychain curves, FIP) connects A to B and, with --align, to B
permuted onto A by weight matching (`tfgeo.experiments.connect_experiment`). Writes
results.json, paths.png, the geodesic points as points_<path>.npz
(`tfgeo.experiments.connect_experiment.load_points`), and a table.
"""
from tfgeo.experiments import connect_experiment
from tfgeo.runners import common

entry = common.runner(connect_experiment.ConnectConfig, connect_experiment.run,
                      obstacle=connect_experiment.distribution_obstacle)

if __name__ == "__main__":
    entry()

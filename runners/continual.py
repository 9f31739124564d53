r"""Continual learning: geodesic walks against naive fine-tuning, EWC and joint training.

    python -m runners.continual --dataset=mnist --manual_dir=../shared/data/mnist \
        --benchmark=split --scenario=task --output_dir=runs/split_mnist

Task 0 is learnt once with Adam; every method then continues from that
network through the remaining tasks (`tfgeo.experiments.continual_experiment`). After
each task the accuracy matrix R (test accuracy on every task) is extended
and saved; results.json holds R, the average accuracy and the backward
transfer (BWT) per method, accuracy.png shows R, and a table is printed.
The geodesic method's metric uses only a bounded memory of earlier tasks'
inputs (--memory_size), never their labels. An interrupted run resumes
after its last completed task when rerun with the same flags.
"""
from tfgeo.experiments import continual_experiment
from tfgeo.runners import common

entry = common.runner(continual_experiment.ContinualConfig, continual_experiment.run,
                      obstacle=continual_experiment.distribution_obstacle)

if __name__ == "__main__":
    entry()

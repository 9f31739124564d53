r"""Geodesic walk demo: from a trained net toward its magnitude-pruned copy.

Trains a small MLP on the offline `digits` data, then walks a geodesic that
pulls the weights pruned at --sparsity toward zero while the kept weights
move freely (`tfgeo.experiments.walk`). Prints test accuracy along the walk
against the straight line at the same distance to the target; writes
results.json, path.png and walked.keras.

    python -m runners.walk --output_dir=runs/walk
"""
from tfgeo.experiments import walk
from tfgeo.runners import common

entry = common.runner(walk.WalkConfig, walk.run, multi_worker=True)

if __name__ == "__main__":
    entry()

"""Continual learning (application 2): learn tasks one after another without forgetting.

    learner = tfgeo.continual.ContinualLearner(model, method="der", memory_size=1000)
    for x, y in tasks:
        learner.learn(x, y)

`ContinualLearner` (`learner`) runs every method on one bounded memory of
earlier tasks (`memory`): the adaptive geodesic rule (`adaptive_geodesic`,
with the restoring term of `restoring`), DER and replay (`replay`), EWC
(`ewc`), FIP (`output_distance`), naive and joint training. `scores` holds
the accuracy matrix's summaries; `multihead` the task-incremental heads.
"""
from tfgeo.continual import adaptive_geodesic
from tfgeo.continual import ewc
from tfgeo.continual import learner
from tfgeo.continual import memory
from tfgeo.continual import multihead
from tfgeo.continual import output_distance
from tfgeo.continual import replay
from tfgeo.continual import restoring
from tfgeo.continual import scores
from tfgeo.continual.learner import METHODS
from tfgeo.continual.learner import ContinualLearner

__all__ = ["ContinualLearner", "METHODS", "adaptive_geodesic", "ewc", "learner", "memory",
           "multihead", "output_distance", "replay", "restoring", "scores"]

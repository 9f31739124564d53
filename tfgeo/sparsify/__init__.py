"""Sparsification (application 1): prune a trained network and keep its function.

    report = tfgeo.sparsify.prune(model, unlabelled_inputs, sparsity=[0.9, 0.95, 0.98])

`prune` (`staged_pruning`) holds the label-free recipe: a sparsity schedule,
masks nested stage to stage (`pruning`), and per stage the Gauss-Newton
projection onto the mask (`projection`), layer-wise reconstruction
(`layerwise`), label-free distillation (`distillation`) or one-shot
magnitude pruning. The label-using peers are `masked_training` (masked
fine-tuning, gradual pruning) and `geodesic_pruning` (the walk toward a
pruned copy).
"""
from tfgeo.sparsify import distillation
from tfgeo.sparsify import geodesic_pruning
from tfgeo.sparsify import layerwise
from tfgeo.sparsify import masked_training
from tfgeo.sparsify import projection
from tfgeo.sparsify import pruning
from tfgeo.sparsify import staged_pruning
from tfgeo.sparsify.staged_pruning import METHODS
from tfgeo.sparsify.staged_pruning import Distillation
from tfgeo.sparsify.projection import Solver
from tfgeo.sparsify.staged_pruning import PruneReport
from tfgeo.sparsify.staged_pruning import prune

__all__ = ["prune", "PruneReport", "METHODS", "Distillation", "Solver", "distillation", "geodesic_pruning", "layerwise",
           "masked_training", "projection", "pruning", "staged_pruning"]

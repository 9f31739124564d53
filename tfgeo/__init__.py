"""tfgeo: adapt trained networks by walking geodesics in weight space.

The core library: metrics as linear operators (`linear_operator`, `metric`,
`output_metrics`), conjugate gradient (`krylov`), the geodesic step
(`geodesic`), objectives (`objectives`), Keras integration
(`geodesic_model`, `callbacks`), and the applications' algorithms
(`pruning`, `sparsification`, `masked_training`, `ewc`, `multihead`,
`connect`, `permutation`), and `distribute` for tf.distribute. The
experiment harness (`tfgeo.experiments`), the model zoo (`tfgeo.models`) and
the runners (`tfgeo.runners`) are installed beside it and never imported by it.
"""
from tfgeo import adaptive_geodesic
from tfgeo import batching
from tfgeo import callbacks
from tfgeo import connect
from tfgeo import curves
from tfgeo import diagonal_metric
from tfgeo import distribute
from tfgeo import ewc
from tfgeo import geodesic
from tfgeo import geodesic_model
from tfgeo import hidden_metric
from tfgeo import kfac
from tfgeo import krylov
from tfgeo import layerwise
from tfgeo import linear_operator
from tfgeo import losses
from tfgeo import masked_training
from tfgeo import memory
from tfgeo import metric
from tfgeo import metrics
from tfgeo import model_wrapper
from tfgeo import multihead
from tfgeo import objectives
from tfgeo import output_distance
from tfgeo import output_metrics
from tfgeo import output_path
from tfgeo import paths
from tfgeo import permutation
from tfgeo import projection
from tfgeo import pruning
from tfgeo import relaxed_path
from tfgeo import replay
from tfgeo import representations
from tfgeo import restoring
from tfgeo import sparsification
from tfgeo import vectors
from tfgeo import weights
from tfgeo.callbacks import StopAtDistance
from tfgeo.callbacks import StopOnFailedSteps
from tfgeo.geodesic import geodesic_step
from tfgeo.geodesic import multiplier_for_beta
from tfgeo.geodesic_model import GeodesicModel
from tfgeo.geodesic_model import walk
from tfgeo.geodesic_model import zip_batches
from tfgeo.krylov import conjugate_gradient
from tfgeo.linear_operator import LinearOperator
from tfgeo.metric import MetricOperator
from tfgeo.metric import metric_quadratic_form
from tfgeo.metric import metric_vector_product
from tfgeo.objectives import TaskLossDescent
from tfgeo.objectives import TowardTarget

__version__ = "0.2.0"

__all__ = [
    # modules
    "adaptive_geodesic", "batching", "callbacks", "connect", "curves", "diagonal_metric",
    "distribute", "ewc", "geodesic", "geodesic_model", "hidden_metric", "kfac", "krylov",
    "layerwise", "linear_operator", "losses", "masked_training", "memory", "metric", "metrics",
    "model_wrapper", "multihead", "objectives", "output_distance", "output_metrics", "output_path", "paths",
    "permutation", "projection", "pruning", "relaxed_path", "replay", "representations",
    "restoring", "sparsification", "vectors", "weights",
    # the main entry points
    "GeodesicModel", "LinearOperator", "MetricOperator", "StopAtDistance", "StopOnFailedSteps",
    "TaskLossDescent", "TowardTarget", "conjugate_gradient", "geodesic_step",
    "metric_quadratic_form", "metric_vector_product", "multiplier_for_beta", "walk",
    "zip_batches",
]

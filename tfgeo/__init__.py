"""tfgeo: adapt trained networks by walking geodesics in weight space.

Modules: `vectors` (weight-space arithmetic), `output_metrics` (M),
`metric` (g v), `krylov` (conjugate gradient), `geodesic` (the step),
`objectives` (v), `geodesic_model` (Keras `fit` integration).
"""
from tfgeo import geodesic
from tfgeo import krylov
from tfgeo import metric
from tfgeo import objectives
from tfgeo import output_metrics
from tfgeo import vectors
from tfgeo.geodesic import geodesic_step
from tfgeo.geodesic import multiplier_for_beta
from tfgeo.geodesic_model import GeodesicModel
from tfgeo.geodesic_model import zip_batches
from tfgeo.krylov import conjugate_gradient
from tfgeo.metric import MetricOperator
from tfgeo.metric import metric_quadratic_form
from tfgeo.metric import metric_vector_product
from tfgeo.objectives import TaskLossDescent
from tfgeo.objectives import TowardTarget

__version__ = "0.1.0"

"""tfgeo: adapt trained Keras networks by walking geodesics in weight space.

The flat core holds what every application shares: metrics as linear
operators (`linear_operator`, `metric`, `hidden_metric`, `kfac`,
`diagonal_metric`, `output_metrics`, `metric_specs`), conjugate gradient
(`krylov`), the geodesic step (`geodesic`), objectives (`objectives`), Keras
integration (`geodesic_model`, `model_wrapper`, `callbacks`), tf.distribute
(`distribute`) and compute accounting (`cost`). Each application is a
subpackage with one public call:

    tfgeo.sparsify.prune(model, inputs, sparsity)            label-free pruning
    tfgeo.continual.ContinualLearner(model).learn(x, y)      one task after another
    tfgeo.connect.find_path(model_a, model_b, x, y)          a path between two networks

The experiment harness (`tfgeo.experiments`), the model zoo (`tfgeo.models`)
and the runners (`tfgeo.runners`) are installed beside the library and never
imported by it.
"""
import os as _os
import sys as _sys

if _os.path.basename(getattr(_sys, "argv", [""])[0] or "").startswith("tfgeo-"):
    # A console script (tfgeo-walk, ...): this runs before TensorFlow is
    # imported, which runners/__init__.py would be too late for; see there.
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _import_tensorflow_at_log_level() -> None:
    """Imports TensorFlow with its C++ start-up lines held to TF_CPP_MIN_LOG_LEVEL.

    TensorFlow 2.21 logs some lines before absl's logging is initialised (the
    "oneDNN custom operations are on" notice on CPUs where oneDNN is on by
    default), and those ignore the level; its stderr during the import is
    captured and replayed without the lines the level filters out."""
    import re
    import tempfile

    try:
        level = int(_os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return
    if level < 1 or "tensorflow" in _sys.modules:
        return
    hidden = "IWE"[:min(level, 3)]
    line = re.compile(rf"^[{hidden}]\d{{4}} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "
                      r"|^WARNING: All log messages before absl::InitializeLog\(\) is called")
    _sys.stderr.flush()
    saved = _os.dup(2)
    with tempfile.TemporaryFile() as captured:
        _os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            _sys.stderr.flush()
            _os.dup2(saved, 2)
            _os.close(saved)
            captured.seek(0)
            kept = [t for t in captured.read().decode(errors="replace").splitlines(True)
                    if not line.match(t)]
            _sys.stderr.write("".join(kept))
            _sys.stderr.flush()


_import_tensorflow_at_log_level()

from tfgeo import batching
from tfgeo import callbacks
from tfgeo import classification
from tfgeo import cost
from tfgeo import diagonal_metric
from tfgeo import distribute
from tfgeo import geodesic
from tfgeo import geodesic_model
from tfgeo import hidden_metric
from tfgeo import kfac
from tfgeo import krylov
from tfgeo import linear_operator
from tfgeo import losses
from tfgeo import metric
from tfgeo import metric_specs
from tfgeo import model_wrapper
from tfgeo import objectives
from tfgeo import output_metrics
from tfgeo import representations
from tfgeo import vectors
from tfgeo import weights
from tfgeo import connect
from tfgeo import continual
from tfgeo import sparsify
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

__version__ = "0.3.0"

__all__ = [
    # The applications, one subpackage each.
    "sparsify", "continual", "connect",
    # Operators and the solve.
    "LinearOperator", "MetricOperator", "metric_vector_product", "metric_quadratic_form",
    "conjugate_gradient",
    # The geodesic step and its objectives.
    "geodesic_step", "multiplier_for_beta", "TowardTarget", "TaskLossDescent",
    # Keras integration.
    "GeodesicModel", "walk", "zip_batches", "StopAtDistance", "StopOnFailedSteps",
]

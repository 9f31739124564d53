"""Connecting optima (application 3): a low-loss path between two trained networks.

    path = tfgeo.connect.find_path(model_a, model_b, x_train, y_train)
    path.evaluate(x_test, y_test)["barrier"]

`find_path` (`path_finding`) runs one method: the relaxed geodesic
(`relaxed_path`), the shooting walk (`geodesic_walk`), Garipov et al.'s
Bezier and polygonal-chain curves (`curves`), the FIP output-preserving path
(`output_path`) or the straight line (`paths`), optionally to B permuted onto
A by weight matching (`permutation`).
"""
from tfgeo.connect import curves
from tfgeo.connect import geodesic_walk
from tfgeo.connect import output_path
from tfgeo.connect import path_finding
from tfgeo.connect import paths
from tfgeo.connect import permutation
from tfgeo.connect import relaxed_path
from tfgeo.connect.path_finding import FIP
from tfgeo.connect.path_finding import METHODS
from tfgeo.connect.path_finding import CurveTraining
from tfgeo.connect.path_finding import Path
from tfgeo.connect.path_finding import Relaxation
from tfgeo.connect.path_finding import Shooting
from tfgeo.connect.path_finding import find_path

# The settings types are find_path's arguments: reachable where find_path is.
__all__ = ["find_path", "Path", "METHODS", "Relaxation", "Shooting", "CurveTraining", "FIP",
           "curves", "geodesic_walk", "output_path",
           "path_finding", "paths", "permutation", "relaxed_path"]

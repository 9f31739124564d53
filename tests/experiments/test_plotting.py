"""Plots: laid out to be read at 100 %."""
import matplotlib.image
import numpy as np

from tfgeo.experiments import plotting


def test_eight_heat_maps_are_a_near_square_grid_not_a_strip(tmp_path):
    # runners.continual's accuracy.png: one map per method, eight methods.
    matrices = {f"method {i}": np.random.default_rng(i).random((5, 5)) for i in range(8)}
    path = plotting.matrix_plot(str(tmp_path / "m.png"), matrices, "task j", "task i", "R")
    height, width = matrix_shape = matplotlib.image.imread(path).shape[:2]
    assert 0.5 < width / height < 2.0, matrix_shape  # a row of eight was 3,168 x 432
    assert width <= 1800

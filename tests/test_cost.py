"""Gradient-equivalent accounting."""
import math

import numpy as np
import pytest

from models import mlp as mlp_lib
from tfgeo import cost


def test_gradient_equivalents_is_a_weighted_count():
    ratios = cost.CostRatios(gradient_seconds=0.01, metric_vector_product=1.5, quadratic_form=0.7)
    assert ratios.gradient_equivalents(10, 2, 3) == pytest.approx(10 * 1.5 + 2 * 0.7 + 3)
    assert ratios.gradient_equivalents(0) == 0


def test_measure_gives_finite_positive_ratios():
    net = mlp_lib.mlp((8,), 3, hidden=(16,))
    x = np.random.default_rng(0).normal(size=(32, 8)).astype("float32")
    y = np.arange(32) % 3
    ratios = cost.measure(net, x, y, jit_compile=False, repeats=3)
    for value in ratios:
        assert math.isfinite(value) and value > 0


def test_median_seconds_validates_repeats():
    with pytest.raises(ValueError):
        cost.median_seconds(lambda: [], (), repeats=0)

"""Compute accounting by the fixed rule."""
import pytest

from tfgeo import cost


def test_rule_counts_passes():
    # forward 1, JVP 2, backward 2 units; a gradient is forward + backward.
    assert cost.COSTS["gradient"] == 1.0
    assert cost.COSTS["metric_vector_product"] == pytest.approx(5 / 3)
    assert cost.COSTS["quadratic_form"] == pytest.approx(1.0)
    assert cost.COSTS["forward"] == pytest.approx(1 / 3)


def test_gradient_equivalents_is_a_weighted_count():
    total = cost.gradient_equivalents(metric_products=10, quadratic_forms=2, gradients=3)
    assert total == pytest.approx(10 * 5 / 3 + 2 + 3)
    assert cost.gradient_equivalents() == 0
    # Products on batches of 512 count twice against gradients on batches of 256.
    assert cost.gradient_equivalents(gradients=4, batch=512, reference_batch=256) == 8
    with pytest.raises(ValueError, match="gradient"):
        cost.gradient_equivalents(gradients=-1)


def test_min_seconds_validates_repeats():
    with pytest.raises(ValueError):
        cost.min_seconds(lambda: [], (), repeats=0)
    assert cost.min_seconds(lambda: [], (), repeats=2) >= 0

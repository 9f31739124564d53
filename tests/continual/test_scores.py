"""Continual-learning scores against hand-worked examples."""
import pytest

from tfgeo.continual import scores


def test_scores_hand_worked():
    R = [[0.9, 0.1, 0.2],
         [0.7, 0.8, 0.3],
         [0.6, 0.5, 0.95]]
    assert scores.average_accuracy(R) == pytest.approx((0.6 + 0.5 + 0.95) / 3)
    # BWT = ((0.6 - 0.9) + (0.5 - 0.8)) / 2 = -0.3
    assert scores.backward_transfer(R) == pytest.approx(-0.3)
    assert scores.backward_transfer([[0.9]]) == 0.0
    assert scores.backward_transfer([[0.5, 0.0], [0.75, 0.9]]) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="square"):
        scores.backward_transfer([[1.0, 2.0]])

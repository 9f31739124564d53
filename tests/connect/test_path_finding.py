"""`find_path`'s budget: every method that trains gets the whole iterations or
steps nearest the budget, so its gradient-equivalents equal the budget to
within half of one iteration's (one step's) cost, and an explicit count
overrides the budget."""
import numpy as np
import pytest

from tests.connect import trained_pair
from tfgeo.connect import path_finding
from tfgeo.experiments import data


@pytest.fixture(scope="module")
def endpoints():
    ds = data.load_digits(flat=True)
    return trained_pair(ds), ds.train


def test_the_default_budget_buys_the_default_iterations():
    # 743 iterations of K=4 gradients and 2 forwards on 32 inputs: 866.83 GE.
    per = path_finding.relaxation_cost(path_finding.Relaxation())
    assert per == pytest.approx((4 + 2 / 3) * 32 / 128, rel=1e-12)
    assert path_finding.relaxation_iterations(path_finding.Relaxation(),
                                              path_finding.DEFAULT_BUDGET) == 743
    assert path_finding.relaxation_iterations(path_finding.Relaxation(iterations=5), 1e6) == 5
    # The metric energy: K metric products per iteration, dearer than K gradients.
    metric = path_finding.relaxation_cost(path_finding.Relaxation(energy="metric"))
    assert metric > per
    assert path_finding.curve_steps(path_finding.CurveTraining(batch_size=64), 100.0) == 200


@pytest.mark.parametrize("budget", [7.0, 23.3])
def test_a_budget_is_respected(endpoints, budget):
    (model_a, model_b), train = endpoints
    relax = path_finding.Relaxation(batch_size=16)
    per = path_finding.relaxation_cost(relax)
    geodesic = path_finding.find_path(model_a, model_b, train.x, train.y, "geodesic",
                                      num_points=5, budget=budget, relaxation=relax, verbose=0)
    iterations = geodesic.info["iterations"]
    assert iterations == round(budget / per)
    assert geodesic.gradient_equivalents == pytest.approx(iterations * per, rel=1e-12)
    assert abs(geodesic.gradient_equivalents - budget) <= per / 2 + 1e-9
    curve = path_finding.find_path(model_a, model_b, train.x, train.y, "bezier", num_points=5,
                                   budget=budget, curve_training=path_finding.CurveTraining(
                                       batch_size=32), verbose=0)
    assert curve.info["steps"] == round(budget * 128 / 32)
    assert abs(curve.gradient_equivalents - budget) <= 0.5 * 32 / 128 + 1e-9


def test_an_explicit_count_overrides_the_budget(endpoints):
    (model_a, model_b), train = endpoints
    relax = path_finding.Relaxation(iterations=3, batch_size=16)
    path = path_finding.find_path(model_a, model_b, train.x, train.y, "geodesic", num_points=3,
                                  budget=1e4, relaxation=relax, verbose=0)
    assert path.info["iterations"] == 3
    assert path.gradient_equivalents == pytest.approx(3 * path_finding.relaxation_cost(relax))
    assert np.isfinite(path.evaluate(train.x, train.y)["barrier"])


@pytest.mark.parametrize("settings, named", [
    ({"relaxation": path_finding.Relaxation(iterations=2.5)}, "relaxation.iterations"),
    ({"relaxation": path_finding.Relaxation(iterations=0)}, "relaxation.iterations"),
    ({"relaxation": path_finding.Relaxation(inner_points=0)}, "relaxation.inner_points"),
    ({"relaxation": path_finding.Relaxation(learning_rate=float("nan"))},
     "relaxation.learning_rate"),
    ({"relaxation": path_finding.Relaxation(loss_weight=-1.0)}, "relaxation.loss_weight"),
    ({"curve_training": path_finding.CurveTraining(batch_size=0)}, "curve_training.batch_size"),
    ({"curve_training": path_finding.CurveTraining(steps=True)}, "curve_training.steps"),
    ({"fip": path_finding.FIP(beta=0.0)}, "fip.beta"),
    ({"shooting": path_finding.Shooting(max_steps=-3)}, "shooting.max_steps"),
])
def test_bad_settings_are_refused_naming_the_field(endpoints, settings, named):
    (model_a, model_b), train = endpoints
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        path_finding.find_path(model_a, model_b, train.x, train.y, "straight", verbose=0,
                               **settings)

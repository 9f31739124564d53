"""benchmarks/connect_frontier.py counts compute as the runner does (the same
iterations, steps and gradient-equivalents for the same budget), and its
table averages over the pairs that ran a configuration (issue: the connect
frontier)."""
import keras
import pytest

from tests.benchmarks import load_script
from tests.connect import trained_pair
from tfgeo.connect import path_finding
from tfgeo.experiments import config as config_lib
from tfgeo.experiments import connect_experiment as study
from tfgeo.experiments import data
from tfgeo import weights as weights_lib


def test_the_frontier_counts_as_the_runner_does(tmp_path):
    ds = data.load("digits")
    files = []
    for seed, m in zip((1, 2), trained_pair(ds)):
        files.append(str(tmp_path / f"end{seed}.keras"))
        m.save(files[-1])
    iterations = 12
    budget = iterations * path_finding.relaxation_cost(path_finding.Relaxation())
    config = study.ConnectConfig(
        run=config_lib.RunConfig(output_dir=str(tmp_path / "run"), verbose=0, compile="graph"),
        model_a=files[0], model_b=files[1], methods=("geodesic", "bezier", "straight"),
        relax_iterations=iterations, curve_converged_steps=0, align=False, eval_points=5)
    runner = study.run(config).payload["paths"]
    frontier = load_script("connect_frontier")
    model_a, model_b = (keras.models.load_model(f) for f in files)
    a, b = weights_lib.get_trainable(model_a), weights_lib.get_trainable(model_b)
    for method, label in (("geodesic", "geodesic A->B"), ("bezier", "bezier A->B (equal)"),
                          ("straight", "straight A->B")):
        row = frontier.run_path(model_a, a, b, ds.train, {"test": ds.test}, method,
                                0.0 if method == "straight" else budget,
                                {"inner_points": 4} if method == "geodesic" else {},
                                num_points=5, jit_compile=False)
        assert row["gradient_equivalents"] == pytest.approx(
            runner[label]["gradient_equivalents"], rel=1e-12), method
        for count in ("iterations", "steps"):
            assert row.get(count) == runner[label].get(count), (method, count)
    assert runner["geodesic A->B"]["iterations"] == iterations
    # The straight line is the same path: the same barrier to float rounding.
    assert row["test_barrier"] == pytest.approx(runner["straight A->B"]["barrier"], abs=1e-5)
    # A rate override reaches the curve's training: the same budget, another path.
    plain, default, faster = (frontier.run_path(
        model_a, a, b, ds.train, {"test": ds.test}, "bezier", budget, settings, num_points=5,
        jit_compile=False) for settings in ({}, {"learning_rate": 1e-3}, {"learning_rate": 3e-2}))
    assert default["test_barrier"] == pytest.approx(plain["test_barrier"], abs=1e-6)
    assert abs(faster["test_barrier"] - default["test_barrier"]) > 1e-3
    assert faster["gradient_equivalents"] == default["gradient_equivalents"]


def test_the_summary_is_over_the_pairs_that_ran_it():
    frontier = load_script("connect_frontier")
    rows = [{"pair": p, "target": "B", "family": f, "budget": bud, "gradient_equivalents": ge,
             "test_barrier": tb, "test_min_accuracy": acc}
            for p, f, bud, ge, tb, acc in [
                ("1:2", "geodesic", 100.0, 99.0, 0.2, 0.9),
                ("3:4", "geodesic", 100.0, 101.0, 0.4, 0.8),
                ("1:2", "bezier", 100.0, 100.0, 0.1, 0.95),
                ("1:2", "straight", 0.0, 0.0, 1.0, 0.5)]]
    got = frontier.summary(rows)
    geo = got[("B", "geodesic", 100.0)]
    assert geo["pairs"] == 2 and geo["ge"] == pytest.approx(100.0)
    assert geo["barrier"] == pytest.approx(0.3) and geo["barrier_sd"] == pytest.approx(0.1414214)
    assert got[("B", "bezier", 100.0)]["pairs"] == 1
    assert got[("B", "bezier", 100.0)]["barrier_sd"] == 0.0
    assert ("B", "straight", 0.0) in got and ("B", "straight", 100.0) not in got
    configs = frontier.configurations(["geodesic", "straight", "bezier"], ["4", "8"], [10, 20])
    assert [c[:3] for c in configs] == [
        ("geodesic K=4", "geodesic", 10.0), ("geodesic K=8", "geodesic", 10.0),
        ("geodesic K=4", "geodesic", 20.0), ("geodesic K=8", "geodesic", 20.0),
        ("straight", "straight", 0.0), ("bezier", "bezier", 10.0), ("bezier", "bezier", 20.0)]


def test_rates_other_than_the_default_are_their_own_lines():
    frontier = load_script("connect_frontier")
    assert frontier.DEFAULT_RATE == path_finding.Relaxation().learning_rate
    assert frontier.DEFAULT_RATE == path_finding.CurveTraining().learning_rate
    configs = frontier.configurations(["geodesic", "bezier"], ["4"], [10], rates=[1e-3, 3e-4])
    assert configs == [
        ("geodesic", "geodesic", 10.0, {"inner_points": 4, "learning_rate": 1e-3}),
        ("geodesic lr=0.0003", "geodesic", 10.0, {"inner_points": 4, "learning_rate": 3e-4}),
        ("bezier", "bezier", 10.0, {"learning_rate": 1e-3}),
        ("bezier lr=0.0003", "bezier", 10.0, {"learning_rate": 3e-4})]

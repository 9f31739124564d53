"""runners.connect end to end on digits, and its flag checks."""
import json
import math
import os

import pytest

from tests.runner_process import case_outcomes
from tests.runner_process import run_module
from tfgeo.experiments import connect_experiment as connect


def _run(*args, timeout=600):
    return run_module("runners.connect", *args, timeout=timeout)


def test_connect_digits_end_to_end(tmp_path):
    out, logs = str(tmp_path / "connect"), str(tmp_path / "tb")
    # 16 paths (3-4 minutes on 2 idle cores): a generous limit for a loaded machine.
    proc = _run(f"--output_dir={out}", "--hidden=64", "--train_epochs=30", "--eval_points=11",
                "--relax_iterations=150", "--curve_converged_steps=300", f"--tensorboard_dir={logs}",
                timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out, "results.json")) as f:
        res = json.load(f)
    paths = res["paths"]
    names = {f"{m} A->{t}" for m in ("geodesic", "shooting", "straight", "fip")
             for t in ("B", "B aligned")}
    names |= {f"{m} A->{t} ({v})" for m in ("bezier", "polychain") for t in ("B", "B aligned")
              for v in ("equal", "converged")}
    assert set(paths) == names
    for name, p in paths.items():
        assert p["points"] == 11, name  # every path evaluated at as many points
        assert len(p["accuracy"]) == len(p["loss"]) == len(p["position"]) == p["points"]
        assert p["position"][0] == 0 and p["position"][-1] == pytest.approx(1)
        assert p["barrier"] == pytest.approx(max(p["loss"]) - (p["loss"][0] + p["loss"][-1]) / 2)
        for key in ("barrier", "max_loss", "min_accuracy", "euclidean_length", "metric_length",
                    "gradient_equivalents", "seconds"):
            assert math.isfinite(p[key]), (name, key)
        assert 0 <= p["min_accuracy"] <= 1 and p["euclidean_length"] > 0
        # Every path starts at A and ends at B: the same endpoint losses.
        assert p["loss"][0] == pytest.approx(paths["straight A->B"]["loss"][0])
    for t in ("B", "B aligned"):
        straight = paths[f"straight A->{t}"]
        geodesic = paths[f"geodesic A->{t}"]
        assert straight["gradient_equivalents"] == 0
        # The curves at equal compute get the geodesic's gradient-equivalents (to a step).
        for m in ("bezier", "polychain"):
            equal = paths[f"{m} A->{t} (equal)"]
            assert equal["gradient_equivalents"] == pytest.approx(
                geodesic["gradient_equivalents"], abs=1.0)
            assert paths[f"{m} A->{t} (converged)"]["steps"] == 300
        assert paths[f"fip A->{t}"]["gradient_equivalents"] == pytest.approx(
            geodesic["gradient_equivalents"], rel=0.1)
    unaligned = {k: v for k, v in paths.items() if "aligned" not in k}
    assert paths["bezier A->B (converged)"]["barrier"] < paths["straight A->B"]["barrier"]
    assert paths["geodesic A->B"]["barrier"] < 0.5 * paths["straight A->B"]["barrier"]
    assert paths["shooting A->B"]["max_loss"] < paths["straight A->B"]["max_loss"]
    assert min(v["barrier"] for v in unaligned.values()) < paths["straight A->B"]["barrier"]
    points = connect.load_points(os.path.join(out, "points_B.npz"))
    assert len(points) == paths["geodesic A->B"]["points"]
    assert os.path.getsize(os.path.join(out, "paths.png")) > 10_000
    assert "barrier" in proc.stdout and "grad_equiv" in proc.stdout
    # One TensorBoard series per path.
    assert os.path.isdir(os.path.join(logs, "geodesic_A_to_B"))
    assert any(f.startswith("events") for _, _, files in os.walk(logs) for f in files)


def test_methods_subset_and_resume(tmp_path):
    # A run of some methods, then the same flags again: everything is reused.
    out = str(tmp_path / "connect")
    args = (f"--output_dir={out}", "--hidden=16", "--train_epochs=5", "--eval_points=5",
            "--methods=geodesic,straight", "--relax_iterations=20", "--noalign")
    proc = _run(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out, "results.json")) as f:
        first = json.load(f)["paths"]
    assert set(first) == {"geodesic A->B", "straight A->B"}
    proc = _run(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Path geodesic" not in proc.stderr  # nothing recomputed
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)["paths"] == first


BAD_FLAGS = [
    (["--model_a=/nonexistent.keras"], "--model_a"),
    (["--step_size=0"], "--step_size"),
    (["--tolerance=1"], "--tolerance"),
    (["--record_every=0"], "--record_every"),
    (["--max_steps=0"], "--max_steps"),
    (["--eval_points=1"], "--eval_points"),
    (["--relax_points=0"], "--relax_points"),
    (["--methods=bezier,straight"], "--methods"),
    (["--methods=spline"], "--methods"),
    (["--relax_energy=spring"], "--relax_energy"),
]
outcomes = case_outcomes("runners.connect", BAD_FLAGS)


@pytest.mark.parametrize("case", range(len(BAD_FLAGS)),
                         ids=[args[0].lstrip("-") for args, _ in BAD_FLAGS])
def test_bad_flags_name_the_culprit(case, outcomes):
    proc, (_, culprit) = outcomes[case], BAD_FLAGS[case]
    assert proc.returncode != 0 and culprit in proc.stderr
    assert "Training endpoint" not in proc.stderr

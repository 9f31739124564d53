"""runners.connect end to end on digits, and its flag checks."""
import json
import os

import pytest

from tests.runner_process import run_module
from tfgeo.experiments import connect


def _run(*args):
    return run_module("runners.connect", *args)


def test_connect_digits_end_to_end(tmp_path):
    out = str(tmp_path / "connect")
    proc = _run(f"--output_dir={out}", "--hidden=64", "--train_epochs=30")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out, "results.json")) as f:
        res = json.load(f)
    paths = res["paths"]
    assert set(paths) == {"geodesic A->B", "straight A->B", "geodesic A->B aligned",
                          "straight A->B aligned"}
    for name, p in paths.items():
        assert len(p["accuracy"]) == len(p["loss"]) == len(p["position"]) == p["points"]
        assert p["position"][0] == 0 and p["position"][-1] == pytest.approx(1)
        assert p["barrier"] == pytest.approx(max(p["loss"]) - (p["loss"][0] + p["loss"][-1]) / 2)
    assert paths["geodesic A->B"]["max_loss"] < paths["straight A->B"]["max_loss"]
    points = connect.load_points(os.path.join(out, "points_B.npz"))
    assert len(points) == paths["geodesic A->B"]["points"]
    assert os.path.getsize(os.path.join(out, "paths.png")) > 10_000
    assert "barrier" in proc.stdout


@pytest.mark.parametrize("args,culprit", [
    (["--model_a=/nonexistent.keras"], "--model_a"),
    (["--step_size=0"], "--step_size"),
    (["--tolerance=1"], "--tolerance"),
    (["--record_every=0"], "--record_every"),
    (["--max_steps=0"], "--max_steps"),
])
def test_bad_flags_name_the_culprit(args, culprit, tmp_path):
    proc = _run(*args, f"--output_dir={tmp_path}")
    assert proc.returncode != 0 and culprit in proc.stderr
    assert "Training endpoint" not in proc.stderr

"""The README's main job, shortened: the demo runner end to end, and its flag checks."""
import json
import os

import pytest

from tests.runner_process import case_outcomes
from tests.runner_process import read_results
from tests.runner_process import run_cases
from tests.runner_process import run_module


def _run(*args):
    return run_module("runners.walk", *args)


def test_walk_demo_end_to_end(tmp_path):
    out = str(tmp_path / "walk")
    proc = _run(f"--output_dir={out}", "--steps=120", "--record_every=40", "--train_epochs=30")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out, "results.json")) as f:
        res = json.load(f)
    assert os.path.getsize(os.path.join(out, "path.png")) > 10_000
    assert os.path.exists(os.path.join(out, "walked.keras"))
    summary = res["summary"]
    assert abs(summary["sparsity"] - 0.9) < 1e-3
    # The walk must beat one-shot pruning at the same sparsity on the test split.
    assert summary["geodesic_then_pruned_test_accuracy"] > summary["one_shot_pruned_test_accuracy"]
    distances = [r["distance_to_target"] for r in res["path"]]
    assert distances[-1] < 0.5 * distances[0]
    assert res["config"]["steps"] == 120
    assert "distance_to_target" in proc.stdout and "one_shot_pruned_test_accuracy" in proc.stdout


BAD_FLAGS = [
    (["--steps=0"], "--steps"),
    (["--sparsity=1.0"], "--sparsity"),
    (["--step_size=-1"], "--step_size"),
    (["--damping=-0.1"], "--damping"),
]
outcomes = case_outcomes("runners.walk", BAD_FLAGS)


@pytest.mark.parametrize("case", range(len(BAD_FLAGS)),
                         ids=[args[0].lstrip("-") for args, _ in BAD_FLAGS])
def test_walk_bad_flags_fail_fast_naming_the_flag(case, outcomes):
    proc, (_, culprit) = outcomes[case], BAD_FLAGS[case]
    assert proc.returncode != 0
    assert culprit in proc.stderr
    assert "Training" not in proc.stderr  # failed before any heavy work


def test_walk_flags_act_and_a_walk_folder_of_other_flags_is_refused(tmp_path):
    short = ["--steps=10", "--record_every=5", "--train_epochs=3", "--hidden=16"]
    default, kfac = str(tmp_path / "default"), str(tmp_path / "kfac")
    first, second, other = run_cases("runners.walk", [
        [f"--output_dir={default}", *short],
        [f"--output_dir={kfac}", *short, "--metric=kfac", "--preconditioner=kfac"],
        [f"--output_dir={default}", *short[:-1], "--hidden=8"]])
    assert first.returncode == 0, first.stderr[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    a, b = read_results(default), read_results(kfac)
    assert b["config"]["metric"] == "kfac" and b["config"]["preconditioner"] == "kfac"
    # The same start network and target: only the metric and preconditioner differ.
    assert a["summary"]["start_test_accuracy"] == b["summary"]["start_test_accuracy"]
    assert a["records"][-1]["cg_residual"] != pytest.approx(b["records"][-1]["cg_residual"],
                                                            rel=1e-3)
    # The folder holds a walk made with other flags: refused, naming them.
    assert other.returncode != 0 and "--hidden" in other.stderr
    assert read_results(default) == a

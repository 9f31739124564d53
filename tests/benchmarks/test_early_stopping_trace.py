"""benchmarks/early_stopping_trace.py traces the stage `prune` runs: the same
masks, seed and held-out rows, so its held-out distances and kept step are
those of `prune(..., Distillation(held_out_checks=k))` at that stage."""
import json
import subprocess
import sys

import keras
import pytest

from tests.runner_process import ROOT
from tests.runner_process import runner_env


def test_the_trace_is_the_stage_prune_runs(tmp_path):
    from tfgeo.experiments import config as config_lib
    from tfgeo.experiments import data
    from tfgeo.experiments import sparsify_experiment as study
    from tfgeo.models import registry
    from tfgeo.sparsify import staged_pruning

    keras.utils.set_random_seed(0)
    digits = data.load_digits(flat=False)
    start = registry.get("mlp", digits.input_shape, digits.num_classes, hidden=(32,))
    start.compile("adam", "sparse_categorical_crossentropy")
    start.fit(digits.train.x, digits.train.y, epochs=3, verbose=0)
    start.save(tmp_path / "start.keras")
    out = tmp_path / "trace.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/early_stopping_trace.py", "--dataset=digits",
         f"--start_model={tmp_path / 'start.keras'}", "--calibration_size=256", "--path=0.5",
         "--path_steps=40", "--path_rate=3e-3", "--path_checks=4", "--sparsity=0.8", "--runs=40@3e-3",
         "--checks=4", f"--output={out}"],
        cwd=ROOT, env=runner_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "kept step" in proc.stdout
    assert (tmp_path / "trace.png").stat().st_size > 10_000
    run, = json.loads(out.read_text())["runs"]
    trace = run["trace"]
    assert [t["step"] for t in trace] == [0, 10, 20, 30, 40]
    assert all(0 <= t["validation_accuracy"] <= 1 for t in trace)
    kept = min(trace, key=lambda t: t["held_out_distance"])
    assert run["best_step"] == kept["step"]

    # The library's two-stage call with the same settings keeps the same step at the
    # second stage, at the same held-out distance.
    _, train, _ = data.load_splits(config_lib.DataConfig(dataset="digits",
                                                         validation_fraction=0.1), 0)
    model = keras.models.load_model(tmp_path / "start.keras")
    report = staged_pruning.prune(
        model, study.calibration_set(train, 256, 0), [0.5, 0.8], verbose=0, seed=0,
        distillation_settings=staged_pruning.Distillation(40, 256, 3e-3, held_out_checks=4,
                                                          intermediate_fraction=1.0))
    last = report.stages[-1]
    assert last["best_step"] == run["best_step"]
    assert last["held_out_distance"] == pytest.approx(kept["held_out_distance"], rel=1e-4)


def test_bad_runs_are_named_before_anything_loads(tmp_path):
    proc = subprocess.run(
        [sys.executable, "benchmarks/early_stopping_trace.py", "--dataset=digits",
         f"--start_model={tmp_path / 'none.keras'}", "--runs=4000"],
        cwd=ROOT, env=runner_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "steps@rate" in proc.stderr and "'4000'" in proc.stderr

"""runners.sparsify: a shortened MNIST run end to end, and its flag checks."""
import json
import os

import pytest

from tests.runner_process import case_outcomes
from tests.runner_process import run_module

from tests.shared_data import MNIST


def _run(*args):
    return run_module("runners.sparsify", *args)


def test_shortened_mnist_run(tmp_path):
    assert os.path.isdir(MNIST), f"MNIST originals missing at {MNIST}"
    out, logs = str(tmp_path / "sparsify"), str(tmp_path / "tb")
    proc = _run(f"--output_dir={out}", "--model=lenet_300_100", "--dataset=mnist",
                f"--manual_dir={MNIST}", "--train_examples=6000", "--train_epochs=5",
                "--sparsities=0.8,0.95", "--calibration_size=512", "--projection_steps=3",
                "--cg_iterations=50", "--cg_tolerance=0.01", "--label_budget=200",
                "--distill_steps=100", "--distill_intermediate_fraction=0.6",
                "--distill_learning_rate=1e-2,3e-3",
                "--distill_probe_steps=20", f"--tensorboard_dir={logs}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out, "results.json")) as f:
        res = json.load(f)
    rows = {(r["stage"], r["method"]): r for r in res["rows"]}
    methods = ("one_shot", "layerwise", "distill", "geodesic", "finetune", "gradual",
               "geodesic_finetune")
    n_prunable = 784 * 300 + 300 * 100 + 100 * 10
    for stage, sparsity in ((1, 0.8), (2, 0.95)):
        for method in methods:
            row = rows[(stage, method)]
            # Exact: as many zeros as asked, no more, no fewer.
            assert row["measured_sparsity"] * n_prunable == pytest.approx(
                round(sparsity * n_prunable), abs=1e-6), (method, row)
            assert row["track"] == ("label-using" if method in ("finetune", "gradual",
                                                                 "geodesic_finetune")
                                    else "label-free")
        # Equal compute in the label-using track.
        assert rows[(stage, "finetune")]["gradient_equivalents"] == 200
        assert rows[(stage, "gradual")]["gradient_equivalents"] == 200
        hybrid = rows[(stage, "geodesic_finetune")]
        assert hybrid["gradient_equivalents"] <= 200 + 1 or hybrid["over_budget"]
    # Two candidate rates: each stage's probes chose one, by its held-out distance.
    for stage, steps in ((1, 60), (2, 100)):  # the intermediate stage's count, the last's
        row = rows[(stage, "distill")]
        assert row["steps"] == steps, row
        assert set(row["rate_distances"]) == {"0.01", "0.003"}, row
        chosen = min(row["rate_distances"], key=row["rate_distances"].get)
        assert row["learning_rate"] == pytest.approx(float(chosen))
    # The label-free methods beat one-shot pruning at 95%.
    for method in ("layerwise", "geodesic"):
        assert rows[(2, method)]["test_accuracy"] > rows[(2, "one_shot")]["test_accuracy"] + 0.05
    for method in methods:
        if method != "one_shot":
            assert os.path.getsize(os.path.join(out, f"{method}.keras")) > 100_000
    assert os.path.getsize(os.path.join(out, "accuracy.png")) > 10_000
    assert "geodesic_ge" in proc.stdout and "95.0%" in proc.stdout
    assert res["config"]["seed"] == 0
    assert res["cost_rule"]["metric_vector_product"] == pytest.approx(5 / 3)
    assert any(f.startswith("events") for _, _, files in os.walk(logs) for f in files)


BAD_FLAGS = [
    (["--sparsities=0.5,0.4"], "--sparsities"),
    (["--sparsities=0.5,1.0"], "--sparsities"),
    (["--final_sparsity=1"], "--final_sparsity"),
    (["--step_size=0"], "--step_size"),
    (["--tolerance=1.5"], "--tolerance"),
    (["--methods=one_shot,magic"], "--methods"),
    (["--stages=0"], "--stages"),
    (["--start_model=/nonexistent.keras"], "--start_model"),
    (["--model=vgg11"], "--model=vgg11"),
    (["--distill_learning_rate=1e-2,0"], "--distill_learning_rate"),
    (["--distill_probe_steps=-1"], "--distill_probe_steps"),
    (["--distill_held_out_checks=-2"], "--distill_held_out_checks"),
]
outcomes = case_outcomes("runners.sparsify", BAD_FLAGS)


@pytest.mark.parametrize("case", range(len(BAD_FLAGS)),
                         ids=[args[0].lstrip("-") for args, _ in BAD_FLAGS])
def test_bad_flags_name_the_culprit(case, outcomes):
    proc, (_, culprit) = outcomes[case], BAD_FLAGS[case]
    assert proc.returncode != 0
    assert culprit in proc.stderr
    assert "Training start.keras" not in proc.stderr


def test_start_model_of_another_shape_is_refused(tmp_path):
    from tfgeo.models import mlp as mlp_lib

    path = str(tmp_path / "other.keras")
    mlp_lib.mlp((28, 28, 1), 10, hidden=(8,)).save(path)
    proc = _run(f"--start_model={path}", f"--output_dir={tmp_path / 'out'}")
    assert proc.returncode != 0
    assert "--start_model" in proc.stderr and "(None, 8, 8, 1)" in proc.stderr


@pytest.mark.parametrize("content", [b"not a zip file", b"PK\x03\x04truncated"])
def test_corrupt_start_model_is_named(content, tmp_path):
    path = tmp_path / "broken.keras"
    path.write_bytes(content)
    proc = _run(f"--start_model={path}", f"--output_dir={tmp_path / 'out'}")
    assert proc.returncode != 0
    assert f"--start_model={path} cannot be loaded" in proc.stderr


def test_unwritable_output_dir_is_named(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        proc = _run(f"--output_dir={locked / 'run'}")
        assert proc.returncode != 0 and "--output_dir" in proc.stderr
    finally:
        locked.chmod(0o700)


def test_output_dir_under_a_file_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = _run(f"--output_dir={blocker / 'run'}")
    assert proc.returncode != 0 and "--output_dir" in proc.stderr


def test_start_model_with_nan_weights_is_refused(tmp_path):
    import numpy as np

    from tfgeo.models import mlp as mlp_lib

    model = mlp_lib.mlp((8, 8, 1), 10, hidden=(16,))
    weights = model.get_weights()
    weights[0][0, 0] = np.nan
    model.set_weights(weights)
    path = str(tmp_path / "nan.keras")
    model.save(path)
    proc = _run(f"--start_model={path}", f"--output_dir={tmp_path / 'out'}")
    assert proc.returncode != 0 and "has NaN or Inf weights" in proc.stderr

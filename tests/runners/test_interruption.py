"""A runner killed mid-run resumes from its last checkpoint to the same result, and a
folder made under other flags is refused or, with --noresume, cleared first."""
import os
import signal

import pytest

from tests.runner_process import kill_after
from tests.runner_process import read_results
from tests.runner_process import run_module

SPARSIFY = ["--sparsities=0.5,0.8,0.9", "--hidden=64", "--train_epochs=20",
            "--methods=one_shot,layerwise,geodesic,finetune,gradual", "--calibration_size=512",
            "--projection_steps=3", "--cg_iterations=50", "--label_budget=200", "--seed=4"]
TRAIN = ["--hidden=512,512", "--epochs=40", "--seed=5"]
CONNECT = ["--hidden=32", "--train_epochs=10", "--methods=geodesic,straight,bezier", "--noalign",
           "--relax_iterations=60", "--curve_converged_steps=100", "--eval_points=11",
           "--seed=7"]
CONTINUAL = ["--benchmark=split5", "--scenario=task", "--hidden=64", "--epochs=2",
             "--geodesic_steps=40", "--methods=naive,ewc,geodesic", "--seed=6"]



def _resume(module, out, args, whole):
    resumed = run_module(module, f"--output_dir={out}", *args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    return resumed


def test_sparsify_killed_after_a_stage_resumes_to_the_uninterrupted_result(tmp_path):
    whole, cut = str(tmp_path / "whole"), str(tmp_path / "cut")
    proc = run_module("runners.sparsify", f"--output_dir={whole}", *SPARSIFY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert kill_after("runners.sparsify", cut, SPARSIFY, 1) in (1, 2)
    resumed = _resume("runners.sparsify", cut, SPARSIFY, whole)
    assert "Resuming after stage" in resumed.stderr
    a, b = read_results(whole)["rows"], read_results(cut)["rows"]
    assert [(r["stage"], r["method"]) for r in a] == [(r["stage"], r["method"]) for r in b]
    for x, y in zip(a, b):
        for key in ("test_accuracy", "validation_accuracy", "measured_sparsity", "steps"):
            assert x.get(key) == pytest.approx(y.get(key), abs=1e-6), (x["method"], x["stage"], key)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_train_killed_mid_run_resumes_to_the_same_network(sig, tmp_path):
    whole, cut = str(tmp_path / "whole"), str(tmp_path / "cut")
    proc = run_module("runners.train", f"--output_dir={whole}", *TRAIN)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert kill_after("runners.train", cut, TRAIN, 5, sig) >= 5
    _resume("runners.train", cut, TRAIN, whole)
    a, b = read_results(whole)["summary"], read_results(cut)["summary"]
    for key in ("test_loss", "train_loss", "test_accuracy"):
        assert a[key] == pytest.approx(b[key], abs=1e-6), key


def test_continual_killed_after_a_task_resumes_to_the_same_accuracies(tmp_path):
    whole, cut = str(tmp_path / "whole"), str(tmp_path / "cut")
    proc = run_module("runners.continual", f"--output_dir={whole}", *CONTINUAL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert kill_after("runners.continual", cut, CONTINUAL, 2) >= 2
    _resume("runners.continual", cut, CONTINUAL, whole)
    a, b = read_results(whole)["methods"], read_results(cut)["methods"]
    for method in a:
        for row_a, row_b in zip(a[method]["R"], b[method]["R"]):
            assert row_a == pytest.approx(row_b, abs=1e-6), method


def test_connect_killed_after_a_path_resumes_to_the_same_paths(tmp_path):
    whole, cut = str(tmp_path / "whole"), str(tmp_path / "cut")
    proc = run_module("runners.connect", f"--output_dir={whole}", *CONNECT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # 4 paths (geodesic, straight, bezier at equal compute and converged): killed after 1.
    assert kill_after("runners.connect", cut, CONNECT, 1) in (1, 2, 3)
    _resume("runners.connect", cut, CONNECT, whole)
    a, b = read_results(whole)["paths"], read_results(cut)["paths"]
    assert set(a) == set(b) and len(a) == 4
    for name in a:
        for key in ("barrier", "min_accuracy", "euclidean_length", "metric_length"):
            assert a[name][key] == pytest.approx(b[name][key], abs=1e-6), (name, key)
        assert a[name]["loss"] == pytest.approx(b[name]["loss"], abs=1e-6), name


def test_other_flags_in_the_same_folder_are_refused_or_cleared(tmp_path):
    out = str(tmp_path / "run")
    args = ["--hidden=16", "--train_epochs=2", "--methods=one_shot,layerwise"]
    first = run_module("runners.sparsify", f"--output_dir={out}", "--sparsities=0.5", *args)
    assert first.returncode == 0, first.stderr[-2000:]
    second = run_module("runners.sparsify", f"--output_dir={out}", "--sparsities=0.6", *args)
    assert second.returncode != 0 and "--sparsities" in second.stderr
    # --noresume discards the earlier run's networks (start.keras) and says so.
    third = run_module("runners.sparsify", f"--output_dir={out}", "--sparsities=0.6",
                       "--noresume", *args[:1], "--train_epochs=3", *args[2:])
    assert third.returncode == 0, third.stderr[-2000:]
    assert "deleted" in third.stderr and "start.keras" in third.stderr
    assert "Training start.keras" in third.stderr


def test_train_and_connect_never_reuse_networks_made_under_other_flags(tmp_path):
    out = str(tmp_path / "train")
    assert run_module("runners.train", f"--output_dir={out}", "--hidden=8",
                      "--epochs=1").returncode == 0
    again = run_module("runners.train", f"--output_dir={out}", "--hidden=8", "--epochs=2",
                       "--learning_rate=0.01")
    assert again.returncode != 0
    assert "--epochs" in again.stderr and "--learning_rate" in again.stderr
    out = str(tmp_path / "connect")
    args = ["--methods=straight", "--noalign", "--train_epochs=1", "--eval_points=3"]
    first = run_module("runners.connect", f"--output_dir={out}", "--hidden=8", *args)
    assert first.returncode == 0, first.stderr[-2000:]
    assert {"endpoint_a.keras", "endpoint_b.keras"} <= set(os.listdir(out))
    other = run_module("runners.connect", f"--output_dir={out}", "--hidden=16", *args)
    assert other.returncode != 0 and "--hidden" in other.stderr
    fresh = run_module("runners.connect", f"--output_dir={out}", "--hidden=16", "--noresume",
                       *args)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    # The old endpoints were deleted (and the log says so), then trained anew at width 16.
    assert "deleted" in fresh.stderr and "endpoint_a.keras" in fresh.stderr
    import keras
    a = keras.saving.load_model(os.path.join(out, "endpoint_a.keras"))
    assert [l.units for l in a.layers if hasattr(l, "units")][0] == 16

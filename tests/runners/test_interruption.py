"""A runner killed mid-run resumes from its last checkpoint to the same result."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.runner_process import ROOT
from tests.runner_process import run_module

ARGS = ["--sparsities=0.5,0.8,0.9", "--hidden=64", "--train_epochs=20", "--max_steps=150",
        "--seed=4"]


def _rows(out):
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)["rows"]


@pytest.mark.parametrize("sig", [signal.SIGKILL])  # SIGTERM ends the same way, sooner
def test_sparsify_killed_after_a_stage_resumes_to_the_uninterrupted_result(tmp_path, sig):
    whole = str(tmp_path / "whole")
    proc = run_module("runners.sparsify", f"--output_dir={whole}", *ARGS)
    assert proc.returncode == 0, proc.stderr[-2000:]

    cut = str(tmp_path / "cut")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    victim = subprocess.Popen([sys.executable, "-m", "runners.sparsify", f"--output_dir={cut}",
                               *ARGS], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    state = os.path.join(cut, "state.json")
    deadline = time.time() + 300
    completed = 0
    while time.time() < deadline and victim.poll() is None:
        if os.path.exists(state):
            with open(state) as f:
                completed = json.load(f)["completed"]
            if completed >= 1:
                break
        time.sleep(0.1)
    assert victim.poll() is None, "the run finished before it could be interrupted"
    victim.send_signal(sig)
    victim.wait(timeout=60)
    assert completed in (1, 2)
    assert not [f for f in os.listdir(cut) if f.startswith(".tmp-")] or sig == signal.SIGKILL

    resumed = run_module("runners.sparsify", f"--output_dir={cut}", *ARGS)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resuming after stage" in resumed.stderr
    a, b = _rows(whole), _rows(cut)
    assert [(r["stage"], r["method"]) for r in a] == [(r["stage"], r["method"]) for r in b]
    for x, y in zip(a, b):
        for key in ("test_accuracy", "validation_accuracy", "measured_sparsity", "steps"):
            assert x.get(key) == pytest.approx(y.get(key), abs=1e-6), (x["method"], x["stage"], key)


def test_other_flags_in_the_same_folder_are_refused(tmp_path):
    out = str(tmp_path / "run")
    first = run_module("runners.sparsify", f"--output_dir={out}", "--sparsities=0.5",
                       "--hidden=16", "--train_epochs=2", "--max_steps=5",
                       "--methods=one_shot,geodesic")
    assert first.returncode == 0, first.stderr[-2000:]
    second = run_module("runners.sparsify", f"--output_dir={out}", "--sparsities=0.6",
                        "--hidden=16", "--train_epochs=2", "--max_steps=5",
                        "--methods=one_shot,geodesic")
    assert second.returncode != 0 and "--sparsities" in second.stderr

"""runners.continual: a shortened split-MNIST run end to end, and its flag checks."""
import json
import os

import numpy as np
import pytest

from tests.runner_process import case_outcomes
from tests.runner_process import run_module
from tests.shared_data import MNIST


def _run(*args):
    return run_module("runners.continual", *args)


def test_shortened_split_mnist_run(tmp_path):
    assert os.path.isdir(MNIST), f"MNIST originals missing at {MNIST}"
    out, logs = str(tmp_path / "continual"), str(tmp_path / "tb")
    proc = _run(f"--output_dir={out}", "--dataset=mnist", f"--manual_dir={MNIST}",
                "--hidden=100", "--train_examples=6000", "--epochs=2", "--geodesic_steps=100",
                "--scenario=domain", "--benchmark=split", f"--tensorboard_dir={logs}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out, "results.json")) as f:
        res = json.load(f)
    methods = res["methods"]
    assert set(methods) == {"naive", "ewc", "joint", "geodesic", "replay", "der", "fip",
                            "geodesic_euclidean"}
    for m, r in methods.items():
        R = np.array(r["R"])
        assert R.shape == (2, 2)
        assert r["backward_transfer"] == pytest.approx(R[1, 0] - R[0, 0])
        assert r["average_accuracy"] == pytest.approx(R[1].mean())
    # All methods start from the same task-0 network.
    assert len({tuple(r["R"][0]) for r in methods.values()}) == 1
    for m in ("geodesic", "geodesic_euclidean", "replay", "der", "fip"):
        assert methods[m]["backward_transfer"] > methods["naive"]["backward_transfer"], m
        assert methods[m]["average_accuracy"] > 0.5, m
    assert os.path.getsize(os.path.join(out, "accuracy.png")) > 10_000
    assert "BWT" in proc.stdout and "geodesic" in proc.stdout
    # Each method's progress lines follow a line that names the method and task.
    for m in methods:
        assert "Task 1 (" in proc.stderr and f"), method {m}:" in proc.stderr, m
    # Average accuracy per method after each task, as TensorBoard scalars.
    assert any(f.startswith("events") for _, _, files in os.walk(os.path.join(logs, "der"))
               for f in files)


BAD_FLAGS = [
    (["--benchmark=split_cifar100"], "--benchmark=split_cifar100"),
    (["--benchmark=permuted", "--scenario=class"], "--scenario=class"),
    (["--methods=naive,bogus"], "--methods"),
    (["--der_alpha=-1"], "--der_alpha"),
    (["--geodesic_rule=newton"], "--geodesic_rule"),
    (["--num_tasks=1"], "--num_tasks"),
    (["--memory_size=0"], "--memory_size"),
    (["--step_size=-1"], "--step_size"),
    (["--learning_rate=0"], "--learning_rate"),
    (["--scenario=online"], "--scenario"),
]
outcomes = case_outcomes("runners.continual", BAD_FLAGS)


@pytest.mark.parametrize("case", range(len(BAD_FLAGS)),
                         ids=[args[0].lstrip("-") for args, _ in BAD_FLAGS])
def test_bad_flags_name_the_culprit(case, outcomes):
    proc, (_, culprit) = outcomes[case], BAD_FLAGS[case]
    assert proc.returncode != 0
    assert culprit in proc.stderr
    assert "tasks (" not in proc.stderr  # failed before building tasks

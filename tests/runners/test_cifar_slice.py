"""Each application's runner, shortened, on a conv net and a slice of the shared CIFAR-10 archive.

The slice is the first 100 training and 50 test JPEGs of each class (1,000 /
500 images, `tests.shared_data.cifar10_slice`); the nets are the zoo's VGG11
at width 0.125 (about 145k weights) and LeNet-5. Asserted: finite numbers in
range, the mechanics the recorded CIFAR-10 runs rely on (sparsity reached,
kill-and-resume of the sparsification's first stage to the same result), and
orderings that hold with a wide margin on this slice (e.g. one-shot pruning
to 90% loses to both reconstructions; the straight line's barrier is the
highest). Marked `cifar`: run by `.ci/run` as its own pass (README, What is
checked), not by the default `python -m pytest -q`.
"""
import math
import os

import pytest

from tests.runner_process import kill_after
from tests.runner_process import read_results
from tests.runner_process import run_module
from tests.shared_data import CIFAR10_ARCHIVE
from tests.shared_data import cifar10_slice

pytestmark = pytest.mark.cifar

VGG = ["--model=vgg11", "--width=0.125", "--train_epochs=15"]
SPARSIFY = [*VGG, "--sparsities=0.5,0.9", "--calibration_size=256", "--label_budget=20",
            "--distill_steps=20",
            "--projection_steps=3", "--verbose=0"]
CONNECT = [*VGG, "--methods=geodesic,straight,bezier", "--relax_iterations=60",
           "--curve_converged_steps=0", "--eval_points=11", "--verbose=0"]
CONTINUAL = ["--model=lenet5", "--benchmark=split5", "--scenario=task", "--epochs=10",
             "--methods=naive,der,geodesic,joint", "--memory_size=200", "--verbose=0"]


@pytest.fixture(scope="module")
def data_flags(tmp_path_factory):
    assert os.path.isfile(CIFAR10_ARCHIVE), f"shared CIFAR-10 archive missing at {CIFAR10_ARCHIVE}"
    folder = tmp_path_factory.mktemp("cifar10")
    archive = cifar10_slice(folder, train_per_class=100, test_per_class=50)
    return ["--dataset=image_folder", f"--image_folder={archive}",
            f"--data_dir={folder / 'cache'}"]


def _run(module, out, *args):
    proc = run_module(module, f"--output_dir={out}", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_sparsify_on_a_conv_net_resumes_after_its_first_stage(data_flags, tmp_path):
    args = [*data_flags, *SPARSIFY]
    whole, cut = str(tmp_path / "whole"), str(tmp_path / "cut")
    proc = _run("runners.sparsify", whole, *args)
    # Conv nets on a CPU run in graph mode, and the log says why.
    assert "--compile=auto: graph mode" in proc.stderr
    assert kill_after("runners.sparsify", cut, args, 1) == 1
    resumed = _run("runners.sparsify", cut, *args)
    assert "Resuming after stage 1" in resumed.stderr
    rows, again = read_results(whole)["rows"], read_results(cut)["rows"]
    assert [(r["stage"], r["method"]) for r in rows] == [(r["stage"], r["method"]) for r in again]
    for x, y in zip(rows, again):
        for key in ("test_accuracy", "measured_sparsity"):
            assert x[key] == pytest.approx(y[key], abs=1e-6), (x["method"], x["stage"], key)

    at = {(r["sparsity"], r["method"]): r for r in rows}
    assert 0.15 < at[(0.0, "dense")]["test_accuracy"] <= 1.0  # chance is 0.10
    for r in rows:
        assert 0.0 <= r["test_accuracy"] <= 1.0
        assert r["measured_sparsity"] == pytest.approx(r["sparsity"], abs=2e-3)
        assert math.isfinite(r["gradient_equivalents"]) and r["gradient_equivalents"] >= 0
    assert at[(0.9, "geodesic")]["gradient_equivalents"] > 0
    # At 90% one-shot magnitude pruning loses most of the net; both reconstructions
    # keep more (0.15 vs 0.24 / 0.22 when written; 500 test images, so a wide margin).
    for method in ("layerwise", "geodesic"):
        assert at[(0.9, method)]["test_accuracy"] > at[(0.9, "one_shot")]["test_accuracy"] + 0.02


def test_continual_on_split_cifar10_with_a_conv_net(data_flags, tmp_path):
    out = str(tmp_path / "continual")
    _run("runners.continual", out, *data_flags, *CONTINUAL)
    methods = read_results(out)["methods"]
    for name, m in methods.items():
        assert len(m["R"]) == 5 and all(len(row) == 5 for row in m["R"])
        assert all(0.0 <= a <= 1.0 for row in m["R"] for a in row), name
        assert math.isfinite(m["average_accuracy"]) and math.isfinite(m["backward_transfer"])
    # Joint training bounds naive fine-tuning from above, and both memory methods
    # forget less than naive (BWT -0.16 vs -0.04 / +0.00 when written).
    assert methods["joint"]["average_accuracy"] > methods["naive"]["average_accuracy"]
    for name in ("der", "geodesic"):
        assert methods[name]["backward_transfer"] > methods["naive"]["backward_transfer"] + 0.03


def test_connect_two_conv_nets(data_flags, tmp_path):
    out = str(tmp_path / "connect")
    _run("runners.connect", out, *data_flags, *CONNECT)
    paths = read_results(out)["paths"]
    assert set(paths) == {f"{m} A->B{a}" for m in ("geodesic", "straight")
                          for a in ("", " aligned")} | {"bezier A->B (equal)",
                                                        "bezier A->B aligned (equal)"}
    for name, p in paths.items():
        assert all(math.isfinite(v) for v in p["loss"]), name
        assert all(0.0 <= a <= 1.0 for a in p["accuracy"]), name
    # The straight line's barrier is the highest, with or without weight matching
    # (0.37 vs 0.13 geodesic unaligned when written).
    for suffix in ("", " aligned"):
        straight = paths[f"straight A->B{suffix}"]["barrier"]
        assert paths[f"geodesic A->B{suffix}"]["barrier"] < straight - 0.05

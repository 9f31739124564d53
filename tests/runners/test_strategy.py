"""--strategy on the runners: mirrored over 2 logical CPUs reproduces the
single-device walk; strategies that cannot run here fail with one clear line."""
import json
import os

import pytest

from tests.runner_process import run_module

WALK = ["--steps=60", "--record_every=30", "--train_epochs=10"]


def _summary(out):
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)["summary"]


def _path(out):
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)["path"]


def test_walk_mirrored_over_two_logical_cpus_matches_default(tmp_path):
    summaries = []
    for name, extra in (("default", []), ("mirrored", ["--strategy=mirrored", "--logical_cpus=2"])):
        out = str(tmp_path / name)
        proc = run_module("runners.walk", f"--output_dir={out}", *WALK, *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
        summaries.append(_summary(out))
    assert "2 replica(s)" in proc.stderr and "graph mode: XLA does not compile MirroredStrategy" in proc.stderr
    default, mirrored = summaries
    # Two replicas sum gradients in another order, so the two trained start networks
    # differ in their last bits, amplified by 10 epochs of training (weights differ
    # by a few per cent): the dense networks' accuracies before and after the walk
    # agree within 1% of the 450 test images. Pruned accuracies are not compared:
    # magnitude-ranking ties of two nearly equal networks flip and move a 90%-pruned
    # net by points. Single-device equality of the distributed operators themselves
    # is tested in float64 to 1e-10 in tests/test_distribute.py.
    assert mirrored["sparsity"] == default["sparsity"]
    assert mirrored["start_test_accuracy"] == pytest.approx(default["start_test_accuracy"],
                                                            abs=1e-2)
    ends = [_path(str(tmp_path / n))[-1]["geodesic_test_accuracy"]
            for n in ("default", "mirrored")]
    assert ends[1] == pytest.approx(ends[0], abs=1e-2)


@pytest.mark.parametrize("strategy", [["--strategy=multi_worker"],
                                      ["--strategy=mirrored", "--logical_cpus=2"]])
@pytest.mark.parametrize("module,method", [("runners.continual", "geodesic"),
                                           ("runners.connect", "fip")])
def test_a_method_that_is_not_distributed_is_refused_in_one_line(module, method, strategy,
                                                                  tmp_path):
    # The defaults include it: the runner names it before any training.
    proc = run_module(module, *strategy, f"--output_dir={tmp_path}")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("FATAL --strategy") and f"--methods={method}" in last, last
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("flag,message", [
    ("--strategy=tpu", "no TPU on this machine"),
    ("--strategy=ring", "--strategy"),
])
def test_unavailable_strategies_fail_clearly(flag, message, tmp_path):
    if os.environ.get("TPU_NAME") and "tpu" in flag:
        pytest.skip("a TPU is configured")
    proc = run_module("runners.sparsify", flag, f"--output_dir={tmp_path}")
    assert proc.returncode != 0 and message in proc.stderr

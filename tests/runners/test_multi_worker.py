"""Every runner under MultiWorkerMirroredStrategy: two worker processes on
loopback ports write the results the single-process run writes (the same
global batches, each split between the workers)."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.runner_process import ROOT
from tests.runner_process import free_ports
from tests.runner_process import run_module

ARGS = ["--steps=20", "--record_every=10", "--train_epochs=3", "--hidden=32", "--seed=2"]


def _outcome(out):
    with open(os.path.join(out, "results.json")) as f:
        summary = json.load(f)["summary"]
    model = keras.saving.load_model(os.path.join(out, "walked.keras"))
    return summary, model.get_weights()


# Label-free and label-using methods (masked fine-tuning, gradual pruning) in one
# run; graph mode on one device too, as on several replicas.
SPARSIFY = ["--methods=one_shot,layerwise,geodesic,distill,finetune,gradual",
            "--sparsities=0.5,0.8", "--calibration_size=256", "--projection_steps=3",
            "--distill_steps=60", "--label_budget=40", "--seed=1", "--compile=graph"]


def _two_workers(module, outs, args):
    workers = [f"localhost:{p}" for p in free_ports(2)]
    procs = []
    for index, out in enumerate(outs):
        config = json.dumps({"cluster": {"worker": workers},
                             "task": {"type": "worker", "index": index}})
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT, TF_CONFIG=config)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", module, "--strategy=multi_worker", f"--output_dir={out}",
             *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True))
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]


def test_walk_runner_on_two_workers_equals_one_process(tmp_path):
    single = str(tmp_path / "single")
    proc = run_module("runners.walk", f"--output_dir={single}", *ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outs = [str(tmp_path / f"worker{index}") for index in range(2)]
    _two_workers("runners.walk", outs, ARGS)
    (ref_summary, ref_weights), *workers_out = [_outcome(o) for o in [single, *outs]]
    for summary, weights in workers_out:
        # float32 sums over two halves of each batch instead of one, amplified by
        # 20 truncated CG solves: up to 4e-4 measured on a loaded CPU (weights
        # ~0.1); the accuracies below must agree too.
        for a, b in zip(weights, ref_weights):
            np.testing.assert_allclose(a, b, rtol=1e-2, atol=2e-3)
        for key in ("start_test_accuracy", "geodesic_then_pruned_test_accuracy"):
            assert summary[key] == pytest.approx(ref_summary[key], abs=2.5e-3), key
    np.testing.assert_array_equal(workers_out[0][1][0], workers_out[1][1][0])


def test_sparsify_on_two_workers_equals_one_process(tmp_path):
    from tfgeo.experiments import data
    import tfgeo

    digits = data.load_digits(flat=False)  # as the runner loads it
    keras.utils.set_random_seed(0)
    start = keras.Sequential([keras.Input(digits.input_shape), keras.layers.Flatten(),
                              keras.layers.Dense(48, activation="relu"), keras.layers.Dense(10)])
    start.compile("adam", tfgeo.losses.classification_loss())
    start.fit(digits.train.x, digits.train.y, epochs=5, batch_size=64, verbose=0)
    path = str(tmp_path / "start.keras")
    start.save(path)
    args = [f"--start_model={path}", *SPARSIFY]
    single = str(tmp_path / "single")
    proc = run_module("runners.sparsify", f"--output_dir={single}", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outs = [str(tmp_path / f"worker{i}") for i in range(2)]
    _two_workers("runners.sparsify", outs, args)

    def rows(out):
        with open(os.path.join(out, "results.json")) as f:
            return {(r["method"], r["stage"]): r for r in json.load(f)["rows"]}

    reference = rows(single)
    assert {m for m, _ in reference} == {"dense", "one_shot", "layerwise", "geodesic", "distill",
                                         "finetune", "gradual"}
    for out in outs:
        got = rows(out)
        assert set(got) == set(reference)
        for key, r in reference.items():
            assert got[key]["measured_sparsity"] == r["measured_sparsity"]
            # float32 sums over two shards instead of one, amplified by the
            # Gauss-Newton steps at 80 %: measured 2 of 270 validation images
            # (7.4e-3); the distance each method minimises within 10 % (measured
            # 2 % on earlier CPUs, 3.3 % for the geodesic's 3e-4 at 80 % on a CPU
            # where oneDNN is on by default: its sums round otherwise).
            if "functional_distance" in r:
                assert got[key]["functional_distance"] == pytest.approx(
                    r["functional_distance"], rel=1e-1, abs=1e-6), key
            for split in ("validation_accuracy", "test_accuracy"):
                if split in r:
                    assert got[key][split] == pytest.approx(r[split], abs=1.5e-2), (key, split)
    first, second = rows(outs[0]), rows(outs[1])
    for key in reference:  # the workers hold the same networks
        for field in ("functional_distance", "test_accuracy", "gradient_equivalents"):
            assert first[key].get(field) == second[key].get(field), (key, field)


#: Shortened runs of the runners that train their networks with Keras's fit on
#: one device (`tfgeo.distribute.fit` by hand on workers; runners.sparsify's
#: fine-tuning: above). --compile=graph on one device
#: too: several replicas always run in graph mode, and XLA rounds otherwise.
FIT_RUNS = {
    "runners.train": ["--epochs=2", "--seed=3"],
    "runners.continual": ["--hidden=16", "--epochs=2", "--methods=naive,ewc,der",
                          "--memory_size=64", "--compile=graph"],
    "runners.connect": ["--hidden=16", "--train_epochs=2", "--eval_points=5",
                        "--relax_iterations=10", "--curve_converged_steps=10",
                        "--methods=geodesic,bezier,straight", "--noalign", "--compile=graph"],
}


def _numbers(tree, path=()):
    """{path: number} of every number in a results.json, wall-clock times left out."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() if key != "config" and "second" not in key
                for k, v in _numbers(sub, path + (key,)).items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in _numbers(sub, path + (i,)).items()}
    if isinstance(tree, (int, float)) and not isinstance(tree, bool):
        return {path: float(tree)}
    return {}


@pytest.mark.parametrize("module", sorted(FIT_RUNS))
def test_runner_on_two_workers_writes_the_single_process_results(module, tmp_path):
    args = FIT_RUNS[module]
    single = str(tmp_path / "single")
    proc = run_module(module, f"--output_dir={single}", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outs = [str(tmp_path / f"worker{i}") for i in range(2)]
    _two_workers(module, outs, args)
    results = []
    for out in (single, *outs):
        with open(os.path.join(out, "results.json")) as f:
            results.append(_numbers(json.load(f)))
    reference, first, second = results
    assert len(reference) > 10 and set(first) == set(reference)
    assert first == second  # the workers write the same results
    for key, value in reference.items():
        # float32 sums over two halves of each batch instead of one. Measured:
        # accuracies equal, losses within 1e-4, everything else within 1e-6.
        loss = "loss" in str(key[-1]) or "loss" in str(key[-2:])
        assert first[key] == pytest.approx(value, rel=1e-2 if loss else 1e-3,
                                           abs=5e-3), key

"""tf.distribute: the geodesic step under MirroredStrategy (2 logical CPUs) and
MultiWorkerMirroredStrategy (2 local worker processes) equals the single-device
step on the same global batches; strategy errors are clear."""
import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from tests.runner_process import ROOT
from tests.runner_process import free_ports
from tfgeo import distribute


def _env(**extra):
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT, **extra)


def _run(mode, output, workload="walk", **env):
    proc = subprocess.run([sys.executable, "-m", "tests.distributed_process", mode, output,
                           workload],
                          cwd=ROOT, env=_env(**env), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _weights(path):
    with np.load(path) as npz:
        return [npz[f"arr_{i}"] for i in range(len(npz.files))]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("single") / "w.npz")
    info = _run("single", path)
    return info, _weights(path)


def test_mirrored_two_replicas_equals_single_device(single, tmp_path):
    info, reference = single
    path = str(tmp_path / "w.npz")
    mirrored = _run("mirrored", path)
    assert mirrored["replicas"] == 2
    for a, b in zip(_weights(path), reference):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)  # float64
    assert mirrored["path_length"] == pytest.approx(info["path_length"], rel=1e-10)
    assert mirrored["loss"] == pytest.approx(info["loss"], rel=1e-10)
    assert max(np.abs(a).max() for a in reference) > 0


def _two_workers(tmp_path, workload="walk"):
    """Runs the workload on two loopback workers; their weights and JSON lines."""
    workers = [f"localhost:{p}" for p in free_ports(2)]
    procs, outputs = [], []
    for index in range(2):
        out = str(tmp_path / f"w{index}.npz")
        config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tests.distributed_process", "worker", out, workload],
            cwd=ROOT, env=_env(TF_CONFIG=config), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True))
        outputs.append(out)
    infos = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        infos.append(json.loads(out.strip().splitlines()[-1]))
    return [_weights(o) for o in outputs], infos


def _three_ways(tmp_path, workload):
    """The workload on one device, over 2 logical CPUs and on 2 loopback workers:
    the single run's JSON line and weights, (JSON line, weights) of the mirrored
    run, the two workers' weights and their JSON lines."""
    path = str(tmp_path / "single.npz")
    single = _run("single", path, workload)
    path_m = str(tmp_path / "mirrored.npz")
    mirrored = _run("mirrored", path_m, workload)
    workers, infos = _two_workers(tmp_path, workload)
    assert mirrored["replicas"] == 2 and infos[0]["replicas"] == 2
    return single, _weights(path), (mirrored, _weights(path_m)), workers, infos


def test_multi_worker_two_processes_equal_single_process(single, tmp_path):
    _, reference = single
    (first, second), _ = _two_workers(tmp_path)
    for a, b, r in zip(first, second, reference):
        np.testing.assert_array_equal(a, b)  # both workers hold identical weights
        np.testing.assert_allclose(a, r, rtol=1e-10, atol=1e-12)


def test_label_free_pruning_is_the_same_on_one_device_two_replicas_and_two_workers(tmp_path):
    # The projection: calibration inputs sharded over replicas (49 + 48 of 97),
    # layer-wise reconstruction's sums over workers,
    # every mean all-reduced: the same CG iterations and steps. Distillation:
    # each batch split over the replicas, gradients summed, its rate probed and its
    # steps stopped early on held-out inputs. The same weights (float64).
    single, reference, (mirrored, mirrored_weights), (first, second), infos = _three_ways(
        tmp_path, "label_free")
    # The layer-wise statistics: each worker summed half the inputs.
    assert [i["worker_share"] for i in (single, mirrored, *infos)] == [
        [0, 1], [0, 1], [0, 2], [1, 2]]
    for info in (mirrored, *infos):
        for key in ("projection_steps", "cg_iterations", "products", "distill_steps",
                    "distill_best_steps", "gradient_equivalents"):
            assert info[key] == single[key], key
        for key in ("projection_distance", "distill_distance"):
            assert info[key] == pytest.approx(single[key], rel=1e-9), key
    for got in (mirrored_weights, first, second):
        for a, r in zip(got, reference):
            np.testing.assert_allclose(a, r, rtol=1e-9, atol=1e-12)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)  # the workers agree bit for bit
    assert single["projection_distance"] > 0 and single["distill_distance"] > 0
    assert single["projection_steps"] == 3


def test_continual_der_and_the_geodesic_path_are_the_same_on_one_device_two_replicas_and_two_workers(
        tmp_path):
    # ContinualLearner("der") and the Bezier curve: `distribute.fit` (one
    # iterator of one device's batches, each split over the replicas), the
    # memory term weighed 1/R on each. The relaxed geodesic path: each batch
    # split, gradients weighed 1/R and summed. Keras computes the compiled loss
    # in float32, hence 1e-7 rather than float64's 1e-9.
    single, reference, (mirrored, mirrored_weights), (first, second), infos = _three_ways(
        tmp_path, "continual_path")
    for info in (mirrored, *infos):
        assert info["steps"] == single["steps"] == [6, 6]
        assert info["gradient_equivalents"] == single["gradient_equivalents"]
        assert info["accuracy"] == pytest.approx(single["accuracy"], abs=1e-12)
        assert info["path_energy"] == pytest.approx(single["path_energy"], rel=1e-7)
    for got in (mirrored_weights, first, second):
        assert len(got) == len(reference) == 4 + 2 * 5 * 4  # the net; 5 points of 2 paths
        for a, r in zip(got, reference):
            np.testing.assert_allclose(a, r, rtol=1e-7, atol=1e-9)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)  # the workers agree bit for bit
    # The geodesic path moved off the straight line (its inner points are trained).
    points = reference[4:]
    middle = [0.5 * (a + b) for a, b in zip(points[:4], points[16:])]
    assert max(np.abs(m - p).max() for m, p in zip(middle, points[8:12])) > 1e-4


def test_strategy_errors_are_clear(monkeypatch):
    with pytest.raises(ValueError, match="Unknown strategy 'horovod'"):
        distribute.make_strategy("horovod")
    monkeypatch.delenv("TPU_NAME", raising=False)
    if not distribute._local_tpu_present():
        with pytest.raises(ValueError, match="strategy tpu: no TPU on this machine"):
            distribute.make_strategy("tpu")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.make_strategy("multi_worker")
    for config, message in (
            ({"cluster": {"worker": ["localhost:1", "localhost:1"]},
              "task": {"type": "worker", "index": 0}}, "names localhost:1 more than once"),
            ({"cluster": {"worker": ["localhost:1", "localhost:2"]},
              "task": {"type": "worker", "index": 2}}, "task.index 2 is not the index"),
            ({"cluster": {"worker": "localhost:1"}, "task": {"index": 0}}, "list of 'host:port'")):
        monkeypatch.setenv("TF_CONFIG", json.dumps(config))
        with pytest.raises(ValueError, match=message):  # before anything starts
            distribute.make_strategy("multi_worker")


def test_a_worker_whose_peer_never_comes_ends_in_one_line_within_its_timeout():
    # TensorFlow waits for every worker in native code no signal interrupts
    # (SIGTERM did not end it in 60 s); the watchdog bounds the wait.
    peers = [f"localhost:{p}" for p in free_ports(2)]
    config = json.dumps({"cluster": {"worker": peers}, "task": {"type": "worker", "index": 0}})
    code = ("from tfgeo import distribute\n"
            "distribute.make_strategy('multi_worker', connect_timeout=5)\n"
            "print('joined')")
    began = time.time()
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(TF_CONFIG=config),
                          capture_output=True, text=True, timeout=120)
    assert time.time() - began < 100
    assert proc.returncode != 0 and "joined" not in proc.stdout
    fatal = [line for line in proc.stderr.splitlines() if "FATAL" in line]
    assert len(fatal) == 1 and "did not all join within 5 s" in fatal[0]
    assert all(p in fatal[0] for p in peers)


def test_replicated_step_compiles_with_xla_and_static_shapes():
    """What a TPU needs, checked on CPU: the unrolled step under jit_compile=True
    with static batch shapes (drop_remainder) compiles and matches the while-loop step."""
    from tfgeo import models
    from tfgeo import geodesic_model, objectives
    from tfgeo.experiments import data

    ds = data.load_digits(seed=0)
    results = []
    for unroll, jit in ((False, False), (True, True)):
        keras.utils.set_random_seed(0)
        net = models.get("mlp", ds.input_shape, 10, hidden=(16,))
        walker = geodesic_model.GeodesicModel(net, objectives.TaskLossDescent(), step_size=0.1,
                                              cg_max_iterations=5, unroll_cg=unroll)
        walker.compile(jit_compile=jit)
        batches = data.to_dataset(ds.train, 64, drop_remainder=True).take(3)
        assert batches.element_spec[0].shape[0] == 64  # static
        walker.fit(batches, epochs=1, verbose=0)
        results.append([w.numpy() for w in net.trainable_variables])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["geodesic", "distill"])
def test_prune_inside_a_one_device_strategy_equals_no_strategy(method):
    # A single-GPU user's MirroredStrategy: its mirrored variables cannot be
    # watched from the cross-replica context, so prune runs per replica there.
    import tensorflow as tf

    from tfgeo import weights as weights_lib
    from tfgeo.sparsify import staged_pruning

    x = np.random.default_rng(0).standard_normal((97, 8))
    out = []
    for strategy in (None, tf.distribute.MirroredStrategy(["/cpu:0"])):
        keras.utils.set_random_seed(0)
        with strategy.scope() if strategy else tf.distribute.get_strategy().scope():
            net = keras.Sequential([keras.Input((8,)),
                                    keras.layers.Dense(16, activation="tanh", dtype="float64"),
                                    keras.layers.Dense(3, dtype="float64")])
            staged_pruning.prune(net, x, [0.5, 0.7], method=method, steps=2, verbose=0,
                                 batch_size=32, distillation_settings=staged_pruning.Distillation(
                                     20, 32, 3e-3, held_out_checks=2))
        out.append(weights_lib.get_trainable(net))
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert sum(int(np.sum(w == 0)) for w in out[0]) > 0

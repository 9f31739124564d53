r"""Strong scaling of the Gauss-Newton projection under tf.distribute, on this machine.

Runs the same projection (LeNet-300-100 at its initialisation, a 90 % magnitude
mask, --examples random calibration inputs, --steps Gauss-Newton steps with a
fixed CG budget: tolerance 0, so every run does the same --cg_iterations per
solve) in fresh processes:

  single    one device;
  mirrored  MirroredStrategy over 2 logical CPU devices in one process;
  workers   MultiWorkerMirroredStrategy, 2 loopback worker processes;

each with --threads intra-op threads per process, and prints the projection's
wall seconds and each ratio to `single`, measured in one run. On a machine of 2
cores the ratios show the cost of sharding and all-reducing, not a speed-up
a GPU or TPU slice would give: absolute figures need such hardware.

    python benchmarks/projection_scaling.py --output=benchmarks/projection_scaling.json
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("examples", 4096, "Calibration inputs.")
flags.DEFINE_integer("steps", 2, "Gauss-Newton steps.")
flags.DEFINE_integer("cg_iterations", 10, "CG iterations per solve (all of them: tolerance 0).")
flags.DEFINE_integer("threads", 1, "Intra-op threads per process (0: TensorFlow's default).")
flags.DEFINE_string("role", "", "Internal: the run of one process (single, mirrored, worker).")
flags.DEFINE_string("output", "", "Optional JSON output path.")


def _project(role: str) -> dict:
    import tensorflow as tf

    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    if role == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np

    from tfgeo import distribute
    from tfgeo import models
    from tfgeo import weights as weights_lib
    from tfgeo.sparsify import projection
    from tfgeo.sparsify import pruning

    strategy = {"single": lambda: tf.distribute.get_strategy(),
                "mirrored": lambda: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
                "worker": lambda: distribute.make_strategy("multi_worker")}[role]()
    x = np.random.default_rng(0).uniform(size=(FLAGS.examples, 28, 28, 1)).astype("float32")
    keras.utils.set_random_seed(0)
    with strategy.scope():
        net = models.get("lenet_300_100", (28, 28, 1), 10)
        masks = pruning.magnitude_masks(weights_lib.get_trainable(net), 0.9)
        solver = projection.Solver(damping=1e-3, max_iterations=FLAGS.cg_iterations,
                                   tolerance=0.0)
        dense = weights_lib.get_trainable(net)
        projection.gauss_newton_projection(net, masks, x[:256], steps=1, solver=solver)  # warm
        weights_lib.set_trainable(net, dense)  # the warm-up projected it
        began = time.perf_counter()
        report = projection.gauss_newton_projection(net, masks, x, steps=FLAGS.steps,
                                                    solver=solver)
        seconds = time.perf_counter() - began
    return {"role": role, "replicas": strategy.num_replicas_in_sync, "seconds": seconds,
            "products": report["products"], "distance": report["distance"]}


def _spawn(role: str, env=None) -> subprocess.Popen:
    args = [sys.executable, os.path.abspath(__file__), f"--role={role}",
            f"--examples={FLAGS.examples}", f"--steps={FLAGS.steps}",
            f"--cg_iterations={FLAGS.cg_iterations}", f"--threads={FLAGS.threads}"]
    return subprocess.Popen(args, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                                                     **(env or {})),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"a benchmark process failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def main(_):
    if FLAGS.role:
        print(json.dumps(_project(FLAGS.role)))
        return
    runs = {"single": _result(_spawn("single")), "mirrored": _result(_spawn("mirrored"))}
    sockets = [socket.socket() for _ in range(2)]
    for s in sockets:
        s.bind(("localhost", 0))
    workers = [f"localhost:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    procs = [_spawn("worker", {"TF_CONFIG": json.dumps({
        "cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})})
        for i in range(2)]
    runs["workers"] = max((_result(p) for p in procs), key=lambda r: r["seconds"])
    base = runs["single"]["seconds"]
    print(f"Gauss-Newton projection, LeNet-300-100, {FLAGS.examples} inputs, {FLAGS.steps} "
          f"steps x {FLAGS.cg_iterations} CG iterations, {FLAGS.threads or 'default'} "
          f"intra-op thread(s) per process:")
    for name, r in runs.items():
        r["ratio_to_single"] = r["seconds"] / base
        print(f"  {name:<9} {r['replicas']} replica(s)  {r['seconds']:7.2f} s  "
              f"x{r['ratio_to_single']:.2f}  (products {r['products']}, distance "
              f"{r['distance']:.6g})")
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump({"flags": {k: FLAGS[k].value for k in
                                 ("examples", "steps", "cg_iterations", "threads")},
                       "cores": os.cpu_count(), "runs": runs}, f, indent=1)


if __name__ == "__main__":
    app.run(main)

"""Subprocess body for the tf.distribute tests (logical devices and cluster
settings must be fixed before TensorFlow starts, so each run is a process).

    python -m tests.distributed_process MODE OUTPUT.npz [WORKLOAD]

MODE: 'single' (default strategy), 'mirrored' (MirroredStrategy over 2
logical CPUs) or 'worker' (MultiWorkerMirroredStrategy from TF_CONFIG).
WORKLOAD 'walk' (the default): each takes the same 4 geodesic steps
(GeodesicModel.fit, TaskLossDescent) on the same global batches of 64 digits.
WORKLOAD 'label_free', inside `strategy.scope()`: the projection of a
float64 MLP onto a 70 %-sparse mask by 3 Gauss-Newton steps on 97
calibration inputs (an odd count: the replicas' shards differ in size), the
layer-wise reconstruction onto that mask (each worker sums its share of the
inputs), then `prune(method="distill")` of the same MLP through 50 -> 70 % with 30 masked
Adam steps on batches of 32 per stage. WORKLOAD 'continual_path', inside
`strategy.scope()`: `ContinualLearner(method="der")` on digits 0-4 then 5-9
(96 rows each, batches of 32, a memory of 32 rows), then the relaxed
geodesic path (`find_path(method="geodesic")`, 6 iterations on batches of
32) between that network and a second one. Each saves the final weights
and prints a JSON line.
"""
import json
import sys

import numpy as np
import tensorflow as tf

STEPS, GLOBAL_BATCH = 4, 64


def label_free(strategy, output):
    """The projection, then prune(method="distill"), on the same float64 MLP."""
    import keras

    from tfgeo import models
    from tfgeo.experiments import data
    from tfgeo import distribute
    from tfgeo.sparsify import layerwise
    from tfgeo.sparsify import projection as projection_lib
    from tfgeo.sparsify import pruning
    from tfgeo.sparsify import staged_pruning
    from tfgeo import weights as weights_lib

    ds = data.load_digits(seed=0)
    x = ds.train.x[:97].astype("float64")
    arrays, info = [], {"replicas": strategy.num_replicas_in_sync}
    with strategy.scope():
        keras.utils.set_random_seed(0)
        net = models.get("mlp", ds.input_shape, 10, hidden=(16,), dtype="float64")
        masks = pruning.magnitude_masks(weights_lib.get_trainable(net), 0.7)
        report = projection_lib.gauss_newton_projection(
            net, masks, x, steps=3,
            solver=projection_lib.Solver(damping=1e-3, max_iterations=8, tolerance=1e-3))
        arrays += [w.numpy() for w in net.trainable_variables]
        info.update(projection_distance=report["distance"], projection_steps=report["steps"],
                    cg_iterations=report["cg_iterations"], products=report["products"])
        keras.utils.set_random_seed(0)
        net = models.get("mlp", ds.input_shape, 10, hidden=(16,), dtype="float64")
        refit, _ = layerwise.reconstruct(net, masks, x, chunk_size=16)
        arrays += refit
        info.update(worker_share=list(distribute.worker_share()))
        report = staged_pruning.prune(
            net, x, [0.5, 0.7], method="distill", verbose=0, batch_size=32,
            distillation_settings=staged_pruning.Distillation(30, 32, (1e-2, 3e-3), probe_steps=10,
                                                              held_out_checks=3))
        arrays += [w.numpy() for w in net.trainable_variables]
        info.update(distill_distance=report.stages[-1]["functional_distance"],
                    distill_best_steps=[s["best_step"] for s in report.stages],
                    distill_steps=sum(s["steps"] for s in report.stages),
                    gradient_equivalents=report.gradient_equivalents)
    np.savez(output, *arrays)
    print(json.dumps(info))


def continual_path(strategy, output):
    """DER over two tasks, then the relaxed geodesic path, on float64 MLPs."""
    import keras

    import tfgeo
    from tfgeo import models
    from tfgeo.experiments import data

    ds = data.load_digits(seed=0)
    x, y = ds.train.x.astype("float64"), ds.train.y
    tasks = [(x[c][:96], y[c][:96]) for c in (y < 5, y >= 5)]
    with strategy.scope():
        keras.utils.set_random_seed(0)
        net = models.get("mlp", ds.input_shape, 10, hidden=(16,), dtype="float64")
        other = models.get("mlp", ds.input_shape, 10, hidden=(16,), dtype="float64")
        learner = tfgeo.continual.ContinualLearner(
            net, method="der", seed=0, epochs=2, batch_size=32, learning_rate=1e-2,
            memory_size=32, memory_batch=16)
        for task in tasks:
            learner.learn(*task)
        arrays = [w.numpy() for w in net.trainable_variables]
        path = tfgeo.connect.find_path(
            net, other, x[:192], y[:192], method="geodesic", num_points=5, verbose=0,
            relaxation=tfgeo.connect.Relaxation(iterations=6, inner_points=2, batch_size=32,
                                                learning_rate=1e-2))
        curve = tfgeo.connect.find_path(
            net, other, x[:192], y[:192], method="bezier", num_points=5, verbose=0,
            curve_training=tfgeo.connect.CurveTraining(batch_size=32, learning_rate=1e-2,
                                                       steps=6))
    arrays += [w for p in path.points for w in p] + [w for p in curve.points for w in p]
    np.savez(output, *arrays)
    print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                      "steps": [h["steps"] for h in learner.history],
                      "accuracy": [learner.evaluate(*t) for t in tasks],
                      "path_energy": path.info["energy"],
                      "gradient_equivalents": path.gradient_equivalents,
                      "curve_loss": curve.info["train_loss"]}))


def main(mode, output, workload="walk"):
    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    from tfgeo import models
    from tfgeo.experiments import data
    from tfgeo import distribute
    from tfgeo import geodesic_model
    from tfgeo import objectives

    strategy = {"single": lambda: distribute.make_strategy("default"),
                "mirrored": lambda: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
                "worker": lambda: distribute.make_strategy("multi_worker")}[mode]()
    if workload == "label_free":
        return label_free(strategy, output)
    if workload == "continual_path":
        return continual_path(strategy, output)
    ds = data.load_digits(seed=0)
    x = ds.train.x[:STEPS * GLOBAL_BATCH].astype("float64")
    y = ds.train.y[:STEPS * GLOBAL_BATCH]
    keras.utils.set_random_seed(0)
    with strategy.scope():
        net = models.get("mlp", ds.input_shape, 10, hidden=(16,), dtype="float64")
        walker = geodesic_model.GeodesicModel(net, objectives.TaskLossDescent(), step_size=0.1,
                                              cg_max_iterations=5)
        walker.compile(jit_compile=False,
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH, drop_remainder=True)
    if mode == "worker":  # Keras 3 fit does not run under MultiWorkerMirroredStrategy
        assert distribute.run_steps(strategy, walker, batches, STEPS) == STEPS
        loss = float(walker.get_metrics_result()["loss"])
    else:
        history = walker.fit(batches, epochs=1, verbose=0, shuffle=False)
        loss = history.history["loss"][-1]
    np.savez(output, *[w.numpy() for w in net.trainable_variables])
    print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                      "path_length": float(walker.path_length.numpy()), "loss": loss}))


if __name__ == "__main__":
    main(*sys.argv[1:])

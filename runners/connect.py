r"""Connecting two trained networks: the geodesic path against the straight line.

    python -m runners.connect --model=lenet_300_100 --dataset=mnist \
        --manual_dir=../shared/data/mnist --output_dir=runs/connect_mnist

Endpoints: --model_a and --model_b (`.keras` files of one architecture), or
two networks trained here from --seed_a and --seed_b. The geodesic path walks
from A toward B (metric on training inputs) until within --tolerance of B,
then takes the last straight step; the straight line is evaluated at as many
points. With --align, B is also permuted onto A by weight matching (same
function) and both paths are run again to the aligned B.

Writes results.json (per path: accuracy and loss at every point, barrier,
Euclidean and metric length), paths.png, the geodesic points as
points_<path>.npz (reload with `tfgeo.connect.load_points`), and a table.
"""
from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from absl import logging

from runners import shared_flags
from tfgeo import results

FLAGS = flags.FLAGS
shared_flags.define_model_and_data()
shared_flags.define_training(prefix="train_")
shared_flags.define_run("runs/connect")
flags.DEFINE_string("model_a", None, "Endpoint A (`.keras`); else trained from --seed_a.")
flags.DEFINE_string("model_b", None, "Endpoint B (`.keras`); else trained from --seed_b.")
flags.DEFINE_integer("seed_a", 1, "Initialisation/shuffling seed of endpoint A when trained.")
flags.DEFINE_integer("seed_b", 2, "Initialisation/shuffling seed of endpoint B when trained.")
flags.DEFINE_float("step_size", 0.1, "Geodesic step length eps (> 0).")
flags.DEFINE_float("damping", 1e-3, "lambda in (g + lambda I).", lower_bound=0.0)
flags.DEFINE_enum("output_metric", "fisher", ["fisher", "euclidean"], "Output-space metric M.")
flags.DEFINE_integer("cg_iterations", 10, "Conjugate-gradient iterations per step.",
                     lower_bound=1)
flags.DEFINE_integer("metric_batch", 256, "Training inputs per metric batch.", lower_bound=1)
flags.DEFINE_integer("max_steps", 3000, "Most geodesic steps.", lower_bound=1)
flags.DEFINE_float("tolerance", 0.01, "Stop walking once ||w_B - w|| is below this fraction of "
                   "||w_B - w_A||, then step straight to B; in [0, 1).")
flags.DEFINE_integer("record_every", 10, "Record (and evaluate) a point every this many steps.",
                     lower_bound=1)
flags.DEFINE_bool("align", True, "Also connect A to B permuted onto A by weight matching.")
flags.DEFINE_bool("jit_compile", True, "XLA-compile the geodesic step.")

flags.register_validator("step_size", lambda v: v > 0, "--step_size must be > 0.")
flags.register_validator("tolerance", lambda v: 0.0 <= v < 1.0, "--tolerance must be in [0, 1).")
flags.register_validator("model_a", lambda v: v is None or os.path.isfile(v),
                         "--model_a does not exist.")
flags.register_validator("model_b", lambda v: v is None or os.path.isfile(v),
                         "--model_b does not exist.")


def _endpoint(which, ds, train_split):
    import keras

    path = FLAGS[f"model_{which}"].value
    if path:
        return shared_flags.start_model(path, ds, train_split, None, FLAGS.output_dir,
                                        flag_name=f"--model_{which}")
    seed = FLAGS[f"seed_{which}"].value
    saved = os.path.join(FLAGS.output_dir, f"endpoint_{which}.keras")
    if os.path.exists(saved):
        return keras.saving.load_model(saved)
    keras.utils.set_random_seed(seed)
    model = shared_flags.build_model(ds)
    logging.info("Training endpoint %s (seed %d)...", which.upper(), seed)
    shared_flags.train_base(model, train_split, None, prefix="train_", seed=seed)
    results.save_model(model, saved)
    return model


def run():
    shared_flags.check_model_fits_dataset()

    from tfgeo import connect
    from tfgeo import data
    from tfgeo import permutation
    from tfgeo import plotting

    ds = shared_flags.load_data()
    train_split, _ = shared_flags.split_validation(ds)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    model_a = _endpoint("a", ds, train_split)
    model_b = _endpoint("b", ds, train_split)
    a = [w.numpy() for w in model_a.trainable_variables]
    b = [w.numpy() for w in model_b.trainable_variables]
    if [w.shape for w in a] != [w.shape for w in b]:
        sys.exit("FATAL --model_b has weights of other shapes than --model_a: "
                 f"{[w.shape for w in b]} vs {[w.shape for w in a]}.")
    targets = {"B": b}
    if FLAGS.align:
        try:
            units = permutation.spec(model_a)
        except ValueError as e:
            sys.exit(f"FATAL --align: {e}")
        _, targets["B aligned"] = permutation.weight_matching(units, a, b, seed=FLAGS.seed)
        logging.info("Weight matching: ||B - A|| %.3f -> %.3f", connect.distance(a, b),
                     connect.distance(a, targets["B aligned"]))
    metric_inputs = train_split.x[:FLAGS.metric_batch]
    walk_data = data.to_dataset(train_split, FLAGS.metric_batch, shuffle=True, seed=FLAGS.seed,
                                drop_remainder=True, repeat=True)
    report, series_acc, series_loss, rows = {}, {}, {}, []
    for name, target in targets.items():
        for var, w in zip(model_a.trainable_variables, a):
            var.assign(w)
        logging.info("Geodesic path A -> %s ...", name)
        walk = connect.geodesic_path(
            model_a, target, walk_data, step_size=FLAGS.step_size, damping=FLAGS.damping,
            output_metric=FLAGS.output_metric, cg_max_iterations=FLAGS.cg_iterations,
            tolerance=FLAGS.tolerance, max_steps=FLAGS.max_steps,
            record_every=FLAGS.record_every, jit_compile=FLAGS.jit_compile)
        if not walk["reached"]:
            logging.warning("The walk to %s used all %d steps (distance %.3g of %.3g left); "
                            "the last straight step covers the rest.", name, FLAGS.max_steps,
                            walk["final_distance"], walk["start_distance"])
        lines = {"geodesic": walk["points"],
                 "straight": connect.straight_path(a, target, len(walk["points"]))}
        for kind, points in lines.items():
            label = f"{kind} A->{name}"
            res = connect.evaluate_path(model_a, points, ds.test.x, ds.test.y, metric_inputs,
                                        FLAGS.output_metric)
            if kind == "geodesic":
                res.update(steps=walk["steps"], reached=walk["reached"],
                           seconds=walk["seconds"])
                connect.save_points(os.path.join(
                    FLAGS.output_dir, f"points_{name.replace(' ', '_')}.npz"), points)
            report[label] = res
            series_acc[label] = (res["position"], res["accuracy"])
            series_loss[label] = (res["position"], res["loss"])
            rows.append({"path": label, "points": res["points"], "barrier": res["barrier"],
                         "max_loss": res["max_loss"], "min_accuracy": res["min_accuracy"],
                         "euclid_len": res["euclidean_length"],
                         "metric_len": res["metric_length"]})
    endpoints = {k: report["straight A->B"][k][i] for k, i in
                 (("accuracy", 0), ("loss", 0))}
    endpoints.update(accuracy_b=report["straight A->B"]["accuracy"][-1],
                     loss_b=report["straight A->B"]["loss"][-1])
    results.write_json(os.path.join(FLAGS.output_dir, "results.json"), {
        "flags": shared_flags.flag_values(__name__), "dataset": ds.name,
        "endpoints": endpoints, "paths": report})
    plotting.panel_plot(
        os.path.join(FLAGS.output_dir, "paths.png"),
        [("test accuracy", series_acc), ("test loss", series_loss)],
        xlabel="normalised position along the path (Euclidean arc length)",
        title=f"{FLAGS.model} on {ds.name}: A (seed {FLAGS.seed_a}) to B (seed {FLAGS.seed_b})")
    print(f"{FLAGS.model} on {ds.name}: endpoints test accuracy A {endpoints['accuracy']:.4f}, "
          f"B {endpoints['accuracy_b']:.4f}; barrier = max loss - mean endpoint loss:")
    print(results.format_table(rows, list(rows[0])))


def main(argv):
    del argv
    with shared_flags.strategy().scope():
        run()


if __name__ == "__main__":
    app.run(main)

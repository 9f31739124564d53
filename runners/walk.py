r"""Geodesic walk demo: from a trained net toward its magnitude-pruned copy.

Trains a small MLP on the offline `digits` data, then walks a geodesic that
pulls the weights pruned at --sparsity toward zero while the kept weights
move freely (masked objective; metric on training inputs). Test accuracy is
compared with the straight line at the same distance from the target, and
the walk's end, projected onto the mask, with one-shot pruning.

    python -m runners.walk --output_dir=runs/walk
"""
from __future__ import annotations

import os

from absl import app
from absl import flags
from absl import logging

from runners import shared_flags
from tfgeo import results

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "runs/walk", "Where results.json, path.png and the models go.")
flags.DEFINE_integer("seed", 0, "Random seed (data split, init, shuffling).")
flags.DEFINE_integer("hidden", 64, "Hidden width of the MLP.", lower_bound=1)
flags.DEFINE_integer("train_epochs", 40, "Epochs to train the starting network.", lower_bound=1)
flags.DEFINE_float("sparsity", 0.9, "Fraction of kernel weights pruned in the target, in [0, 1).",
                   lower_bound=0.0)
flags.DEFINE_integer("steps", 300, "Geodesic steps.", lower_bound=1)
flags.DEFINE_float("step_size", 0.05, "Euclidean length eps of each step (> 0).")
flags.DEFINE_float("damping", 1e-3, "lambda in (g + lambda I).", lower_bound=0.0)
flags.DEFINE_enum("output_metric", "fisher", ["fisher", "euclidean"], "Output-space metric M.")
flags.DEFINE_integer("metric_batch", 256, "Training inputs per metric batch.", lower_bound=1)
flags.DEFINE_integer("cg_iterations", 10, "Conjugate-gradient iterations per step.", lower_bound=1)
flags.DEFINE_integer("record_every", 20, "Evaluate on the test set every this many steps.",
                     lower_bound=1)
flags.DEFINE_bool("jit_compile", True, "XLA-compile the geodesic step.")
shared_flags.define_strategy()

# Checked at flag parsing, before any heavy work: one line naming the flag.
flags.register_validator("sparsity", lambda v: v < 1.0, "--sparsity must be < 1.")
flags.register_validator("step_size", lambda v: v > 0, "--step_size must be > 0.")
flags.register_validator(
    "output_dir", results.writable_directory, "--output_dir must be a writable directory path.")


def run():
    import keras

    import models
    from tfgeo import data, geodesic_model, objectives, paths, plotting, pruning

    keras.utils.set_random_seed(FLAGS.seed)
    ds = data.load_digits(seed=FLAGS.seed)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    net = models.get("mlp", ds.input_shape, ds.num_classes, hidden=(FLAGS.hidden,))
    net.compile("adam", loss, metrics=["accuracy"])
    logging.info("Training the starting network (%d epochs)...", FLAGS.train_epochs)
    net.fit(ds.train.x, ds.train.y, epochs=FLAGS.train_epochs, batch_size=64, verbose=0)
    start = net.get_weights()
    masks = pruning.magnitude_masks(start, FLAGS.sparsity)
    target = pruning.apply_masks(start, masks)

    # Pull only the pruned coordinates; the kept ones are free to compensate.
    pruned_only = [1.0 - m for m in masks]
    objective = objectives.TowardTarget(target, mask=pruned_only)
    walker = geodesic_model.GeodesicModel(
        net, objective, step_size=FLAGS.step_size, damping=FLAGS.damping,
        output_metric=FLAGS.output_metric, cg_max_iterations=FLAGS.cg_iterations,
    )
    walker.compile(jit_compile=FLAGS.jit_compile, loss=loss, metrics=["accuracy"])
    start_distance = float(objective.distance(net))
    recorder = paths.PathRecorder(ds.test.x, ds.test.y, every=FLAGS.record_every)
    train = data.to_dataset(ds.train, FLAGS.metric_batch, shuffle=True, seed=FLAGS.seed,
                            drop_remainder=True, repeat=True)
    logging.info("Walking %d geodesic steps toward the %.0f%%-pruned copy...",
                 FLAGS.steps, 100 * FLAGS.sparsity)
    walker.fit(train, steps_per_epoch=FLAGS.steps, epochs=1, callbacks=[recorder], verbose=2)

    rows = []
    for rec in recorder.records:
        d = rec["distance_to_target"]
        straight = paths.straight_point_at_distance(start, target, d, start_distance)
        rows.append({
            "step": rec["step"],
            "distance_to_target": d,
            "geodesic_test_accuracy": rec["eval_accuracy"],
            "straight_test_accuracy": paths.evaluate_weights(net, straight, ds.test.x, ds.test.y)["accuracy"],
        })
    end_pruned = pruning.apply_masks(net.get_weights(), masks)
    summary = {
        "start_test_accuracy": rows[0]["geodesic_test_accuracy"],
        "one_shot_pruned_test_accuracy": paths.evaluate_weights(net, target, ds.test.x, ds.test.y)["accuracy"],
        "geodesic_then_pruned_test_accuracy": paths.evaluate_weights(net, end_pruned, ds.test.x, ds.test.y)["accuracy"],
        "sparsity": pruning.sparsity_of(end_pruned),
    }
    print(results.format_table(rows, list(rows[0])))
    print(results.format_table([summary], list(summary)))
    out = FLAGS.output_dir
    results.write_json(os.path.join(out, "results.json"), {
        "flags": {f.name: f.value for f in FLAGS.get_key_flags_for_module(__name__)},
        "path": rows, "summary": summary, "records": recorder.records,
    })
    plotting.line_plot(
        os.path.join(out, "path.png"),
        {"geodesic": ([r["distance_to_target"] for r in rows], [r["geodesic_test_accuracy"] for r in rows]),
         "straight line": ([r["distance_to_target"] for r in rows], [r["straight_test_accuracy"] for r in rows])},
        xlabel="distance to pruned target", ylabel="test accuracy",
        title=f"digits MLP toward {100 * FLAGS.sparsity:.0f}% pruned copy", invert_x=True,
    )
    net.save(os.path.join(out, "walked.keras"))
    logging.info("Wrote %s/{results.json,path.png,walked.keras}", out)


def main(argv):
    del argv
    with shared_flags.strategy().scope():
        run()


if __name__ == "__main__":
    app.run(main)

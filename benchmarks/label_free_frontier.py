r"""The label-free accuracy-compute frontier: every label-free method of
`tfgeo.sparsify.prune` at several budgets, through one sparsity schedule,
on one start network, masks and calibration inputs.

    python benchmarks/label_free_frontier.py --model=lenet_300_100 \
        --manual_dir=../shared/data/mnist --start_model=runs/frontier/start.keras \
        --output=runs/frontier/lenet_300_100.json

Each configuration (a method and its budget knobs) runs the whole schedule
(--sparsities, masks nested stage to stage) from the dense start with
`tfgeo.sparsify.prune`, so its gradient-equivalents are the library's (the
runner's) accounting; after each stage the validation and test accuracy are
recorded with the cumulative gradient-equivalents and wall seconds. A
method's frontier at a sparsity is its configurations' (GE, accuracy)
points; `frontier(...)` keeps those no cheaper configuration beats on
validation accuracy (the test column is then reported for them, never used
to choose). Writes the rows as JSON and one plot (test accuracy against GE,
log x axis, a panel per sparsity, a line per method).

Without --start_model the start network is trained here (Adam, cosine decay,
--train_epochs) on the training split less the validation fraction, and
saved next to --output; a rerun with the same --output loads it from there.
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "lenet_300_100", "Zoo network (when trained here).")
flags.DEFINE_float("width", 1.0, "Channel-width multiplier (VGG models, when trained here).")
flags.DEFINE_string("vgg_init", "glorot_uniform", "Kernel initialisation of VGG models.")
flags.DEFINE_string("dataset", "mnist", "Dataset.")
flags.DEFINE_string("manual_dir", "../shared/data/mnist", "Original dataset files for tfds.")
flags.DEFINE_string("image_folder", None, "Folder or .tar.gz for --dataset=image_folder.")
flags.DEFINE_string("augment", "auto", "Training augmentation of the start network (auto: "
                    "crop_flip for 32x32 colour images, none otherwise).")
flags.DEFINE_string("start_model", None, "A trained .keras start network (else trained here).")
flags.DEFINE_integer("train_epochs", 20, "Epochs of the start network when trained here.")
flags.DEFINE_list("sparsities", ["0.9", "0.95", "0.98"], "The schedule.")
flags.DEFINE_integer("calibration_size", 8192, "Unlabelled training inputs.")
flags.DEFINE_float("validation_fraction", 0.1, "Held-out part of the training split.")
flags.DEFINE_integer("seed", 0, "Seed of the split, calibration draw and stages.")
flags.DEFINE_list("geodesic_steps", ["1", "2", "5", "10"], "Gauss-Newton steps per stage.")
flags.DEFINE_list("curvature_sizes", ["0", "2048"], "Curvature subsets of the projection "
                  "(0: all calibration inputs).")
flags.DEFINE_list("cg_tolerances", ["0.1"], "CG relative residuals of the projection.")
flags.DEFINE_integer("cg_iterations", 50, "Most CG iterations per solve.")
flags.DEFINE_list("distill_steps", ["250", "1000", "4000"], "Distillation steps per stage "
                  "(a:b:...: one count per stage of --sparsities).")
flags.DEFINE_list("distill_rates", ["3e-4", "1e-3", "3e-3"], "Distillation Adam rates; "
                  "'1e-2+3e-3' lets each stage's probes choose among the candidates.")
flags.DEFINE_integer("probe_steps", 0, "Steps of each rate probe (candidate rates only; "
                     "0: an eighth of the steps, the library's default).")
flags.DEFINE_list("held_out_checks", ["0"], "Distillation's early stopping: held-out "
                  "checks per stage (0: none, descend on all inputs; k: keep the weights "
                  "nearest the dense function on the probes' held-out 1/8, checked k times).")
flags.DEFINE_list("distill_schedules", ["cosine"], "Distillation's rate schedules (cosine; "
                  "restarts: a cosine cycle between held-out checks).")
flags.DEFINE_list("distill_metrics", ["fisher"], "Output metrics of distillation's distance "
                  "(fisher: KL; euclidean: squared logit error).")
flags.DEFINE_list("starts", ["mask", "layerwise"], "Starts of the geodesic and distillation "
                  "(distill: the geodesic after each of --preludes).")
flags.DEFINE_list("preludes", ["250:3e-3"], "steps:rate of the short distillations the "
                  "geodesic starts from with start distill.")
flags.DEFINE_bool("baselines", True, "Run layer-wise reconstruction and one-shot magnitude "
                  "pruning first (--nobaselines: only the configurations asked for).")
flags.DEFINE_integer("batch_size", 256, "The gradient-equivalents' batch, distillation's batch.")
flags.DEFINE_bool("graph", False, "Graph mode instead of XLA (conv nets on CPU).")
flags.DEFINE_string("output", "runs/frontier/frontier.json", "Rows (JSON); the plot beside it.")
flags.DEFINE_float("plot_floor", 0.9, "Lowest accuracy the plot shows (points below are clipped).")


def configurations():
    """(name, method, keyword arguments of `prune`) of every point to run."""
    out = [("layerwise", "layerwise", {}), ("magnitude", "magnitude", {"mask": "magnitude"})
           ] if FLAGS.baselines else []
    for start in FLAGS.starts:
        preludes = [p.split(":") for p in FLAGS.preludes] if start == "distill" else [None]
        for prelude in preludes:
            label = start if prelude is None else f"distill{prelude[0]}"
            for steps in map(int, FLAGS.geodesic_steps):
                for size in map(int, FLAGS.curvature_sizes):
                    for tol in map(float, FLAGS.cg_tolerances):
                        kw = {"start": start, "steps": steps, "solver": (size, tol)}
                        if prelude is not None:
                            kw["distill"] = (int(prelude[0]), float(prelude[1]), 0, "cosine")
                        out.append((f"geodesic/{label}/steps={steps}/curv={size}/tol={tol:g}",
                                    "geodesic", kw))
        if start == "distill":
            continue
        for steps in map(stage_steps, FLAGS.distill_steps):
            for text in FLAGS.distill_rates:
                rate = tuple(map(float, text.split("+"))) if "+" in text else float(text)
                label = "+".join(f"{r:g}" for r in rate) if "+" in text else f"{rate:g}"
                for metric in FLAGS.distill_metrics:
                    for checks in map(int, FLAGS.held_out_checks):
                        for schedule in FLAGS.distill_schedules:
                            tail = (f"/stop={checks}" if checks else "") + (
                                "" if schedule == "cosine" else f"/{schedule}")
                            count = ":".join(map(str, steps)) if isinstance(steps, tuple) \
                                else steps
                            out.append((f"distill/{start}/steps={count}/lr={label}/{metric}"
                                        f"{tail}", "distill",
                                        {"start": start, "output_metric": metric,
                                         "distill": (steps, rate, checks, schedule)}))
    return out


def stage_steps(text: str):
    """A --distill_steps entry: an integer, or a tuple of them from "a:b:...",
    one per stage."""
    counts = tuple(int(t) for t in text.split(":"))
    return counts[0] if len(counts) == 1 else counts


def family(name: str) -> str:
    """The frontier's line a configuration belongs to (method and start)."""
    parts = name.split("/")
    if len(parts) == 1:
        return parts[0]
    stopped = any(p.startswith("stop=") for p in parts)
    restarts = "restarts" in parts
    return f"{parts[0]} from {parts[1]}" + (", stopped early" if stopped else "") + (
        " (restarts)" if restarts else "")


def frontier(rows, sparsity: float, split: str = "validation"):
    """Per family, the configurations at `sparsity` that no configuration of the
    family with fewer or equal GE beats on `split` accuracy, cheapest first."""
    out = {}
    for fam in sorted({family(r["name"]) for r in rows}):
        pts = sorted((r for r in rows if family(r["name"]) == fam and r["sparsity"] == sparsity),
                     key=lambda r: (r["gradient_equivalents"], -r[f"{split}_accuracy"]))
        best, kept = -1.0, []
        for r in pts:
            if r[f"{split}_accuracy"] > best:
                kept.append(r)
                best = r[f"{split}_accuracy"]
        out[fam] = kept
    return out


def run_point(model, dense, calibration, stages, name: str, method: str, kw: dict, splits: dict,
              *, cg_iterations: int = 50, batch_size: int = 256, seed: int = 0,
              jit_compile: bool = True, probe_steps: int | None = None) -> list[dict]:
    """One configuration: `tfgeo.sparsify.prune` through every stage from the
    dense weights; one row per stage with its own and the cumulative
    gradient-equivalents (prune's accounting, the runner's) and the accuracy
    on each split ({name: ArraySplit})."""
    from tfgeo import classification
    from tfgeo.sparsify import projection
    from tfgeo.sparsify import staged_pruning

    kw = dict(kw)
    model.set_weights(dense)
    size, tol = kw.pop("solver", (0, 0.1))
    steps, rate, checks, schedule = kw.pop("distill", (2000, 1e-3, 0, "cosine"))
    solver = projection.Solver(damping=1e-3, max_iterations=cg_iterations, tolerance=tol,
                               curvature_size=size, jit_compile=jit_compile)
    totals = {"gradient_equivalents": 0.0, "seconds": 0.0}
    rows = []

    def on_stage(row):
        totals["gradient_equivalents"] += row["gradient_equivalents"]
        totals["seconds"] += row["seconds"]
        r = {"name": name, "method": method, "sparsity": row["sparsity"],
             "measured_sparsity": row["measured_sparsity"],
             "functional_distance": row["functional_distance"],
             "stage_gradient_equivalents": row["gradient_equivalents"],
             "gradient_equivalents": totals["gradient_equivalents"],
             "seconds": totals["seconds"]}
        if "learning_rate" in row:  # chosen by the rate probes
            r["learning_rate"], r["rate_distances"] = row["learning_rate"], {
                f"{k:g}": v for k, v in row["rate_distances"].items()}
        if "best_step" in row:  # kept by the held-out checks
            r["best_step"], r["held_out_distance"] = row["best_step"], row["held_out_distance"]
        for split, data in splits.items():
            r[f"{split}_accuracy"] = classification.evaluate_classifier(
                model, data.x, data.y)["accuracy"]
        rows.append(r)

    staged_pruning.prune(
        model, calibration, stages, method=method, solver=solver,
        distillation_settings=staged_pruning.Distillation(
            steps, batch_size, rate, schedule, probe_steps=probe_steps, held_out_checks=checks,
            intermediate_fraction=1.0),  # --distill_steps: per stage, or "a:b:..."
        batch_size=batch_size, seed=seed, verbose=0, on_stage=on_stage, **kw)
    return rows


def main(_):
    import keras
    import numpy as np

    from tfgeo import classification
    from tfgeo.experiments import config as config_lib
    from tfgeo.experiments import data
    from tfgeo.experiments import networks
    from tfgeo.experiments import plotting
    from tfgeo.experiments import sparsify_experiment as study
    from tfgeo.experiments import training

    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    ds, train, val = data.load_splits(config_lib.DataConfig(
        dataset=FLAGS.dataset, manual_dir=FLAGS.manual_dir, image_folder=FLAGS.image_folder,
        validation_fraction=FLAGS.validation_fraction), FLAGS.seed)
    saved = os.path.splitext(FLAGS.output)[0] + "_start.keras"
    if FLAGS.start_model or os.path.exists(saved):
        # A rerun (resuming, or adding configurations) keeps the start network its rows
        # came from: retraining it is not bit-reproducible under every compile mode.
        start = keras.models.load_model(FLAGS.start_model or saved)
        print(f"start network: {FLAGS.start_model or saved}", flush=True)
    else:
        keras.utils.set_random_seed(FLAGS.seed)
        start = networks.build(config_lib.NetworkConfig(
            model=FLAGS.model, width=FLAGS.width, vgg_init=FLAGS.vgg_init),
            ds.input_shape, ds.num_classes)
        began = time.time()
        training.train_classifier(start, train, val, epochs=FLAGS.train_epochs, batch_size=128,
                                  learning_rate=1e-3, lr_schedule="cosine", seed=FLAGS.seed,
                                  jit_compile=not FLAGS.graph, verbose=2, augment=FLAGS.augment)
        print(f"start network: {start.count_params():,} weights, trained in "
              f"{time.time() - began:.0f} s", flush=True)
        start.save(saved)
    dense = start.get_weights()
    calibration = study.calibration_set(train, FLAGS.calibration_size, FLAGS.seed)
    stages = [float(s) for s in FLAGS.sparsities]
    base = {"split": "validation", "sparsity": 0.0, "name": "dense",
            "validation_accuracy": classification.evaluate_classifier(start, val.x, val.y)[
                "accuracy"],
            "test_accuracy": classification.evaluate_classifier(start, ds.test.x, ds.test.y)[
                "accuracy"]}
    print(f"dense: validation {base['validation_accuracy']:.4f}, test "
          f"{base['test_accuracy']:.4f}; calibration {len(calibration)} inputs", flush=True)
    rows = []
    done = set()
    if os.path.exists(FLAGS.output):  # resume: keep the configurations already run
        with open(FLAGS.output) as f:
            rows = [r for r in json.load(f)["rows"] if r["name"] != "dense"]
        done = {r["name"] for r in rows}
    for name, method, kw in configurations():
        if name in done:
            continue
        began = time.time()
        point_rows = run_point(start, dense, calibration, stages, name, method, kw,
                               {"validation": val, "test": ds.test},
                               cg_iterations=FLAGS.cg_iterations, batch_size=FLAGS.batch_size,
                               seed=FLAGS.seed, jit_compile=not FLAGS.graph,
                               probe_steps=FLAGS.probe_steps or None)
        rows.extend(point_rows)
        print(f"{name}: " + ", ".join(
            f"{100 * r['sparsity']:g}% val {r['validation_accuracy']:.4f} test "
            f"{r['test_accuracy']:.4f} ({r['gradient_equivalents']:.0f} GE"
            + (f", lr {r['learning_rate']:g}" if "learning_rate" in r else "")
            + (f", step {r['best_step']}" if "best_step" in r else "") + ")"
            for r in point_rows) + f" [{time.time() - began:.0f} s]", flush=True)
        with open(FLAGS.output + ".tmp", "w") as f:
            json.dump({"flags": FLAGS.flag_values_dict(), "rows": [base] + rows}, f, indent=1)
        os.replace(FLAGS.output + ".tmp", FLAGS.output)

    panels = []
    for s in stages:
        front = frontier(rows, s)
        panels.append((f"{100 * s:g}% sparsity: test accuracy (chosen on validation)",
                       {fam: ([r["gradient_equivalents"] for r in pts],
                              [r["test_accuracy"] for r in pts])
                        # Zero-cost one-shot pruning has no place on a log axis (tables).
                        for fam, pts in front.items() if pts and pts[-1]["gradient_equivalents"]}))
        print(f"\n{100 * s:g}% frontier (chosen on validation; test accuracy, cumulative GE):")
        for fam, pts in front.items():
            print(f"  {fam:<22} " + "  ".join(
                f"{r['test_accuracy']:.4f}@{r['gradient_equivalents']:.0f}" for r in pts))
    plot = os.path.splitext(FLAGS.output)[0] + ".png"
    plotting.panel_plot(plot, panels, xlabel="gradient-equivalents (cumulative, log scale)",
                        title=f"label-free frontier, {FLAGS.model} on {FLAGS.dataset}",
                        xlog=True, ylow=FLAGS.plot_floor)
    print(f"wrote {FLAGS.output} and {plot}")
    del np


if __name__ == "__main__":
    app.run(main)

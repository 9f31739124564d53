r"""Along one stage's distillation: the functional distance D on the held-out
calibration inputs against validation accuracy, at each check. The
diagnostic behind `tfgeo.sparsify.Distillation(held_out_checks=...)`, whose
early stopping keeps the weights of the smallest held-out D.

    python benchmarks/early_stopping_trace.py --dataset=image_folder \
        --image_folder=../shared/data/cifar10_jpg.tar.gz \
        --start_model=runs/frontier_vgg11/vgg11_start.keras \
        --output=runs/frontier_vgg11/trace.json

The path to the traced stage (--path, e.g. 80 -> 90 -> 95%) is
`tfgeo.sparsify.prune` with --path_steps of masked Adam at --path_rate per
stage (stopped early with --path_checks), as `benchmarks/label_free_frontier.py`
runs it (same split, calibration draw and stage seeds for the same --seed). The traced stage
(--sparsity) is then distilled from that network once per --runs entry
(steps@rate, cosine schedule) on the stage's 7/8 of the calibration inputs,
checked --checks times on the other 1/8; validation accuracy is measured at
every check (only to draw the trace: nothing is chosen by it). Prints a
table and writes the rows as JSON and a plot beside them (held-out D and
validation accuracy against the step, a line per run; `plot(rows, path)`
redraws it from the JSON).
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
flags.DEFINE_string("dataset", "mnist", "Dataset.")
flags.DEFINE_string("manual_dir", "../shared/data/mnist", "Original dataset files for tfds.")
flags.DEFINE_string("image_folder", None, "Folder or .tar.gz for --dataset=image_folder.")
flags.DEFINE_string("start_model", None, "The trained .keras start network.", required=True)
flags.DEFINE_integer("calibration_size", 8192, "Unlabelled training inputs.")
flags.DEFINE_float("validation_fraction", 0.1, "Held-out part of the training split.")
flags.DEFINE_integer("seed", 0, "Seed of the split, calibration draw and stages.")
flags.DEFINE_list("path", ["0.8", "0.9", "0.95"], "Sparsities of the stages before the traced one.")
flags.DEFINE_integer("path_steps", 1000, "Distillation steps per stage of the path.")
flags.DEFINE_float("path_rate", 3e-3, "Distillation rate of the path.")
flags.DEFINE_integer("path_checks", 0, "Held-out checks per stage of the path (0: no early "
                     "stopping there).")
flags.DEFINE_float("sparsity", 0.98, "The traced stage's sparsity.")
flags.DEFINE_list("runs", ["4000@3e-3", "1000@3e-3", "4000@1e-2"], "steps@rate of the traced "
                  "stage's distillations.")
flags.DEFINE_integer("checks", 16, "Held-out checks per traced distillation.")
flags.DEFINE_integer("batch_size", 256, "Distillation's batch.")
flags.DEFINE_string("output", "runs/frontier/trace.json", "Rows (JSON).")


def parse_run(text: str) -> tuple[int, float]:
    """'4000@3e-3' -> (4000, 0.003)."""
    steps, _, rate = text.partition("@")
    if not rate:
        raise ValueError(f"--runs entries are steps@rate, got {text!r}.")
    return int(steps), float(rate)


def plot(rows: dict, path: str) -> str:
    """Two panels, held-out D and validation accuracy (%) against the step, a
    line per run of `rows` (the JSON this script writes); returns path. The
    masked start (step 0), far above the rest, is left out so the minimum
    shows."""
    from tfgeo.experiments import plotting

    def series(key, scale=1.0):
        return {f"{r['steps']} steps at {r['rate']:g} (kept {r['best_step']})": (
            [t["step"] for t in r["trace"] if t["step"]],
            [scale * t[key] for t in r["trace"] if t["step"]]) for r in rows["runs"]}

    sparsity = rows["flags"]["sparsity"]
    return plotting.panel_plot(
        path, [("functional distance on the held-out 1/8", series("held_out_distance")),
               ("validation accuracy (%)", series("validation_accuracy", 100.0))],
        xlabel="distillation step", title=f"one stage's distillation at {100 * sparsity:g}% "
        f"sparsity: held-out distance against validation accuracy")


def main(_):
    import keras

    from tfgeo import classification
    from tfgeo import weights as weights_lib
    from tfgeo.experiments import config as config_lib
    from tfgeo.experiments import data
    from tfgeo.experiments import sparsify_experiment as study
    from tfgeo.sparsify import distillation
    from tfgeo.sparsify import pruning
    from tfgeo.sparsify import staged_pruning

    runs = [parse_run(r) for r in FLAGS.runs]
    _, train, val = data.load_splits(config_lib.DataConfig(
        dataset=FLAGS.dataset, manual_dir=FLAGS.manual_dir, image_folder=FLAGS.image_folder,
        validation_fraction=FLAGS.validation_fraction), FLAGS.seed)
    model = keras.models.load_model(FLAGS.start_model)
    dense = weights_lib.get_trainable(model)
    calibration = study.calibration_set(train, FLAGS.calibration_size, FLAGS.seed)
    accuracy = lambda: classification.evaluate_classifier(model, val.x, val.y)["accuracy"]  # noqa: E731
    path = [float(s) for s in FLAGS.path]
    began = time.time()
    if path:
        staged_pruning.prune(model, calibration, path, seed=FLAGS.seed, verbose=1,
                             distillation_settings=staged_pruning.Distillation(
                                 FLAGS.path_steps, FLAGS.batch_size, FLAGS.path_rate,
                                 held_out_checks=FLAGS.path_checks,
                                 intermediate_fraction=1.0))
    current = weights_lib.get_trainable(model)
    print(f"path {path}: validation {accuracy():.4f} [{time.time() - began:.0f} s]", flush=True)
    # The traced stage as `prune` would run it: its masks from the current network
    # (magnitude_dense, nested), its seed the stage's, its held-out rows the probes'.
    which = pruning.prunable_variables(model, False, True)
    masks = pruning.magnitude_masks(current, FLAGS.sparsity, which, "global", allocation=dense)
    seed = FLAGS.seed + len(path)
    held = staged_pruning.held_out_rows(len(calibration), seed)
    out = {"flags": FLAGS.flag_values_dict(), "held_out": len(held), "runs": []}
    for steps, rate in runs:
        keras.utils.set_random_seed(seed)
        trace = []
        report = distillation.distill(
            model, masks, calibration, steps, FLAGS.batch_size, rate, start=current,
            reference_weights=dense, seed=seed, held_out=held, checks=FLAGS.checks,
            on_check=lambda k, d: trace.append(
                {"step": k, "held_out_distance": d, "validation_accuracy": accuracy()}))
        kept = next(t for t in trace if t["step"] == report["best_step"])
        out["runs"].append({"steps": steps, "rate": rate, "trace": trace,
                            "best_step": report["best_step"],
                            "kept_validation_accuracy": kept["validation_accuracy"],
                            "seconds": report["seconds"]})
        print(f"\n{steps} steps at {rate:g}: kept step {report['best_step']} "
              f"(validation {kept['validation_accuracy']:.4f}; last "
              f"{trace[-1]['validation_accuracy']:.4f}) [{report['seconds']:.0f} s]")
        print(f"{'step':>6}  {'held-out D':>11}  {'validation':>10}")
        for t in trace:
            mark = " <- kept" if t["step"] == report["best_step"] else ""
            print(f"{t['step']:>6}  {t['held_out_distance']:>11.4g}  "
                  f"{100 * t['validation_accuracy']:>9.2f}%{mark}", flush=True)
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
        with open(FLAGS.output, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {FLAGS.output} and {plot(out, os.path.splitext(FLAGS.output)[0] + '.png')}")


if __name__ == "__main__":
    app.run(main)

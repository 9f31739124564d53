r"""Sparsification by geodesic walks, against three baselines at equal compute.

    python -m runners.sparsify --model=lenet_300_100 --dataset=mnist \
        --manual_dir=../shared/data/mnist --sparsities=0.5,0.8,0.9,0.95,0.98 \
        --output_dir=runs/sparsify_mnist

Starts from --start_model (a `.keras` file) or trains one. Then, stage by
stage through the sparsity schedule, each method moves its own network from
the previous stage's sparsity to the next (see `tfgeo.sparsification`):

  one_shot   magnitude-prune the dense start (no recovery)
  finetune   magnitude-prune, then masked Adam fine-tuning
  gradual    Zhu & Gupta polynomial-schedule pruning during fine-tuning
  geodesic   geodesic walk toward the pruned copy, then exact projection

`finetune` and `gradual` get, per stage, as many gradient steps (batch
--batch_size) as the geodesic stage cost in gradient-equivalents: its
metric-vector products and quadratic forms times their cost in gradients,
measured at start-up on this model and batch (or --metric_product_cost).

Writes results.json (after every stage), accuracy.png, a `.keras` model per
method, and prints a summary table. An interrupted run restarts from its
last completed stage when rerun with the same flags.
"""
from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from absl import logging

from runners import shared_flags
from tfgeo import pruning
from tfgeo import results

from tfgeo.sparsification_study import METHODS  # noqa: E402

FLAGS = flags.FLAGS
shared_flags.define_model_and_data()
shared_flags.define_training(prefix="train_")
shared_flags.define_run("runs/sparsify", validation_fraction=0.1)
flags.DEFINE_string("start_model", None, "A trained `.keras` model to sparsify (else one is "
                    "trained with the --train_* flags on the training split).")
flags.DEFINE_list("sparsities", [], "Explicit sparsity of each stage, increasing, in [0, 1); "
                  "overrides --final_sparsity/--stages/--initial_sparsity.")
flags.DEFINE_float("final_sparsity", 0.9, "Sparsity of the last stage, in [0, 1).")
flags.DEFINE_integer("stages", 3, "Number of stages (density shrinks geometrically).",
                     lower_bound=1)
flags.DEFINE_float("initial_sparsity", None, "Sparsity of the first stage (default: the "
                   "geometric schedule's first step).")
flags.DEFINE_enum("ranking", "global", list(pruning.SCOPES),
                  "Rank magnitudes over all prunable tensors (global) or per tensor (layer).")
flags.DEFINE_bool("prune_biases", False, "Also prune 1-d tensors (biases).")
flags.DEFINE_bool("prune_last_layer", True, "Also prune the output layer.")
flags.DEFINE_list("methods", list(METHODS), f"Methods to run, from {METHODS}.")
flags.DEFINE_integer("batch_size", 256, "Batch of the metric and of the baselines' steps.",
                     lower_bound=1)
flags.DEFINE_float("step_size", 0.05, "Geodesic step length eps (> 0).")
flags.DEFINE_float("damping", 1e-3, "lambda in (g + lambda I).", lower_bound=0.0)
flags.DEFINE_enum("output_metric", "fisher", ["fisher", "euclidean"], "Output-space metric M.")
flags.DEFINE_integer("cg_iterations", 10, "Conjugate-gradient iterations per step.",
                     lower_bound=1)
flags.DEFINE_integer("max_steps", 500, "Most geodesic steps per stage.", lower_bound=1)
flags.DEFINE_float("tolerance", 0.02, "A stage's walk stops once the pruned weights' norm is "
                   "below this fraction of its start value, in [0, 1).")
flags.DEFINE_integer("geodesic_finetune_steps", 0, "Masked fine-tuning steps after each "
                     "geodesic stage (off by default; counted in its cost).", lower_bound=0)
flags.DEFINE_float("finetune_learning_rate", 1e-4, "Adam rate of the fine-tuning baselines.")
flags.DEFINE_integer("baseline_steps", 0, "Gradient steps per stage for the baselines; 0 "
                     "matches the geodesic stage's cost.", lower_bound=0)
flags.DEFINE_integer("gradual_frequency", 50, "Steps between mask updates in gradual pruning.",
                     lower_bound=1)
flags.DEFINE_float("gradual_fraction", 0.75, "Fraction of a stage's steps over which gradual "
                   "pruning raises the sparsity, in (0, 1].")
flags.DEFINE_float("metric_product_cost", 0.0, "Cost of one g v in gradients; 0 measures it "
                   "(and a quadratic form) at start-up.", lower_bound=0.0)
flags.DEFINE_integer("log_every", 50, "Progress line every this many geodesic steps.",
                     lower_bound=1)
flags.DEFINE_bool("jit_compile", True, "XLA-compile geodesic and fine-tuning steps.")
flags.DEFINE_bool("resume", True, "Continue from the output folder's last completed stage.")

flags.register_validator("step_size", lambda v: v > 0, "--step_size must be > 0.")
flags.register_validator("final_sparsity", lambda v: 0.0 <= v < 1.0,
                         "--final_sparsity must be in [0, 1).")
flags.register_validator("initial_sparsity", lambda v: v is None or 0.0 <= v < 1.0,
                         "--initial_sparsity must be in [0, 1).")
flags.register_validator("tolerance", lambda v: 0.0 <= v < 1.0, "--tolerance must be in [0, 1).")
flags.register_validator("gradual_fraction", lambda v: 0.0 < v <= 1.0,
                         "--gradual_fraction must be in (0, 1].")
flags.register_validator("finetune_learning_rate", lambda v: v > 0,
                         "--finetune_learning_rate must be > 0.")
flags.register_validator("methods", lambda v: bool(v) and set(v) <= set(METHODS),
                         f"--methods must be a non-empty subset of {METHODS}.")
flags.register_validator("start_model", lambda v: v is None or os.path.isfile(v),
                         "--start_model does not exist.")


def _parse_sparsities(values):
    try:
        out = [float(v) for v in values]
    except ValueError:
        return None
    if not out or any(not 0.0 <= s < 1.0 for s in out) or any(
            b <= a for a, b in zip(out, out[1:])):
        return None
    return out


flags.register_validator("sparsities", lambda v: not v or _parse_sparsities(v) is not None,
                         "--sparsities must be increasing numbers in [0, 1).")


def schedule() -> list[float]:
    if FLAGS.sparsities:
        return _parse_sparsities(FLAGS.sparsities)
    return pruning.stage_sparsities(FLAGS.final_sparsity, FLAGS.stages, FLAGS.initial_sparsity)


def check_methods():
    needs_budget = {"finetune", "gradual"} & set(FLAGS.methods)
    if needs_budget and "geodesic" not in FLAGS.methods and FLAGS.baseline_steps == 0:
        sys.exit(f"FATAL --methods={','.join(FLAGS.methods)}: {sorted(needs_budget)} match the "
                 "geodesic method's cost; add geodesic or set --baseline_steps.")


def run():
    check_methods()
    shared_flags.check_model_fits_dataset()
    from tfgeo import cost
    from tfgeo import run_state
    from tfgeo import sparsification_study as study

    stages = schedule()
    logging.info("Sparsity schedule: %s", ", ".join(f"{100 * s:g}%" for s in stages))
    try:
        state = run_state.RunState(FLAGS.output_dir, shared_flags.flag_values(__name__),
                                   FLAGS.resume)
    except ValueError as e:
        sys.exit(f"FATAL --output_dir: {e}")
    if state.completed:
        logging.info("Resuming after stage %d of %d from %s", state.completed, len(stages),
                     FLAGS.output_dir)
    ds = shared_flags.load_data()
    train_split, val_split = shared_flags.split_validation(ds)
    model = shared_flags.start_model(FLAGS.start_model, ds, train_split, val_split,
                                     FLAGS.output_dir, prefix="train_")
    if "cost" in state.payload:
        ratios = cost.CostRatios(**state.payload["cost"])
    elif FLAGS.metric_product_cost > 0:
        # One JVP is about half a g v (which is JVP + VJP).
        ratios = cost.CostRatios(0.0, FLAGS.metric_product_cost, FLAGS.metric_product_cost / 2)
    else:
        probe = train_split.x[:FLAGS.batch_size], train_split.y[:FLAGS.batch_size]
        ratios = cost.measure(model, *probe, output_metric=FLAGS.output_metric,
                              jit_compile=FLAGS.jit_compile)
    logging.info("Measured cost in gradients: g v %.2f, <v, g v> %.2f (batch %d)",
                 ratios.metric_vector_product, ratios.quadratic_form, FLAGS.batch_size)
    config = study.StudyConfig(
        batch_size=FLAGS.batch_size, prune_biases=FLAGS.prune_biases,
        prune_last_layer=FLAGS.prune_last_layer, scope=FLAGS.ranking,
        step_size=FLAGS.step_size, damping=FLAGS.damping, output_metric=FLAGS.output_metric,
        cg_max_iterations=FLAGS.cg_iterations, tolerance=FLAGS.tolerance,
        max_steps=FLAGS.max_steps, log_every=FLAGS.log_every,
        geodesic_finetune_steps=FLAGS.geodesic_finetune_steps,
        finetune_learning_rate=FLAGS.finetune_learning_rate,
        baseline_steps=FLAGS.baseline_steps, gradual_frequency=FLAGS.gradual_frequency,
        gradual_fraction=FLAGS.gradual_fraction, jit_compile=FLAGS.jit_compile, seed=FLAGS.seed)
    title = f"{FLAGS.model} on {ds.name}"
    split = "validation" if val_split is not None else "test"

    def report(rows):
        results.write_json(os.path.join(FLAGS.output_dir, "results.json"), {
            "flags": shared_flags.flag_values(__name__), "dataset": ds.name,
            "schedule": stages, "cost_ratios": ratios._asdict(), "rows": rows})
        study.plot(rows, os.path.join(FLAGS.output_dir, "accuracy.png"), title)
        table, columns = study.summary_table(rows, split)
        logging.info("After stage %d (%s accuracy):\n%s", rows[-1]["stage"], split,
                     results.format_table(table, columns))

    rows = study.run(model, stages, FLAGS.methods, train_split, val_split, ds.test, config,
                     state, ratios, on_stage=report)
    report(rows)
    for method in FLAGS.methods:
        weights = study.final_weights(state, method)
        if weights is not None:
            model.set_weights(weights)
            results.save_model(model, os.path.join(FLAGS.output_dir, f"{method}.keras"))
    table, columns = study.summary_table(rows, "test")
    dense = next(r for r in rows if r["method"] == "dense")
    print(f"{title}: dense test accuracy {dense['test_accuracy']:.4f}; test accuracy per method "
          f"(baselines get the geodesic stage's gradient-equivalents; g v = "
          f"{ratios.metric_vector_product:.2f} gradients):")
    print(results.format_table(table, columns))


def main(argv):
    del argv
    with shared_flags.strategy().scope():
        run()


if __name__ == "__main__":
    app.run(main)

r"""Continual learning: geodesic walks against naive fine-tuning, EWC and joint training.

    python -m runners.continual --dataset=mnist --manual_dir=../shared/data/mnist \
        --benchmark=split --scenario=task --output_dir=runs/split_mnist

Task 0 is learnt once with Adam; every method then continues from that
network through the remaining tasks (see `tfgeo.continual`). After each task
the accuracy matrix R (test accuracy on every task) is extended and saved;
at the end results.json holds R, the average accuracy and the backward
transfer (BWT) per method, accuracy.png shows R, and a table is printed.
The geodesic method's metric uses only a bounded memory of earlier tasks'
inputs (--memory_size), never their labels. An interrupted run resumes after
its last completed task when rerun with the same flags.
"""
from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from absl import logging

from runners import shared_flags
from tfgeo import continual
from tfgeo import results

FLAGS = flags.FLAGS
shared_flags.define_model_and_data()
shared_flags.define_run("runs/continual", validation_fraction=0.0)
flags.DEFINE_enum("benchmark", "split", list(continual.BENCHMARKS),
                  "split: two halves of the classes; split5: five 2-class tasks; permuted: "
                  "--num_tasks pixel permutations; split_cifar100: 10-class tasks.")
flags.DEFINE_enum("scenario", "task", list(continual.SCENARIOS),
                  "task: a head per task; domain: one shared head, labels within the task; "
                  "class: one head over all classes.")
flags.DEFINE_integer("num_tasks", 3, "Tasks for permuted / split_cifar100.", lower_bound=2)
flags.DEFINE_list("methods", list(continual.METHODS), f"Methods, from {continual.METHODS}.")
flags.DEFINE_integer("epochs", 2, "Adam epochs per task (task 0 and the gradient methods).",
                     lower_bound=1)
flags.DEFINE_integer("batch_size", 128, "Batch size of new-task batches.", lower_bound=1)
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate (> 0).")
flags.DEFINE_float("ewc_strength", 1000.0, "EWC lambda.", lower_bound=0.0)
flags.DEFINE_integer("fisher_examples", 1000, "Examples for each task's diagonal Fisher.",
                     lower_bound=1)
flags.DEFINE_integer("memory_size", 1000, "Earlier-task inputs kept for the geodesic metric "
                     "(in total, split evenly over earlier tasks).", lower_bound=1)
flags.DEFINE_integer("geodesic_steps", 300, "Geodesic steps per task after the first.",
                     lower_bound=1)
flags.DEFINE_float("step_size", 0.05, "Geodesic step length eps (> 0).")
flags.DEFINE_float("damping", 1e-3, "lambda in (g + lambda I).", lower_bound=0.0)
flags.DEFINE_integer("cg_iterations", 10, "Conjugate-gradient iterations per step.",
                     lower_bound=1)
flags.DEFINE_integer("metric_batch", 256, "Memory inputs per metric batch.", lower_bound=1)
flags.DEFINE_enum("output_metric", "fisher", ["fisher", "euclidean"], "Output-space metric M.")
flags.DEFINE_bool("jit_compile", True, "XLA-compile the training and geodesic steps.")
flags.DEFINE_bool("resume", True, "Continue from the output folder's last completed task.")

flags.register_validator("learning_rate", lambda v: v > 0, "--learning_rate must be > 0.")
flags.register_validator("step_size", lambda v: v > 0, "--step_size must be > 0.")
flags.register_validator("methods", lambda v: bool(v) and set(v) <= set(continual.METHODS),
                         f"--methods must be a non-empty subset of {continual.METHODS}.")


def _check_benchmark():
    if FLAGS.benchmark == "split_cifar100" and FLAGS.dataset != "cifar100":
        sys.exit(f"FATAL --benchmark=split_cifar100 needs --dataset=cifar100, not {FLAGS.dataset}.")
    if FLAGS.benchmark == "permuted" and FLAGS.scenario == "class":
        sys.exit("FATAL --scenario=class: permuted tasks share labels; use task or domain.")


def run():
    _check_benchmark()
    shared_flags.check_model_fits_dataset()
    import keras
    import numpy as np

    import models
    from tfgeo import multihead
    from tfgeo import plotting
    from tfgeo import run_state

    try:
        state = run_state.RunState(FLAGS.output_dir, shared_flags.flag_values(__name__),
                                   FLAGS.resume)
    except ValueError as e:
        sys.exit(f"FATAL --output_dir: {e}")
    ds = shared_flags.load_data()
    train, validation = shared_flags.split_validation(ds)
    # Tuning mode: with a validation split, R is measured on it, never on the test split.
    evaluated = "validation" if validation is not None else "test"
    ds = ds._replace(train=train, test=validation if validation is not None else ds.test)
    try:
        sequence = continual.make_tasks(ds, FLAGS.benchmark, FLAGS.scenario, FLAGS.num_tasks,
                                        FLAGS.seed)
    except ValueError as e:
        sys.exit(f"FATAL --benchmark={FLAGS.benchmark}: {e}")
    logging.info("%d tasks (%s, %s-incremental): %s", len(sequence.tasks), FLAGS.benchmark,
                 FLAGS.scenario, ", ".join(f"{t.name} ({len(t.train.y)} train)"
                                           for t in sequence.tasks))

    def build():
        body = models.get(FLAGS.model, sequence.input_shape,
                          sequence.num_heads * sequence.classes_per_head,
                          **shared_flags.model_options())
        return multihead.multi_head(body, sequence.num_heads, sequence.classes_per_head)

    keras.utils.set_random_seed(FLAGS.seed)
    config = continual.ContinualConfig(
        epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
        ewc_strength=FLAGS.ewc_strength, fisher_examples=FLAGS.fisher_examples,
        memory_size=FLAGS.memory_size, geodesic_steps=FLAGS.geodesic_steps,
        step_size=FLAGS.step_size, damping=FLAGS.damping, cg_max_iterations=FLAGS.cg_iterations,
        metric_batch=FLAGS.metric_batch, output_metric=FLAGS.output_metric,
        jit_compile=FLAGS.jit_compile, seed=FLAGS.seed)
    names = [t.name for t in sequence.tasks]

    def report(out):
        results.write_json(os.path.join(FLAGS.output_dir, "results.json"), {
            "flags": shared_flags.flag_values(__name__), "tasks": names, "evaluated_on": evaluated,
            "methods": out})
        for method, res in out.items():
            logging.info("%s after task %d: %s", method, len(res["R"]) - 1,
                         " ".join(f"{a:.4f}" for a in res["R"][-1]))

    out = continual.run(build, sequence, FLAGS.methods, config, state, on_task=report)
    report(out)
    plotting.matrix_plot(
        os.path.join(FLAGS.output_dir, "accuracy.png"),
        {m: np.array(res["R"]) for m, res in out.items()},
        xlabel="evaluated on task j", ylabel="after learning task i",
        title=f"{FLAGS.benchmark} {ds.name}, {FLAGS.scenario}-incremental: R[i, j] ({evaluated} accuracy)")
    rows = [{"method": m, "average_accuracy": res["average_accuracy"],
             "BWT": res["backward_transfer"],
             "final_row": " ".join(f"{a:.3f}" for a in res["R"][-1]),
             "seconds": round(sum(res["seconds"][1:]), 1)} for m, res in out.items()]
    print(f"{FLAGS.benchmark} {ds.name}, {FLAGS.scenario}-incremental, {len(names)} tasks "
          f"({evaluated} accuracy; BWT = mean_j<T (R[T,j] - R[j,j])):")
    print(results.format_table(rows, list(rows[0])))


def main(argv):
    del argv
    with shared_flags.strategy().scope():
        run()


if __name__ == "__main__":
    app.run(main)

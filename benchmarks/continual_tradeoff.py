r"""Continual learning's trade-off in one picture: average accuracy against
backward transfer for every memory method across its main knob.

    python benchmarks/continual_tradeoff.py --manual_dir=../shared/data/mnist \
        --output=runs/tradeoff/tradeoff.json --plot=docs/img/continual_tradeoff.png

Each point is one `runners.continual` run (a subprocess: its command is
recorded with the point) on the validation split only
(--validation_fraction of the training split held out; R is measured there,
never on the test split), one method alone, one value of its knob, all else
at the defaults: the same task-0 network, the same 2 epochs per task and the
same new-task batches for every method (equal steps), the same 1,000-example
memory. The knobs: DER's alpha, replay's alpha, FIP's alpha, EWC's lambda,
the geodesic rule's restoring strength and its metric weight rho (rho = 0:
Adam plus the restoring term, no metric). Naive training and joint training
are the floor and the ceiling. A run whose results exist is read back, not
rerun. Writes the points as JSON and the plot (x: backward transfer in
points, y: average accuracy, a line per knob, each point labelled by its
value).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "mnist", "runners.continual --dataset.")
flags.DEFINE_string("manual_dir", "../shared/data/mnist", "Original dataset files for tfds.")
flags.DEFINE_string("benchmark", "split5", "runners.continual --benchmark.")
flags.DEFINE_string("scenario", "domain", "runners.continual --scenario.")
flags.DEFINE_float("validation_fraction", 0.1, "Held-out part of the training split.")
flags.DEFINE_integer("seed", 0, "Seed of the split, the tasks and every method.")
flags.DEFINE_string("output", "runs/tradeoff/tradeoff.json", "The points (JSON); the runs "
                    "go in folders beside it.")
flags.DEFINE_string("plot", "docs/img/continual_tradeoff.png", "The figure.")
flags.DEFINE_list("extra", [], "More runner flags for every run (e.g. --train_examples=6000 "
                  "to shorten it).")

#: (line label, method, flag, values); a value None is the method's default run.
KNOBS = (
    ("DER, alpha", "der", "der_alpha", (0.3, 1.0, 3.0)),
    ("replay, alpha", "replay", "replay_alpha", (0.5, 2.0, 8.0, 32.0)),
    ("FIP, alpha", "fip", "fip_alpha", (1.0, 10.0, 100.0, 1000.0)),
    ("EWC, lambda", "ewc", "ewc_strength", (100.0, 1000.0, 10000.0)),
    ("geodesic, restoring", "geodesic", "restoring", (30.0, 100.0, 300.0)),
    ("geodesic, rho", "geodesic", "metric_weight", (0.0, 1.0, 10.0)),
    ("naive", "naive", None, (None,)),
    ("joint", "joint", None, (None,)),
)


def command(method: str, flag: str | None, value, out: str) -> list[str]:
    cmd = [sys.executable, "-m", "runners.continual", f"--dataset={FLAGS.dataset}",
           f"--manual_dir={FLAGS.manual_dir}", f"--benchmark={FLAGS.benchmark}",
           f"--scenario={FLAGS.scenario}", f"--validation_fraction={FLAGS.validation_fraction}",
           f"--seed={FLAGS.seed}", f"--methods={method}", f"--output_dir={out}", *FLAGS.extra]
    if flag is not None:
        cmd.append(f"--{flag}={value:g}")
    return cmd


def run_point(label, method, flag, value, folder) -> dict:
    """One runner run (or its results read back): the point's scores and command."""
    name = method if flag is None else f"{method}_{flag}_{value:g}"
    out = os.path.join(folder, name)
    cmd = command(method, flag, value, out)
    path = os.path.join(out, "results.json")
    if not os.path.exists(path):
        print(f"{name} ...", flush=True)
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    with open(path) as f:
        res = json.load(f)
    scores = res["methods"][method]
    return {"label": label, "method": method, "flag": flag, "value": value,
            "average_accuracy": scores["average_accuracy"],
            "backward_transfer": scores["backward_transfer"],
            "steps": sum(scores["steps"][1:]), "seconds": sum(scores["seconds"][1:]),
            "evaluated_on": res["evaluated_on"], "title": res["title"],
            "command": " ".join(c if i else "python" for i, c in enumerate(cmd))}


def plot(points, path: str, title: str, zoom=(94.0, -7.0)) -> None:
    """Two panels: every point, and the region above `zoom` (average %, BWT
    points) where the memory methods that work sit."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    for panel, ax in enumerate(axes):
        for label in dict.fromkeys(p["label"] for p in points):
            line = [p for p in points if p["label"] == label]
            x = [100 * p["backward_transfer"] for p in line]
            y = [100 * p["average_accuracy"] for p in line]
            style = dict(marker="o") if len(line) > 1 else dict(marker="s", linestyle="none")
            ax.plot(x, y, label=label, **style)
            for p, xi, yi in zip(line, x, y):
                if p["flag"] is not None and (panel == 1 or len(line) > 1):
                    ax.annotate(f"{p['value']:g}", (xi, yi), textcoords="offset points",
                                xytext=(4, 3), fontsize=7)
        ax.set_xlabel("backward transfer (points; 0 = no forgetting)")
        ax.set_ylabel("average accuracy (%)")
        ax.grid(alpha=0.3)
        if panel == 1:
            ax.set_ylim(zoom[0], 99.0)
            ax.set_xlim(zoom[1], 0.5)
            ax.set_title(f"above {zoom[0]:g}% and {zoom[1]:g} points", fontsize=9)
        else:
            ax.set_title("every run", fontsize=9)
            ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv):
    del argv
    folder = os.path.dirname(os.path.abspath(FLAGS.output))
    os.makedirs(folder, exist_ok=True)
    points = []
    for label, method, flag, values in KNOBS:
        for value in values:
            points.append(run_point(label, method, flag, value, folder))
            p = points[-1]
            print(f"{label} {'' if value is None else f'{value:g}'}: average "
                  f"{100 * p['average_accuracy']:.2f} %, BWT {100 * p['backward_transfer']:.2f}"
                  f" pts, {p['steps']} steps, {p['seconds']:.1f} s", flush=True)
    with open(FLAGS.output, "w") as f:
        json.dump(points, f, indent=1)
    title = (f"{points[0]['title']}; {points[0]['evaluated_on']} split, seed {FLAGS.seed}; "
             "every method 2 epochs per task")
    plot(points, FLAGS.plot, title)
    print(f"Wrote {FLAGS.output} and {FLAGS.plot}")


if __name__ == "__main__":
    app.run(main)

r"""The connecting-optima frontier: loss barrier and minimum accuracy of every
path method of `tfgeo.connect` against the gradient-equivalents it spent, at
several budgets, over several independently trained endpoint pairs.

    python benchmarks/connect_frontier.py --model=lenet_300_100 \
        --manual_dir=../shared/data/mnist --pairs=1:2,3:4,5:6 \
        --output=runs/connect_frontier/lenet_300_100.json

Each endpoint (one per seed of --pairs) is trained here once (Adam 1e-3,
cosine decay, --train_epochs, batches of 128, on the training split less the
validation fraction) and saved beside --output; a run that finds it there
loads it. Every path is `tfgeo.connect.path_between` with the package's
defaults and one budget (`find_path(budget=...)`): the geodesic gets the
relaxation iterations and the curves the training steps that budget buys, so
the gradient-equivalents are the library's (and the runner's, whose
`--relax_iterations` default is the default budget's). Each (pair, target,
method, budget) path is evaluated at --eval_points points on the validation
split (which chooses) and the test split (reported), and appended to the
JSON, which a rerun resumes. Targets: B and, with --align, B permuted onto A
by weight matching.

Writes the rows as JSON, one plot (mean test barrier and minimum accuracy
against mean GE, log x axis, a line per method, a panel per target) and
prints a markdown table of mean and spread over the pairs.
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


#: The Adam rate of `Relaxation` and `CurveTraining` by default (a test keeps them equal).
DEFAULT_RATE = 1e-3


def define_flags():
    flags.DEFINE_string("model", "lenet_300_100", "Zoo network of the endpoints.")
    flags.DEFINE_float("width", 1.0, "Channel-width multiplier (VGG models).")
    flags.DEFINE_string("vgg_init", "glorot_uniform", "Kernel initialisation of VGG models.")
    flags.DEFINE_string("dataset", "mnist", "Dataset.")
    flags.DEFINE_string("manual_dir", "../shared/data/mnist", "Original dataset files for tfds.")
    flags.DEFINE_string("image_folder", None, "Folder or .tar.gz for --dataset=image_folder.")
    flags.DEFINE_list("pairs", ["1:2", "3:4", "5:6"], "Endpoint pairs, seed_a:seed_b.")
    flags.DEFINE_integer("train_epochs", 20, "Epochs of each endpoint.")
    flags.DEFINE_string("augment", "auto", "Training augmentation of the endpoints (auto: crop_flip "
                        "for 32x32 colour images, none otherwise).")
    flags.DEFINE_float("validation_fraction", 0.1, "Held-out part of the training split.")
    flags.DEFINE_integer("seed", 0, "Seed of the validation split and of every path.")
    flags.DEFINE_list("budgets", ["434", "867", "1994", "4335"],
                      "Gradient-equivalents (batches of 128) per path.")
    flags.DEFINE_list("methods", ["geodesic", "bezier", "polychain", "straight"], "Path methods.")
    flags.DEFINE_list("rates", [str(DEFAULT_RATE)], "Adam rates of the trained paths (the "
                      "geodesic's relaxation and the curves' training); a line each.")
    flags.DEFINE_list("inner_points", ["4"], "Inner points K of the geodesic (one line each).")
    flags.DEFINE_bool("align", True, "Also connect A to B permuted onto A.")
    flags.DEFINE_integer("eval_points", 41, "Points at which every path is evaluated.")
    flags.DEFINE_bool("graph", False, "Graph mode instead of XLA (conv nets on CPU).")
    flags.DEFINE_string("output", "runs/connect_frontier/frontier.json",
                        "Rows (JSON); the plot beside it.")


def configurations(methods, inner_points, budgets, rates=(DEFAULT_RATE,)):
    """(family, method, budget, settings overrides) of every path per target;
    the straight line once, at budget 0. A rate other than the package's
    default (Adam 1e-3, the geodesic's relaxation and the curves' training
    alike) is named in the family."""
    out = []
    for method in methods:
        if method == "straight":
            out.append(("straight", "straight", 0.0, {}))
            continue
        for rate in rates:
            tag = "" if rate == DEFAULT_RATE else f" lr={rate:g}"
            for budget in budgets:
                if method == "geodesic":
                    for k in inner_points:
                        family = "geodesic" if len(inner_points) == 1 else f"geodesic K={k}"
                        out.append((family + tag, method, float(budget),
                                    {"inner_points": int(k), "learning_rate": rate}))
                else:
                    out.append((method + tag, method, float(budget), {"learning_rate": rate}))
    return out


def key(row) -> tuple:
    return row["pair"], row["target"], row["family"], row["budget"]


def run_path(model, a, target, train, splits: dict, method: str, budget: float,
             settings: dict, *, num_points: int = 41, seed: int = 0,
             jit_compile: bool = True) -> dict:
    """One path by `path_between` at `budget` GE (0: the straight line); its
    gradient-equivalents, seconds, the method's counters, and barrier / max
    loss / minimum accuracy on each split ({name: ArraySplit}). `settings`
    override the geodesic's `Relaxation` or the curves' `CurveTraining`."""
    import keras

    from tfgeo.connect import path_finding

    keras.utils.set_random_seed(seed)
    path = path_finding.path_between(
        model, a, target, train.x, train.y, method, num_points,
        budget=budget or path_finding.DEFAULT_BUDGET,
        relaxation=path_finding.Relaxation(**(settings if method == "geodesic" else {})),
        curve_training=path_finding.CurveTraining(
            **(settings if method in ("bezier", "polychain") else {})),
        seed=seed, jit_compile=jit_compile)
    row = {"method": method, "budget": budget,
           "gradient_equivalents": path.gradient_equivalents, "seconds": path.seconds,
           **{k: v for k, v in path.info.items() if k in ("iterations", "steps", "inner_points")}}
    for split, data in splits.items():
        scores = path.evaluate(data.x, data.y)
        row.update({f"{split}_barrier": scores["barrier"], f"{split}_max_loss": scores["max_loss"],
                    f"{split}_min_accuracy": scores["min_accuracy"]})
    return row


def summary(rows, split: str = "test") -> dict:
    """{(target, family, budget): {"pairs", mean and sd of GE, barrier and
    minimum accuracy on `split`}} over the pairs that ran it."""
    import numpy as np

    groups = {}
    for r in rows:
        groups.setdefault((r["target"], r["family"], r["budget"]), []).append(r)
    out = {}
    for k, rs in sorted(groups.items()):
        entry = {"pairs": len(rs)}
        for name, field in (("ge", "gradient_equivalents"), ("barrier", f"{split}_barrier"),
                            ("min_accuracy", f"{split}_min_accuracy")):
            values = np.array([r[field] for r in rs], dtype=float)
            entry[name] = float(values.mean())
            entry[name + "_sd"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out[k] = entry
    return out


def table(rows, budgets) -> str:
    """Markdown: per target and budget, each family's test barrier (mean ± sd),
    validation barrier mean and minimum test accuracy mean, at its mean GE."""
    test, val = summary(rows, "test"), summary(rows, "validation")
    families = sorted({r["family"] for r in rows}, key=lambda f: (f == "straight", f))
    lines = ["| target | budget (GE) | " + " | ".join(families) + " |",
             "|---|---|" + "---|" * len(families)]
    for target in sorted({r["target"] for r in rows}):
        for budget in budgets:
            cells = []
            for fam in families:
                b = 0.0 if fam == "straight" else budget
                t, v = test.get((target, fam, b)), val.get((target, fam, b))
                cells.append("" if t is None else
                             f"{t['barrier']:.4f} ± {t['barrier_sd']:.4f} ({v['barrier']:.4f}); "
                             f"{100 * t['min_accuracy']:.2f}% at {t['ge']:.0f}")
            lines.append(f"| {target} | {budget:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(path, rows, title: str) -> str:
    from tfgeo.experiments import plotting

    test = summary(rows, "test")
    spent = [v["ge"] for v in test.values() if v["ge"] > 0]
    span = (min(spent), max(spent)) if spent else (1.0, 1.0)
    panels = []
    for target in sorted({r["target"] for r in rows}):
        for name, label in (("barrier", "test loss barrier"),
                            ("min_accuracy", "minimum test accuracy")):
            series, straight = {}, None
            for fam in sorted({r["family"] for r in rows}):
                pts = sorted((v["ge"], v[name]) for (t, f, _), v in test.items()
                             if t == target and f == fam)
                if fam == "straight":  # no compute: a level line across the budgets
                    straight = pts[0][1] if pts else None
                elif pts:
                    series[fam] = ([p[0] for p in pts], [p[1] for p in pts])
            ys = [y for _, values in series.values() for y in values]
            caption = f"{label}, A -> {target}"
            if straight is not None and ys and (
                    min(ys) - (max(ys) - min(ys)) <= straight <= max(ys) + (max(ys) - min(ys))):
                series["straight (0 GE)"] = ([span[0], span[1]], [straight, straight])
            elif straight is not None:  # far off: it would flatten the others
                caption += f"\n(straight line, 0 GE: {straight:.4g}, off the axis)"
            panels.append((caption, series))
    return plotting.panel_plot(path, panels, xlabel="gradient-equivalents per path (log scale)",
                               title=title, xlog=True)


def endpoints(ds, train, val, seed: int, stem: str):
    """The endpoint trained from `seed` (loaded if saved beside the output)."""
    import keras

    from tfgeo import classification
    from tfgeo.experiments import config as config_lib
    from tfgeo.experiments import networks
    from tfgeo.experiments import training

    path = f"{stem}_endpoint{seed}.keras"
    if os.path.exists(path):
        return keras.models.load_model(path)
    keras.utils.set_random_seed(seed)
    model = networks.build(config_lib.NetworkConfig(
        model=FLAGS.model, width=FLAGS.width, vgg_init=FLAGS.vgg_init),
        ds.input_shape, ds.num_classes)
    began = time.time()
    training.train_classifier(model, train, val, epochs=FLAGS.train_epochs, batch_size=128,
                              learning_rate=1e-3, lr_schedule="cosine", seed=seed,
                              jit_compile=not FLAGS.graph, verbose=2, augment=FLAGS.augment)
    test = classification.evaluate_classifier(model, ds.test.x, ds.test.y)["accuracy"]
    print(f"endpoint seed {seed}: {model.count_params():,} weights, test {test:.4f}, "
          f"trained in {time.time() - began:.0f} s", flush=True)
    model.save(path)
    return model


def main(_):
    from tfgeo import classification
    from tfgeo import weights as weights_lib
    from tfgeo.connect import path_finding
    from tfgeo.experiments import config as config_lib
    from tfgeo.experiments import data

    stem = os.path.splitext(FLAGS.output)[0]
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    ds, train, val = data.load_splits(config_lib.DataConfig(
        dataset=FLAGS.dataset, manual_dir=FLAGS.manual_dir, image_folder=FLAGS.image_folder,
        validation_fraction=FLAGS.validation_fraction), FLAGS.seed)
    splits = {"validation": val, "test": ds.test}
    budgets = [float(b) for b in FLAGS.budgets]
    rates = [float(r) for r in FLAGS.rates]
    state = {"rows": [], "endpoints": {}}
    if os.path.exists(FLAGS.output):  # resume: keep the paths already run
        with open(FLAGS.output) as f:
            state = json.load(f)
    done = {key(r) for r in state["rows"]}

    def save():
        state["flags"] = FLAGS.flag_values_dict()
        with open(FLAGS.output + ".tmp", "w") as f:
            json.dump(state, f, indent=1)
        os.replace(FLAGS.output + ".tmp", FLAGS.output)

    for pair in FLAGS.pairs:
        seed_a, seed_b = (int(s) for s in pair.split(":"))
        model_a = endpoints(ds, train, val, seed_a, stem)
        model_b = endpoints(ds, train, val, seed_b, stem)
        for seed, m in ((seed_a, model_a), (seed_b, model_b)):
            state["endpoints"].setdefault(str(seed), {
                split: classification.evaluate_classifier(m, d.x, d.y)["accuracy"]
                for split, d in splits.items()})
        a = weights_lib.get_trainable(model_a)
        targets = {"B": weights_lib.get_trainable(model_b)}
        if FLAGS.align:
            targets["B aligned"] = path_finding.align_to(model_a, model_b, train.x,
                                                         seed=FLAGS.seed)
        for target_name, target in targets.items():
            for family, method, budget, settings in configurations(
                    FLAGS.methods, FLAGS.inner_points, budgets, rates):
                if (pair, target_name, family, budget) in done:
                    continue
                began = time.time()
                row = run_path(model_a, a, target, train, splits, method, budget, settings,
                               num_points=FLAGS.eval_points, seed=FLAGS.seed,
                               jit_compile=not FLAGS.graph)
                row.update(pair=pair, target=target_name, family=family)
                state["rows"].append(row)
                save()
                print(f"{pair} A->{target_name} {family} @{budget:g}: test barrier "
                      f"{row['test_barrier']:.4f} (validation {row['validation_barrier']:.4f}), "
                      f"min test accuracy {row['test_min_accuracy']:.4f}, "
                      f"{row['gradient_equivalents']:.0f} GE, {row['seconds']:.1f} s "
                      f"[{time.time() - began:.0f} s]", flush=True)
    save()
    print(f"\nendpoints (accuracy): {json.dumps(state['endpoints'])}")
    print("\ntest barrier mean ± sd over pairs (validation mean); minimum test accuracy "
          "mean, at mean GE:\n" + table(state["rows"], budgets))
    picture = plot(stem + ".png", state["rows"],
                   f"connecting optima: {FLAGS.model} on {FLAGS.dataset}, "
                   f"{len(FLAGS.pairs)} endpoint pairs")
    print(f"wrote {FLAGS.output} and {picture}")


if __name__ == "__main__":
    define_flags()
    app.run(main)

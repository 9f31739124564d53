"""Connecting optima (application 3): paths between two trained networks, at equal compute.

Endpoints: two `.keras` files of one architecture, or two networks trained
here from two seeds. With `align`, B is also permuted onto A by weight
matching (same function) and every path is run again to the aligned B.
Path methods (`methods`), each to B and to the aligned B:

  geodesic   the relaxed boundary-value geodesic (`tfgeo.connect.relaxed_path`): K
             inner points relaxed to minimise the path's metric energy
             (+ the loss-aware term), A and B fixed. Its compute sets the
             budget of the curves at equal compute.
  shooting   the geodesic walk from A toward B (`tfgeo.connect.geodesic_walk.geodesic_path`),
             landing with a last straight step, at its own cost.
  straight   the segment A -> B.
  bezier, polychain
             Garipov et al.'s curves (`tfgeo.connect.curves`), one bend each, trained
             twice: at the geodesic's gradient-equivalents ("equal") and at
             their own converged budget (`curve_converged_steps`, "converged").
  fip        the FIP authors' first-order output-preserving path
             (`tfgeo.connect.output_path`), its outer steps set to the geodesic's
             budget.

Every path is evaluated at the same `eval_points` points, equally spaced in
Euclidean arc length along it (a polygon's points interpolated; a curve's
taken at the t of equal arc length), on the test split, or on the validation
split when `validation_fraction` > 0 (tuning never sees the test split).
Per path: accuracy and loss at every point, loss barrier, max loss, min
accuracy, Euclidean and metric length (`metric_batch` training inputs),
gradient-equivalents (`cost`, in gradients on batches of 128) and wall
seconds. Each finished path is checkpointed, so an interrupted run resumes
with the next path.
"""
from __future__ import annotations

import dataclasses
import os
import time

import keras
import numpy as np
from absl import logging

from tfgeo import classification
from tfgeo import cost
from tfgeo import weights as weights_lib
from tfgeo.connect import curves
from tfgeo.connect import geodesic_walk as connect
from tfgeo.connect import path_finding
from tfgeo.connect import paths
from tfgeo.connect import relaxed_path

from . import config as config_lib
from . import data
from . import networks
from . import plotting
from . import results
from . import run_state
from . import tensorboard
from . import training

option = config_lib.option
METHODS = ("geodesic", "shooting", "straight", "bezier", "polychain", "fip")
#: Gradient-equivalents are counted in gradients on batches of this size.
REFERENCE_BATCH = path_finding.REFERENCE_BATCH


@dataclasses.dataclass
class ConnectConfig:
    run: config_lib.RunConfig = config_lib.nested(config_lib.RunConfig,
                                                  output_dir="runs/connect")
    data: config_lib.DataConfig = config_lib.nested(config_lib.DataConfig)
    network: config_lib.NetworkConfig = config_lib.nested(config_lib.NetworkConfig)
    train: config_lib.TrainConfig = config_lib.nested(config_lib.TrainConfig, prefix="train_")
    geodesic: config_lib.GeodesicConfig = config_lib.nested(config_lib.GeodesicConfig,
                                                            step_size=0.1)
    model_a: str | None = option(None, "Endpoint A (.keras); else trained from --seed_a.",
                                 path="file")
    model_b: str | None = option(None, "Endpoint B (.keras); else trained from --seed_b.",
                                 path="file")
    seed_a: int = option(1, "Initialisation/shuffling seed of endpoint A when trained.",
                         lower=0, upper=config_lib.MAX_SEED)
    seed_b: int = option(2, "Initialisation/shuffling seed of endpoint B when trained.",
                         lower=0, upper=config_lib.MAX_SEED)
    methods: tuple = option(METHODS, "Path methods to run, each to B (and the aligned B).",
                            choices=METHODS, unique=True, nonempty=True)
    align: bool = option(True, "Also connect A to B permuted onto A by weight matching.")
    eval_points: int = option(41, "Points at which every path is evaluated (equally spaced in "
                              "Euclidean arc length).", lower=2, upper=10_000)
    metric_batch: int = option(256, "Training inputs per metric batch (shooting walk, metric "
                               "length).", lower=1)
    # The relaxed geodesic.
    relax_points: int = option(4, "Inner points K of the relaxed geodesic.", lower=1,
                               upper=1000)
    relax_iterations: int = option(743, "Relaxation iterations of the geodesic.", lower=1,
                                   upper=10_000_000)
    relax_batch: int = option(32, "Training inputs per relaxation iteration (shared by all "
                              "points).", lower=1)
    relax_energy: str = option("divergence", "Energy relaxed: divergence (the discrete "
                               "geodesic energy, exact gradient) or metric (quadratic forms, "
                               "metric held fixed at each point).",
                               choices=relaxed_path.ENERGIES)
    relax_representations: str = option("logits", "Representations the energy sees: logits "
                                         "or hidden (every weighted layer's pre-activations "
                                         "too).", choices=relaxed_path.REPRESENTATIONS)
    relax_loss_weight: float = option(0.0, "Weight of the training loss along the path in "
                                      "the relaxed energy (0: the metric energy alone).",
                                      lower=0.0, upper=1e6)
    relax_learning_rate: float = option(1e-3, "Adam learning rate of the relaxation.",
                                        lower=0.0, lower_open=True, upper=10.0)
    relax_parametrization: str = option("bezier", "What is relaxed: points (K free inner "
                                        "points, a polygon) or bezier (the bends of a Bezier "
                                        "curve, energy nodes at stratified random t).",
                                        choices=relaxed_path.PARAMETRIZATIONS)
    relax_bends: int = option(1, "Bends of the Bezier parametrisation.", lower=1, upper=100)
    # The shooting walk.
    max_steps: int = option(3000, "Most steps of the shooting walk.", lower=1,
                            upper=10_000_000)
    tolerance: float = option(0.01, "The shooting walk stops once ||w_B - w|| is below this "
                              "fraction of ||w_B - w_A||, then steps straight to B.", lower=0.0,
                              upper=1.0, upper_open=True)
    record_every: int = option(5, "The shooting walk records a point every this many steps.",
                               lower=1)
    # The curves.
    curve_batch: int = option(128, "Batch size of the curves' training steps.", lower=1)
    curve_learning_rate: float = option(1e-3, "Adam learning rate of the curves.", lower=0.0,
                                        lower_open=True, upper=10.0)
    curve_converged_steps: int = option(5000, "Training steps of the curves at their own "
                                        "converged budget (0: skip those rows).", lower=0,
                                        upper=10_000_000)
    # FIP.
    fip_batch: int = option(256, "Training inputs of the FIP path.", lower=1)
    fip_inner_steps: int = option(40, "Inner gradient steps per FIP outer step.", lower=1)
    fip_learning_rate: float = option(0.5, "FIP inner learning rate.", lower=0.0,
                                      lower_open=True, upper=100.0)
    fip_beta: float = option(0.03, "FIP pull weight beta.", lower=0.0, lower_open=True,
                             upper=1e6)


def check(config: ConnectConfig) -> None:
    config_lib.validate(config)
    networks.check_fits(config.network, config.data.dataset)
    if "geodesic" not in config.methods and any(m in config.methods
                                                for m in ("bezier", "polychain", "fip")):
        raise config_lib.InputError("--methods: bezier, polychain and fip are run at the "
                                    "geodesic's compute; include geodesic.")
    if config.model_a and config.model_b and os.path.samefile(config.model_a, config.model_b):
        raise config_lib.InputError(f"--model_a and --model_b are the same file "
                                    f"({config.model_a}): there is no path to find.")
    if not config.model_a and not config.model_b and config.seed_a == config.seed_b:
        raise config_lib.InputError(f"--seed_a and --seed_b are both {config.seed_a}: the two "
                                    "endpoints would be the same network.")


def _endpoints(config, ds, train, state):
    """(A, B) networks; architectures are checked against each other before any training."""
    loaded = {}
    for which in ("a", "b"):
        path = getattr(config, f"model_{which}")
        if path:
            loaded[which] = networks.load(path, ds.input_shape, ds.num_classes,
                                          f"--model_{which}")
    reference = next(iter(loaded.values()), None)
    if reference is not None:
        built = networks.build(config.network, ds.input_shape, ds.num_classes)
        for which in ("a", "b"):
            shapes = weights_lib.shapes(loaded[which]) if which in loaded else weights_lib.shapes(built)
            if shapes != weights_lib.shapes(reference):
                given = "a" if "a" in loaded else "b"
                other = (f"--model_{which}" if which in loaded
                         else f"the network --model={config.network.model} would train")
                raise config_lib.InputError(
                    f"--model_{given} has weights of shapes {weights_lib.shapes(reference)}; "
                    f"{other} has {shapes}.")
    out = []
    for which in ("a", "b"):
        if which in loaded:
            out.append(loaded[which])
            continue
        out.append(training.start_network(
            None, config.network, config.train, ds, train, None, state,
            getattr(config, f"seed_{which}"), name=f"endpoint_{which}.keras",
            argument=f"--model_{which}", verbose=config.run.verbose))
    return out


COLUMNS = ("path", "points", "barrier", "max_loss", "min_accuracy", "euclid_len", "metric_len",
           "grad_equiv", "seconds")


def _row(label, res):
    return {"path": label, "points": res["points"], "barrier": res["barrier"],
            "max_loss": res["max_loss"], "min_accuracy": res["min_accuracy"],
            "euclid_len": res["euclidean_length"], "metric_len": res["metric_length"],
            "grad_equiv": float(res.get("gradient_equivalents", 0.0)),
            "seconds": float(res.get("seconds", 0.0))}


def evaluate_path(model, points, x, y, metric_inputs, output_metric: str = "fisher") -> dict:
    """Accuracy/loss at every point, lengths, barrier, normalised positions."""
    scores = [classification.evaluate_weights_trainable(model, p, x, y) for p in points]
    losses = [s["loss"] for s in scores]
    return {
        "position": paths.euclidean_positions(points).tolist(),
        "accuracy": [s["accuracy"] for s in scores],
        "loss": losses,
        "barrier": connect.loss_barrier(losses),
        "max_loss": float(max(losses)),
        "min_accuracy": float(min(s["accuracy"] for s in scores)),
        **connect.lengths(model, points, metric_inputs, output_metric),
        "points": len(points),
    }


def save_points(path: str, points) -> str:
    """Saves a path's points (lists of arrays) atomically as one .npz."""
    arrays = {f"point{k}/{i}": np.asarray(w) for k, p in enumerate(points) for i, w in enumerate(p)}
    return results.write_arrays(path, arrays)


def load_points(path: str) -> list[list[np.ndarray]]:
    """Inverse of `save_points`: the list of points, each a list of arrays."""
    with np.load(path) as npz:
        names = npz.files
        count = 1 + max(int(n.split("/")[0][5:]) for n in names)
        return [[npz[f"point{k}/{i}"]
                 for i in range(sum(1 for n in names if n.startswith(f"point{k}/")))]
                for k in range(count)]


def report(out, title) -> results.Report:
    rows = [_row(label, res) for label, res in out["paths"].items()]
    ends = out["endpoints"]
    split = out.get("split", "test")
    panels = []
    for suffix in ("", " aligned"):
        chosen = {k: v for k, v in out["paths"].items() if k.endswith("->B" + suffix)
                  or ("->B" + suffix + " (") in k}
        if not chosen:
            continue
        target = "B aligned" if suffix else "B"
        panels.append((f"{split} accuracy, A -> {target}",
                       {k: (v["position"], v["accuracy"]) for k, v in chosen.items()}))
        panels.append((f"{split} loss, A -> {target}",
                       {k: (v["position"], v["loss"]) for k, v in chosen.items()}))
    plots = {}
    if panels:
        plots["paths.png"] = lambda path: plotting.panel_plot(
            path, panels, xlabel="normalised position along the path (Euclidean arc length)",
            title=title)
    return results.Report(
        title, out, rows, list(COLUMNS),
        f"endpoints {split} accuracy A {ends['accuracy']:.4f}, B {ends['accuracy_b']:.4f}; "
        "barrier = max loss - mean endpoint loss; grad_equiv in gradients on batches of "
        f"{REFERENCE_BATCH}:", plots=plots)


def _jobs(config, targets):
    """The (method, target, variant) of every path, in run order."""
    jobs = []
    for name in targets:
        for method in config.methods:
            if method in ("bezier", "polychain"):
                jobs.append((method, name, "equal"))
                if config.curve_converged_steps:
                    jobs.append((method, name, "converged"))
            else:
                jobs.append((method, name, None))
    return jobs


def _label(method, name, variant):
    return f"{method} A->{name}" + (f" ({variant})" if variant else "")


def _settings(config):
    """The library's per-method settings (`tfgeo.connect.path_finding`) from the flags."""
    g = config.geodesic
    return dict(
        relaxation=path_finding.Relaxation(
            config.relax_iterations, config.relax_points, config.relax_batch,
            config.relax_energy, config.relax_representations, config.relax_loss_weight,
            config.relax_learning_rate, config.relax_parametrization, config.relax_bends,
            g.output_metric),
        shooting=path_finding.Shooting(
            g.step_size, g.damping, g.cg_iterations, config.tolerance, config.max_steps,
            config.record_every, config.metric_batch, g.output_metric),
        fip=path_finding.FIP(config.fip_batch, config.fip_inner_steps,
                             config.fip_learning_rate, config.fip_beta, config.tolerance))


def distribution_obstacle(config: ConnectConfig) -> str | None:
    """Why this study cannot run over several replicas (None: it can); the
    runner refuses the run before any training (`runners.common.strategy`),
    where the library would raise only when it reaches the method."""
    refused = [m for m in config.methods if m in path_finding.NOT_DISTRIBUTED]
    if refused:
        return (f"--methods={','.join(refused)} is not distributed (its inner loop updates "
                f"weights in place); leave it out of --methods")
    return None


def run(config: ConnectConfig) -> results.Report:
    """Runs (or resumes) the paths between the endpoints; see the module docstring."""
    check(config)
    tensorboard.configure(config.run)
    state = run_state.open_run(config)
    ds, train, validation = data.load_run_splits(config.data, config.run.seed)
    split = "validation" if validation is not None else "test"
    evaluated = validation if validation is not None else ds.test
    model_a, model_b = _endpoints(config, ds, train, state)
    try:
        path_finding.check_fixed_weights(model_a, model_b, ("--model_a", "--model_b"))
        if set(config.methods) & {"bezier", "polychain"}:
            curves.check_no_batch_norm(model_a, "--model_a")
    except ValueError as e:
        raise config_lib.InputError(str(e)) from None
    a, b = weights_lib.get_trainable(model_a), weights_lib.get_trainable(model_b)
    if paths.distance(a, b) == 0.0:
        raise config_lib.InputError("--model_a and --model_b hold identical weights: there is "
                                    "no path to find.")
    targets = {"B": b}
    if config.align:
        try:
            targets["B aligned"] = path_finding.align_to(model_a, model_b, train.x,
                                                         seed=config.run.seed)
        except ValueError as e:
            raise config_lib.InputError(f"--align: {e}") from None
    jit = config_lib.jit_compile(config.run.compile, model_a)
    metric_inputs = train.x[:config.metric_batch]
    name_a = (os.path.basename(config.model_a) if config.model_a
              else f"{config.network.model} seed {config.seed_a}")
    name_b = (os.path.basename(config.model_b) if config.model_b
              else f"{config.network.model} seed {config.seed_b}")
    title = f"{ds.name}: A ({name_a}) to B ({name_b}), {split} split"
    test_a = classification.evaluate_classifier(model_a, evaluated.x, evaluated.y)
    test_b = classification.evaluate_classifier(model_b, evaluated.x, evaluated.y)
    out = state.payload.get("out") or {
        "dataset": ds.name, "split": split, "paths": {}, "cost_rule": cost.COSTS,
        "reference_batch": REFERENCE_BATCH,
        "distances": {name: paths.distance(a, t) for name, t in targets.items()},
        "endpoints": {"accuracy": test_a["accuracy"], "loss": test_a["loss"],
                      "accuracy_b": test_b["accuracy"], "loss_b": test_b["loss"]}}
    model = model_a
    g = config.geodesic
    for k, (method, name, variant) in enumerate(_jobs(config, targets)):
        if k < state.completed:
            continue
        target = targets[name]
        label = _label(method, name, variant)
        seed = config.run.seed
        # Every path starts from the same global random state, so a resumed run (which
        # loads its endpoints instead of training them) equals an uninterrupted one.
        keras.utils.set_random_seed(seed * 1000 + k)
        logging.info("Path %s ...", label)
        weights_lib.set_trainable(model, a)
        budget = out["paths"].get(f"geodesic A->{name}", {}).get("gradient_equivalents")
        began = time.time()
        steps = (config.curve_converged_steps if variant == "converged" else None)
        path = path_finding.path_between(
            model, a, target, train.x, train.y, method, config.eval_points,
            budget=budget if budget is not None else path_finding.DEFAULT_BUDGET,
            curve_training=path_finding.CurveTraining(config.curve_batch,
                                                      config.curve_learning_rate, steps),
            seed=seed, jit_compile=jit, **_settings(config))
        points, ge, seconds, info = path.points, path.gradient_equivalents, path.seconds, \
            path.info
        weights_lib.set_trainable(model, a)
        res = evaluate_path(model, points, evaluated.x, evaluated.y, metric_inputs,
                            g.output_metric)
        res.update(gradient_equivalents=float(ge), seconds=float(seconds), method=method,
                   target=name, variant=variant, **info)
        if method == "geodesic":
            save_points(state.artifact(f"points_{name.replace(' ', '_')}.npz"), points)
        out["paths"][label] = res
        logging.info("%s: barrier %.4f, min accuracy %.4f, %.0f gradient-equivalents, %.1f s "
                     "(evaluated in %.1f s)", label, res["barrier"], res["min_accuracy"], ge,
                     seconds, time.time() - began - seconds)
        series = label.replace(" ", "_").replace("->", "_to_")
        for key in ("barrier", "min_accuracy"):
            tensorboard.scalars(key, {series: res[key]}, k)
        state.save(k + 1, {"out": out}, {})
        results.write_report(config.run.output_dir, report(out, title),
                             config_lib.identity(config), echo=False)
    return report(out, title)

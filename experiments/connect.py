"""Connecting optima (application 3): paths between two trained networks, at equal compute.

Endpoints: two `.keras` files of one architecture, or two networks trained
here from two seeds. With `align`, B is also permuted onto A by weight
matching (same function) and every path is run again to the aligned B.
Path methods (`methods`), each to B and to the aligned B:

  geodesic   the relaxed boundary-value geodesic (`tfgeo.relaxed_path`): K
             inner points relaxed to minimise the path's metric energy
             (+ the loss-aware term), A and B fixed. Its compute sets the
             budget of the curves at equal compute.
  shooting   the geodesic walk from A toward B (`tfgeo.connect.geodesic_path`),
             landing with a last straight step, at its own cost.
  straight   the segment A -> B.
  bezier, polychain
             Garipov et al.'s curves (`tfgeo.curves`), one bend each, trained
             twice: at the geodesic's gradient-equivalents ("equal") and at
             their own converged budget (`curve_converged_steps`, "converged").
  fip        the FIP authors' first-order output-preserving path
             (`tfgeo.output_path`), its outer steps set to the geodesic's
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
import math
import time

import keras
import numpy as np
from absl import logging

from tfgeo import connect
from tfgeo import curves
from tfgeo import output_path
from tfgeo import paths
from tfgeo import permutation
from tfgeo import relaxed_path
from tfgeo import weights as weights_lib

from . import config as config_lib
from . import cost
from . import data
from . import evaluation
from . import networks
from . import plotting
from . import results
from . import run_state
from . import tensorboard

option = config_lib.option
METHODS = ("geodesic", "shooting", "straight", "bezier", "polychain", "fip")
#: Gradient-equivalents are counted in gradients on batches of this size.
REFERENCE_BATCH = 128


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
                         lower=0)
    seed_b: int = option(2, "Initialisation/shuffling seed of endpoint B when trained.",
                         lower=0)
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
        out.append(networks.start_network(
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


def resample(points, num_points: int) -> list:
    """`num_points` points equally spaced in Euclidean arc length along the polygon
    through `points` (the first and last exactly)."""
    if num_points < 2:
        raise ValueError(f"num_points must be >= 2, got {num_points}.")
    steps = np.array([paths.distance(p, q) for p, q in zip(points, points[1:])])
    cumulative = np.concatenate([[0.0], np.cumsum(steps)])
    total = cumulative[-1]
    out = [[np.array(w, copy=True) for w in points[0]]]
    for s in np.linspace(0.0, total, num_points)[1:-1]:
        k = int(np.clip(np.searchsorted(cumulative, s, side="right") - 1, 0, len(steps) - 1))
        t = (s - cumulative[k]) / steps[k] if steps[k] > 0 else 0.0
        out.append(paths.interpolate(points[k], points[k + 1], float(t)))
    out.append([np.array(w, copy=True) for w in points[-1]])
    return out


def curve_points(kind: str, a, bends, b, num_points: int, grid: int = 400) -> list:
    """`num_points` points of a curve at the t of equally spaced Euclidean arc length
    (measured on a polygon of `grid` segments); the first is A and the last B exactly."""
    ts = np.linspace(0.0, 1.0, grid + 1)
    dense = [curves.curve_point(kind, float(t), a, bends, b) for t in ts]
    cumulative = np.concatenate([[0.0], np.cumsum([paths.distance(p, q)
                                                   for p, q in zip(dense, dense[1:])])])
    targets = np.linspace(0.0, cumulative[-1], num_points)
    t_at = np.interp(targets, cumulative, ts)
    t_at[0], t_at[-1] = 0.0, 1.0
    return [curves.curve_point(kind, float(t), a, bends, b) for t in t_at]


def evaluate_path(model, points, x, y, metric_inputs, output_metric: str = "fisher") -> dict:
    """Accuracy/loss at every point, lengths, barrier, normalised positions."""
    scores = [evaluation.evaluate_weights_trainable(model, p, x, y) for p in points]
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


def _relaxed(config, model, a, target, batches, jit):
    res = relaxed_path.relax_path(
        model, a, target, batches, config.relax_iterations, num_points=config.relax_points,
        energy=config.relax_energy, output_metric=config.geodesic.output_metric,
        representations=config.relax_representations, loss_weight=config.relax_loss_weight,
        optimizer=keras.optimizers.Adam(config.relax_learning_rate), jit_compile=jit,
        log_every=max(1, config.relax_iterations // 10),
        parametrization=config.relax_parametrization, num_bends=config.relax_bends,
        seed=config.run.seed)
    c = res["counts"]
    ge = cost.gradient_equivalents(metric_products=c["metric_products"],
                                   gradients=c["gradients"], forwards=c["forwards"],
                                   batch=res["batch"], reference_batch=REFERENCE_BATCH)
    info = {"iterations": res["iterations"], "inner_points": config.relax_points,
            "energy": res["energy"], "train_loss": res["loss"], "history": res["history"]}
    points = (curve_points("bezier", a, res["bends"], target, config.eval_points)
              if res["bends"] is not None else resample(res["points"], config.eval_points))
    return points, ge, res["seconds"], info


def _shooting(config, model, a, target, walk_data, jit):
    g = config.geodesic
    weights_lib.set_trainable(model, a)
    walk = connect.geodesic_path(
        model, target, walk_data, step_size=g.step_size, damping=g.damping,
        output_metric=g.output_metric, cg_max_iterations=g.cg_iterations,
        tolerance=config.tolerance, max_steps=config.max_steps,
        record_every=config.record_every, jit_compile=jit, verbose=config.run.verbose)
    if not walk["reached"]:
        logging.warning("The shooting walk stopped %.3g from its target (of %.3g) after %d "
                        "steps; its last leg is a straight segment, evaluated as part of the "
                        "path.", walk["final_distance"], walk["start_distance"], walk["steps"])
    ge = cost.gradient_equivalents(metric_products=walk["metric_products"],
                                   quadratic_forms=walk["quadratic_forms"],
                                   batch=config.metric_batch, reference_batch=REFERENCE_BATCH)
    info = {"steps": walk["steps"], "reached": walk["reached"],
            "straight_leg_points": walk["straight_leg_points"]}
    return resample(walk["points"], config.eval_points), ge, walk["seconds"], info


def _curve(config, method, variant, model, a, target, train, budget, jit, seed):
    if variant == "equal":
        steps = max(1, int(round(budget * REFERENCE_BATCH / config.curve_batch)))
    else:
        steps = config.curve_converged_steps
    batches = data.to_dataset(train, config.curve_batch, shuffle=True, seed=seed,
                              drop_remainder=True, repeat=True)
    res = curves.train_curve(model, a, target, batches, steps, kind=method, num_bends=1,
                             optimizer=keras.optimizers.Adam(config.curve_learning_rate),
                             seed=seed, jit_compile=jit, log_every=max(1, min(500, steps)))
    bends = res["curve"].bend_points()
    points = curve_points(method, a, bends, target, config.eval_points)
    ge = cost.gradient_equivalents(gradients=res["gradients"], batch=config.curve_batch,
                                   reference_batch=REFERENCE_BATCH)
    return points, ge, res["seconds"], {"steps": res["steps"], "train_loss": res["loss"]}


def _fip(config, model, a, target, train, budget, jit, seed):
    per_step = cost.gradient_equivalents(gradients=config.fip_inner_steps + 1.0 / 3.0,
                                         batch=config.fip_batch,
                                         reference_batch=REFERENCE_BATCH)
    steps = max(1, int(round(budget / per_step)))
    # Each outer step aims a fraction eta of the remaining way: eta so that the steps
    # leave the shooting walk's tolerance of the distance.
    eta = min(1.0, 1.0 - max(config.tolerance, 1e-3) ** (1.0 / steps))
    inputs = train.x[np.random.default_rng(seed).permutation(len(train.y))[:config.fip_batch]]
    weights_lib.set_trainable(model, a)
    res = output_path.output_path(model, target, inputs, num_steps=steps,
                                  inner_steps=config.fip_inner_steps,
                                  learning_rate=config.fip_learning_rate, beta=config.fip_beta,
                                  eta=eta, tolerance=config.tolerance, jit_compile=jit)
    ge = cost.gradient_equivalents(gradients=res["gradients"], batch=res["batch"],
                                   reference_batch=REFERENCE_BATCH)
    return resample(res["points"], config.eval_points), ge, res["seconds"], {
        "steps": res["steps"], "eta": eta, "reached": res["reached"]}


def run(config: ConnectConfig) -> results.Report:
    """Runs (or resumes) the paths between the endpoints; see the module docstring."""
    check(config)
    tensorboard.configure(config.run)
    state = run_state.open_run(config)
    ds, train, validation = data.load_run_splits(config.data, config.run.seed)
    split = "validation" if validation is not None else "test"
    evaluated = validation if validation is not None else ds.test
    model_a, model_b = _endpoints(config, ds, train, state)
    a, b = weights_lib.get_trainable(model_a), weights_lib.get_trainable(model_b)
    targets = {"B": b}
    if config.align:
        try:
            units = permutation.spec(model_a)
        except ValueError as e:
            raise config_lib.InputError(f"--align: {e}") from None
        _, targets["B aligned"] = permutation.weight_matching(units, a, b, seed=config.run.seed)
        logging.info("Weight matching: ||B - A|| %.3f -> %.3f", paths.distance(a, b),
                     paths.distance(a, targets["B aligned"]))
    jit = config_lib.jit_compile(config.run.compile, model_a)
    metric_inputs = train.x[:config.metric_batch]
    title = (f"{config.network.model} on {ds.name}: A (seed {config.seed_a}) to B "
             f"(seed {config.seed_b}), {split} split")
    test_a = evaluation.evaluate_classifier(model_a, evaluated.x, evaluated.y)
    test_b = evaluation.evaluate_classifier(model_b, evaluated.x, evaluated.y)
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
        if method == "geodesic":
            batches = data.to_dataset(train, config.relax_batch, shuffle=True, seed=seed,
                                      drop_remainder=True, repeat=True)
            raw, ge, seconds, info = _relaxed(config, model, a, target, batches, jit)
        elif method == "shooting":
            walk_data = data.to_dataset(train, config.metric_batch, shuffle=True, seed=seed,
                                        drop_remainder=True, repeat=True)
            raw, ge, seconds, info = _shooting(config, model, a, target, walk_data, jit)
        elif method == "straight":
            raw, ge, seconds, info = paths.straight_path(a, target, config.eval_points), 0.0, \
                0.0, {}
        elif method in ("bezier", "polychain"):
            raw, ge, seconds, info = _curve(config, method, variant, model, a, target, train,
                                            budget, jit, seed)
        else:
            raw, ge, seconds, info = _fip(config, model, a, target, train, budget, jit, seed)
        points = raw
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

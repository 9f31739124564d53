"""Connecting optima (application 3): paths between two trained networks, evaluated.

Endpoints: two `.keras` files of one architecture, or two networks trained
here from two seeds. The geodesic path walks from A toward B
(`tfgeo.connect.geodesic_path`); the straight line is evaluated at as many
points. With `align`, B is also permuted onto A by weight matching (same
function) and both paths are run again to the aligned B.

Per path: test accuracy and loss at every point, the loss barrier, Euclidean
and metric length. Each finished path is checkpointed, so an interrupted run
resumes with the next path.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
from absl import logging

from tfgeo import connect
from tfgeo import paths
from tfgeo import permutation
from tfgeo import weights as weights_lib

from . import config as config_lib
from . import data
from . import evaluation
from . import networks
from . import plotting
from . import results
from . import run_state

option = config_lib.option


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
    metric_batch: int = option(256, "Training inputs per metric batch.", lower=1)
    max_steps: int = option(3000, "Most geodesic steps per path.", lower=1, upper=10_000_000)
    tolerance: float = option(0.01, "Stop walking once ||w_B - w|| is below this fraction of "
                              "||w_B - w_A||, then step straight to B.", lower=0.0, upper=1.0,
                              upper_open=True)
    record_every: int = option(10, "Record (and evaluate) a point every this many steps.",
                               lower=1)
    align: bool = option(True, "Also connect A to B permuted onto A by weight matching.")


def check(config: ConnectConfig) -> None:
    config_lib.validate(config)
    networks.check_fits(config.network, config.data.dataset)


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


def _row(label, res):
    return {"path": label, "points": res["points"], "barrier": res["barrier"],
            "max_loss": res["max_loss"], "min_accuracy": res["min_accuracy"],
            "euclid_len": res["euclidean_length"], "metric_len": res["metric_length"]}


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
    series_acc = {k: (v["position"], v["accuracy"]) for k, v in out["paths"].items()}
    series_loss = {k: (v["position"], v["loss"]) for k, v in out["paths"].items()}
    ends = out["endpoints"]
    return results.Report(
        title, out, rows, list(rows[0]) if rows else [],
        f"endpoints test accuracy A {ends['accuracy']:.4f}, B {ends['accuracy_b']:.4f}; "
        "barrier = max loss - mean endpoint loss:",
        plots={"paths.png": lambda path: plotting.panel_plot(
            path, [("test accuracy", series_acc), ("test loss", series_loss)],
            xlabel="normalised position along the path (Euclidean arc length)", title=title)})


def run(config: ConnectConfig) -> results.Report:
    """Runs (or resumes) the paths between the endpoints; see the module docstring."""
    check(config)
    state = run_state.open_run(config)
    ds, train, _ = data.load_run_splits(config.data, config.run.seed)
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
    walk_data = data.to_dataset(train, config.metric_batch, shuffle=True, seed=config.run.seed,
                                drop_remainder=True, repeat=True)
    title = (f"{config.network.model} on {ds.name}: A (seed {config.seed_a}) to B "
             f"(seed {config.seed_b})")
    test_a = evaluation.evaluate_classifier(model_a, ds.test.x, ds.test.y)
    test_b = evaluation.evaluate_classifier(model_b, ds.test.x, ds.test.y)
    out = state.payload.get("out") or {
        "dataset": ds.name, "paths": {},
        "endpoints": {"accuracy": test_a["accuracy"], "loss": test_a["loss"],
                      "accuracy_b": test_b["accuracy"], "loss_b": test_b["loss"]}}
    g = config.geodesic
    for k, (name, target) in enumerate(targets.items()):
        if k < state.completed:
            continue
        weights_lib.set_trainable(model_a, a)
        logging.info("Geodesic path A -> %s ...", name)
        walk = connect.geodesic_path(
            model_a, target, walk_data, step_size=g.step_size, damping=g.damping,
            output_metric=g.output_metric, cg_max_iterations=g.cg_iterations,
            tolerance=config.tolerance, max_steps=config.max_steps,
            record_every=config.record_every, jit_compile=jit, verbose=config.run.verbose)
        if not walk["reached"]:
            logging.warning("The walk to %s stopped %.3g from it (of %.3g) after %d steps; its "
                            "last leg is a straight segment, sampled with %d points and "
                            "evaluated as part of the path.", name, walk["final_distance"],
                            walk["start_distance"], walk["steps"], walk["straight_leg_points"])
        lines = {"geodesic": walk["points"],
                 "straight": paths.straight_path(a, target, len(walk["points"]))}
        for kind, points in lines.items():
            label = f"{kind} A->{name}"
            res = evaluate_path(model_a, points, ds.test.x, ds.test.y, metric_inputs,
                                g.output_metric)
            if kind == "geodesic":
                res.update(steps=walk["steps"], reached=walk["reached"],
                           straight_leg_points=walk["straight_leg_points"],
                           seconds=walk["seconds"])
                save_points(state.artifact(f"points_{name.replace(' ', '_')}.npz"), points)
            out["paths"][label] = res
        state.save(k + 1, {"out": out}, {})
        results.write_report(config.run.output_dir, report(out, title),
                             config_lib.identity(config), echo=False)
    return report(out, title)

"""The demo walk: from a trained digits MLP toward its magnitude-pruned copy.

Trains a small MLP on the offline `digits` data, then walks a geodesic that
pulls the weights pruned at `sparsity` toward zero while the kept weights
move freely (metric on training inputs). Test accuracy along the walk is
compared with the straight line at the same distance from the target, and
the walk's end, projected onto the mask, with one-shot pruning.
"""
from __future__ import annotations

import dataclasses

import keras
from absl import logging

from tfgeo import classification
from tfgeo import distribute
from tfgeo import geodesic_model
from tfgeo import hidden_metric
from tfgeo import metric_specs
from tfgeo import losses
from tfgeo import objectives
from tfgeo.connect import paths
from tfgeo.sparsify import pruning
from tfgeo.models import registry

from . import config as config_lib
from . import data
from . import evaluation
from . import plotting
from . import results
from . import run_state
from . import tensorboard

option = config_lib.option


@dataclasses.dataclass
class WalkConfig:
    run: config_lib.RunConfig = config_lib.nested(config_lib.RunConfig, output_dir="runs/walk")
    geodesic: config_lib.GeodesicConfig = config_lib.nested(config_lib.GeodesicConfig)
    hidden: int = option(64, "Hidden width of the MLP.", lower=1, upper=100_000)
    train_epochs: int = option(40, "Epochs to train the starting network.", lower=1,
                               upper=100_000)
    sparsity: float = option(0.9, "Fraction of kernel weights pruned in the target (> 0: "
                             "at 0 there is nothing to walk toward).", lower=0.0,
                             lower_open=True, upper=1.0, upper_open=True)
    steps: int = option(300, "Geodesic steps.", lower=1, upper=10_000_000)
    metric_batch: int = option(256, "Training inputs per metric batch (at most the training "
                               "split).", lower=1, upper=1347)
    record_every: int = option(20, "Evaluate on the test set every this many steps.", lower=1)


def _check_metric(g, net) -> None:
    """Refuses a --metric or --preconditioner the walk cannot use, before training."""
    try:
        kind, layers = metric_specs.parse_metric(g.metric)
        if kind == "hidden":
            hidden_metric.representation_names(net, layers)
        metric_specs.check_preconditioner(g.preconditioner)
    except ValueError as e:
        raise config_lib.InputError(f"--metric={g.metric} --preconditioner={g.preconditioner}: "
                                    f"{e}") from None


def run(config: WalkConfig) -> results.Report:
    config_lib.validate(config)
    tensorboard.configure(config.run)
    keras.utils.set_random_seed(config.run.seed)
    ds = data.load_digits(seed=config.run.seed)
    net = registry.get("mlp", ds.input_shape, ds.num_classes, hidden=(config.hidden,))
    g = config.geodesic
    _check_metric(g, net)
    state = run_state.open_run(config)  # refuses a folder of a run with other flags
    net.compile("adam", losses.classification_loss(), metrics=["accuracy"])
    logging.info("Training the starting network (%d epochs)...", config.train_epochs)
    batches = data.to_dataset(ds.train, 64, shuffle=True, seed=config.run.seed,
                              drop_remainder=True, repeat=True)
    distribute.fit(net, batches, epochs=config.train_epochs,
                   steps_per_epoch=len(ds.train.y) // 64)
    start = net.get_weights()
    masks = pruning.magnitude_masks(start, config.sparsity)
    target = pruning.apply_masks(start, masks)
    # Pull only the pruned coordinates; the kept ones are free to compensate.
    objective = objectives.TowardTarget(target, keep=masks)
    walker = geodesic_model.GeodesicModel(
        net, objective, step_size=g.step_size, damping=g.damping, output_metric=g.output_metric,
        cg_max_iterations=g.cg_iterations, cg_tolerance=g.cg_tolerance, metric=g.metric,
        preconditioner=g.preconditioner)
    walker.compile(jit_compile=config_lib.jit_compile(config.run.compile, net),
                   loss=losses.classification_loss(), metrics=["accuracy"])
    start_distance = float(objective.distance(net))
    recorder = evaluation.PathRecorder(ds.test.x, ds.test.y, every=config.record_every)
    train = data.to_dataset(ds.train, config.metric_batch, shuffle=True, seed=config.run.seed,
                            drop_remainder=True, repeat=True)
    logging.info("Walking %d geodesic steps toward the %.0f%%-pruned copy...", config.steps,
                 100 * config.sparsity)
    geodesic_model.walk(walker, train, config.steps, log_every=config.steps,
                        callbacks=[recorder, *tensorboard.callbacks("walk")],
                        verbose=config.run.verbose)
    rows = []
    for rec in recorder.records:
        d = rec["distance_to_target"]
        straight = paths.straight_point_at_distance(start, target, d, start_distance)
        rows.append({
            "step": rec["step"], "distance_to_target": d,
            "geodesic_test_accuracy": rec["eval_accuracy"],
            "straight_test_accuracy": classification.evaluate_weights(
                net, straight, ds.test.x, ds.test.y)["accuracy"]})
    end_pruned = pruning.apply_masks(net.get_weights(), masks)
    summary = {
        "start_test_accuracy": rows[0]["geodesic_test_accuracy"],
        "one_shot_pruned_test_accuracy": classification.evaluate_weights(
            net, target, ds.test.x, ds.test.y)["accuracy"],
        "geodesic_then_pruned_test_accuracy": classification.evaluate_weights(
            net, end_pruned, ds.test.x, ds.test.y)["accuracy"],
        "sparsity": pruning.sparsity_of(end_pruned),
    }
    print(results.format_table(rows, list(rows[0])))
    results.save_model(net, state.artifact("walked.keras"))
    state.save(1, {"summary": summary}, {})  # the walk keeps no other state: a rerun redoes it
    distances = [r["distance_to_target"] for r in rows]
    return results.Report(
        f"digits MLP toward its {100 * config.sparsity:.0f}%-pruned copy",
        {"path": rows, "summary": summary, "records": recorder.records}, [summary],
        list(summary), "test accuracy",
        plots={"path.png": lambda path: plotting.line_plot(
            path, {"geodesic": (distances, [r["geodesic_test_accuracy"] for r in rows]),
                   "straight line": (distances, [r["straight_test_accuracy"] for r in rows])},
            xlabel="distance to pruned target", ylabel="test accuracy",
            title=f"digits MLP toward {100 * config.sparsity:.0f}% pruned copy", invert_x=True)})

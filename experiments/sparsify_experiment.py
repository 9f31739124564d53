"""Sparsification (application 1): methods compared stage by stage, in two tracks, resumably.

Stage by stage through a sparsity schedule, each method carries its own
network to the next stage's sparsity; its mask there is chosen from the
network it carries (so masks nest). Label-free methods see only unlabelled
calibration inputs (`calibration_size` training images) and the dense
start network:

  one_shot        magnitude-prune the dense start (no recovery)
  layerwise       layer-wise least-squares reconstruction of each layer's
                  pre-activation, fed the pruned network's own inputs
                  (`tfgeo.sparsify.layerwise`; mask: `layerwise_mask`)
  geodesic        Gauss-Newton projection onto the mask: geodesic steps on the
                  kept weights driven by the residual to the dense network's
                  function on the calibration inputs, re-linearised at every
                  step, kept only when the functional distance falls
                  (`tfgeo.sparsify.projection`; mask: `geodesic_mask`)
  geodesic_walk   the walk toward the pruned copy measured from the current
                  point (version 0.1's method), then exact projection
  distill         masked Adam on the projection's functional distance to the
                  dense network (`tfgeo.sparsify.distillation`; mask:
                  `distill_mask`): the first-order peer of the projection

one_shot, layerwise, geodesic and distill run through the library's call,
`tfgeo.sparsify.prune`, one stage at a time (this module keeps the data,
run state, tables and plots).

Label-using methods train on labelled batches for `label_budget`
gradient-equivalents per stage each:

  finetune           magnitude-prune, then masked Adam fine-tuning
  gradual            Zhu & Gupta polynomial-schedule pruning during fine-tuning
  geodesic_finetune  the geodesic projection, then masked fine-tuning for the
                     rest of the budget

Costs are counted by the fixed rule of `cost` (in gradients on batches of
`batch_size`), and wall seconds are recorded. Every stage's networks and rows
are checkpointed in a `RunState`, so an interrupted study resumes at the next
stage; each stage reseeds from (seed, stage, method), so a resumed study
equals an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import os
import time

import keras
import numpy as np
from absl import logging

from tfgeo import classification
from tfgeo import weights as weights_lib
from tfgeo.sparsify import distillation
from tfgeo.sparsify import geodesic_pruning as sparsification
from tfgeo.sparsify import projection
from tfgeo.sparsify import pruning
from tfgeo.sparsify import staged_pruning

from tfgeo import cost

from . import config as config_lib
from . import data
from . import networks
from . import plotting
from . import results
from . import run_state
from . import tensorboard
from . import training

LABEL_FREE = ("one_shot", "layerwise", "geodesic", "geodesic_walk", "distill")
LABEL_USING = ("finetune", "gradual", "geodesic_finetune")
METHODS = LABEL_FREE + LABEL_USING
MASKS = ("magnitude", "magnitude_dense", "wanda", "obs")
# Seeds follow the order methods were added in, so older methods keep theirs.
_METHOD_INDEX = {m: i for i, m in enumerate(
    ("one_shot", "layerwise", "geodesic", "geodesic_walk", "finetune", "gradual",
     "geodesic_finetune", "distill"))}
option = config_lib.option


#: prune's distillation defaults, which the runner's --distill_* flags take.
DISTILLATION = staged_pruning.Distillation()


@dataclasses.dataclass
class SparsifyConfig:
    run: config_lib.RunConfig = config_lib.nested(config_lib.RunConfig,
                                                  output_dir="runs/sparsify")
    data: config_lib.DataConfig = config_lib.nested(config_lib.DataConfig,
                                                    validation_fraction=0.1)
    network: config_lib.NetworkConfig = config_lib.nested(config_lib.NetworkConfig)
    train: config_lib.TrainConfig = config_lib.nested(config_lib.TrainConfig, prefix="train_")
    # The projection's solves: inexact Gauss-Newton (CG to 10% residual) is enough.
    geodesic: config_lib.GeodesicConfig = config_lib.nested(config_lib.GeodesicConfig,
                                                            cg_iterations=50, cg_tolerance=0.1)
    start_model: str | None = option(None, "A trained .keras model to sparsify (else one is "
                                     "trained with the --train_* flags on the training split).",
                                     path="file")
    sparsities: tuple = option((), "Explicit sparsity of each stage, increasing, in [0, 1); "
                               "overrides --final_sparsity/--stages/--initial_sparsity.",
                               element=float, lower=0.0, upper=1.0, upper_open=True, unique=True)
    final_sparsity: float = option(0.9, "Sparsity of the last stage.", lower=0.0, upper=1.0,
                                   upper_open=True)
    stages: int = option(3, "Number of stages (density shrinks geometrically).", lower=1,
                         upper=1000)
    initial_sparsity: float | None = option(None, "Sparsity of the first stage (default: the "
                                            "geometric schedule's first step).", lower=0.0,
                                            upper=1.0, upper_open=True)
    ranking: str = option("global", "Rank magnitudes over all prunable tensors (global) or per "
                          "tensor (layer).", choices=pruning.SCOPES)
    prune_biases: bool = option(False, "Also prune 1-d tensors (biases).")
    prune_last_layer: bool = option(True, "Also prune the output layer.")
    methods: tuple = option(("one_shot", "layerwise", "distill", "geodesic", "finetune",
                             "gradual", "geodesic_finetune"), "Methods to run.", element=str,
                            choices=METHODS, unique=True, nonempty=True)
    calibration_size: int = option(8192, "Unlabelled training inputs the label-free methods "
                                   "see (layerwise, geodesic).", lower=1, upper=10_000_000)
    layerwise_mask: str = option("magnitude_dense", "Mask choice of layerwise (magnitude: "
                                 "--ranking of the current |w|; magnitude_dense: |w| within each "
                                 "tensor, as many per tensor as a global ranking of the "
                                 "dense start drops; wanda: |w| ||x|| per unit; obs: "
                                 "SparseGPT-style saliency per layer; chosen on the "
                                 "validation split).", choices=MASKS)
    layerwise_bias: bool = option(True, "layerwise also refits the biases.")
    geodesic_mask: str = option("magnitude_dense", "Mask choice of the geodesic projection "
                                "(and of geodesic_finetune's; as --layerwise_mask; chosen "
                                "on the validation split).", choices=MASKS)
    distill_mask: str = option("magnitude_dense", "Mask choice of label-free distillation "
                               "(as --layerwise_mask).", choices=MASKS)
    distill_steps: int = option(DISTILLATION.steps,
                                "Masked Adam steps of label-free distillation in the last "
                                "stage (the others: --distill_intermediate_fraction of them; "
                                "batches of --batch_size calibration inputs).", lower=0,
                                upper=10_000_000)
    distill_intermediate_fraction: float = option(
        DISTILLATION.intermediate_fraction, "Every stage but the last distils this fraction of "
        "--distill_steps (1: as many as the last).", lower=0.0, upper=1e6)
    distill_learning_rate: tuple = option(
        staged_pruning.rate_candidates(DISTILLATION.learning_rate),
        "Adam rate of label-free distillation, or several candidates: then each stage's "
        "probes (--distill_probe_steps at each rate) keep the one nearest the dense "
        "network's function on held-out calibration inputs, no labels.",
        element=float, lower=0.0, lower_open=True, upper=10.0, nonempty=True, unique=True)
    distill_probe_steps: int = option(DISTILLATION.probe_steps or 0, "Steps of each rate "
                                      "probe (with several --distill_learning_rate; 0: an "
                                      "eighth of --distill_steps, at every stage).", lower=0,
                                      upper=10_000_000)
    distill_held_out_checks: int = option(
        DISTILLATION.held_out_checks, "Early stopping of label-free distillation without "
        "labels: descend on 7/8 of the calibration inputs, measure the distance to the dense "
        "network's function on the other 1/8 this many times per stage and keep the nearest "
        "weights (0: descend on all inputs for --distill_steps).", lower=0, upper=100_000)
    distill_start: str = option("mask", "Start of label-free distillation: mask, layerwise or "
                                "closer (as --projection_start).",
                                choices=("mask", "layerwise", "closer"))
    distill_schedule: str = option(DISTILLATION.schedule, "Rate schedule of label-free "
                                   "distillation within a stage: constant, cosine decay to 0, or "
                                   "restarts (cosine decay to 0 over each of "
                                   "--distill_held_out_checks cycles).",
                                   choices=distillation.SCHEDULES)
    projection_steps: int = option(10, "Gauss-Newton steps of the geodesic projection per "
                                   "stage.", lower=1, upper=10_000)
    projection_layers: str = option("logits", "Representations the geodesic projection keeps: "
                                    "logits (the outputs) or hidden (every layer's "
                                    "pre-activation and the outputs).",
                                    choices=("logits", "hidden"))
    projection_curvature_size: int = option(0, "Calibration inputs the projection's metric "
                                            "products see (the first ones; 0: all): a cheaper "
                                            "curvature, as in Hessian-free optimisation; the "
                                            "residual and the step rule still see every input.",
                                            lower=0, upper=10_000_000)
    projection_start: str = option("mask", "Start of the projection: mask (the masked "
                                   "network; chosen on the validation split), layerwise "
                                   "(its layer-wise reconstruction) or closer (both, keeping "
                                   "the result closer to the dense function on the "
                                   "calibration inputs; twice the cost).",
                                   choices=("mask", "layerwise", "closer"))
    logits_weight: float = option(1.0, "Weight of the outputs' term in the functional "
                                  "distance (hidden representations have weight 1).",
                                  lower=0.0, lower_open=True, upper=1e6)
    label_budget: int = option(2000, "Gradient-equivalents per stage of each label-using "
                               "method (batches of --batch_size).", lower=0)
    hybrid_calibration_size: int = option(1024, "Calibration inputs of geodesic_finetune's "
                                          "projection (its fine-tuning gets the rest of the "
                                          "budget).", lower=1, upper=10_000_000)
    hybrid_projection_steps: int = option(5, "Gauss-Newton steps of geodesic_finetune's "
                                          "projection.", lower=1, upper=10_000)
    hybrid_reference: str = option("dense", "The function geodesic_finetune's projection "
                                   "keeps: dense (the start network; chosen on the validation "
                                   "split) or current (its own fine-tuned network from the "
                                   "previous stage).",
                                   choices=("current", "dense"))
    batch_size: int = option(256, "Batch of the metric and of the baselines' steps.", lower=1,
                             upper=1_000_000)
    max_steps: int = option(500, "Most geodesic steps per stage.", lower=1, upper=10_000_000)
    tolerance: float = option(0.02, "A stage's walk stops once the pruned weights' norm is "
                              "below this fraction of its start value.", lower=0.0, upper=1.0,
                              upper_open=True)
    log_every: int = option(50, "Progress line every this many geodesic steps.", lower=1)
    geodesic_finetune_steps: int = option(0, "Masked fine-tuning steps after each geodesic "
                                          "stage (counted in its cost).", lower=0)
    finetune_learning_rate: float = option(3e-3, "Adam rate of the label-using methods' "
                                           "fine-tuning (chosen on the validation split).",
                                           lower=0.0, lower_open=True, upper=10.0)
    finetune_lr_schedule: str = option("constant", "Rate schedule of the label-using methods' "
                                       "Adam within a stage: constant, or cosine decay to 0.",
                                       choices=sparsification.LR_SCHEDULES)
    gradual_frequency: int = option(50, "Steps between mask updates in gradual pruning.",
                                    lower=1)
    gradual_fraction: float = option(0.75, "Fraction of a stage's steps over which gradual "
                                     "pruning raises the sparsity.", lower=0.0, lower_open=True,
                                     upper=1.0)


def schedule(config: SparsifyConfig) -> list[float]:
    """The stages' sparsities."""
    if config.sparsities:
        return [float(s) for s in config.sparsities]
    return pruning.stage_sparsities(config.final_sparsity, config.stages,
                                    config.initial_sparsity)


def check(config: SparsifyConfig) -> None:
    """Raises ValueError naming the flag for settings that cannot run together."""
    config_lib.validate(config)
    stages = list(config.sparsities)
    if any(b <= a for a, b in zip(stages, stages[1:])):
        raise config_lib.InputError(f"--sparsities must increase, got {','.join(map(str, stages))}.")
    if config.initial_sparsity is not None and config.initial_sparsity > config.final_sparsity:
        raise config_lib.InputError(f"--initial_sparsity={config.initial_sparsity} exceeds "
                         f"--final_sparsity={config.final_sparsity}.")
    networks.check_fits(config.network, config.data.dataset)


def _stage_seed(seed: int, stage: int, method: str) -> int:
    return int(seed) * 1000 + 10 * stage + _METHOD_INDEX[method]


def _evaluate(model, split_name, split, row):
    if split is None:
        return
    scores = classification.evaluate_classifier(model, split.x, split.y)
    row[f"{split_name}_accuracy"] = scores["accuracy"]
    row[f"{split_name}_loss"] = scores["loss"]


class _Stage:
    """What every method of one stage shares."""

    def __init__(self, config, model, dense, train, calibration, which, jit, k, sparsity,
                 previous):
        self.config, self.model, self.dense, self.train = config, model, dense, train
        self.calibration, self.which, self.jit = calibration, which, jit
        self.k, self.sparsity, self.previous = k, sparsity, previous
        self.walker = None

    def batches(self, method):
        seed = _stage_seed(self.config.run.seed, self.k, method)
        return data.to_dataset(self.train, self.config.batch_size, shuffle=True, seed=seed,
                               drop_remainder=True, repeat=True)

    def masks(self, choice, current):
        """The stage's masks chosen from the method's current network (so they nest).
        magnitude_dense drops in each tensor as many entries as a global ranking of
        the dense start would (the smallest |w| of the current network there)."""
        if choice in ("magnitude", "magnitude_dense"):
            return pruning.magnitude_masks(
                current, self.sparsity, self.which, self.config.ranking,
                allocation=self.dense if choice == "magnitude_dense" else None)
        with _weights(self.model, current):
            if choice == "wanda":
                return pruning.wanda_masks(self.model, self.calibration, self.sparsity, self.which)
            return pruning.obs_masks(self.model, self.calibration, self.sparsity, self.which)[0]

    def scale(self, examples):
        """Cost on `examples` inputs in gradients on batches of batch_size."""
        return examples / self.config.batch_size


class _weights:
    """Context: the model holds `weights` inside the block, its own again after."""

    def __init__(self, model, weights):
        self.model, self.weights = model, weights

    def __enter__(self):
        self.saved = weights_lib.get_trainable(self.model)
        weights_lib.set_trainable(self.model, self.weights)

    def __exit__(self, *exc):
        weights_lib.set_trainable(self.model, self.saved)


def _label_free(stage, current, row, method, mask, calibration=None, steps=None,
                reference=None):
    """One stage of a label-free method by the library's call (`tfgeo.sparsify.prune`),
    from the method's current network; returns the stage's masks."""
    config, g = stage.config, stage.config.geodesic
    weights_lib.set_trainable(stage.model, current)
    report = staged_pruning.prune(
        stage.model, stage.calibration if calibration is None else calibration, stage.sparsity,
        method=method, mask=mask, ranking=config.ranking, prune_biases=config.prune_biases,
        prune_last_layer=config.prune_last_layer, refit_bias=config.layerwise_bias,
        steps=config.projection_steps if steps is None else steps,
        start=config.distill_start if method == "distill" else config.projection_start,
        layers=config.projection_layers,
        output_metric=g.output_metric, logits_weight=config.logits_weight,
        solver=projection.Solver(damping=g.damping, max_iterations=g.cg_iterations,
                                 tolerance=g.cg_tolerance, preconditioner=g.preconditioner,
                                 jit_compile=stage.jit,
                                 curvature_size=config.projection_curvature_size),
        distillation_settings=staged_pruning.Distillation(
            config.distill_steps, config.batch_size,
            config.distill_learning_rate[0] if len(config.distill_learning_rate) == 1
            else tuple(config.distill_learning_rate), config.distill_schedule,
            config.distill_probe_steps or None, config.distill_held_out_checks,
            config.distill_intermediate_fraction).for_stage(stage.k, len(schedule(config))),
        reference=stage.dense if reference is None else reference, allocation=stage.dense,
        batch_size=config.batch_size, seed=None, verbose=0)
    result, = report.stages
    row.update({k: v for k, v in result.items()
                if k not in ("stage", "sparsity", "method", "measured_sparsity", "start")})
    if "start" in result:
        row["projection_start" if method == "geodesic" else "distill_start"] = result["start"]
    if result.get("start_distances"):
        logging.info("Projection from both starts: functional distance %s; kept the %s start.",
                     ", ".join(f"{s} {d:.4g}" for s, d in result["start_distances"].items()),
                     result["start"])
    return report.masks


def _one_shot(stage, current, row):
    # Magnitude-prunes the dense start at the stage's sparsity (no recovery).
    return _label_free(stage, current, row, "magnitude", "magnitude")


def _layerwise(stage, current, row):
    return _label_free(stage, current, row, "layerwise", stage.config.layerwise_mask)


def _distill(stage, current, row):
    return _label_free(stage, current, row, "distill", stage.config.distill_mask)


def project(stage, current, row, calibration=None, steps=None, reference=None):
    """The geodesic projection onto masks chosen from the method's current network,
    keeping the function of `reference` (default: the dense start); returns the masks.
    `projection_start=closer` projects from both starts and keeps the result closer
    to the reference's function on the calibration inputs (no labels needed)."""
    return _label_free(stage, current, row, "geodesic", stage.config.geodesic_mask,
                       calibration, steps, reference)


def _geodesic_walk(stage, current, row):
    config, g = stage.config, stage.config.geodesic
    masks = pruning.magnitude_masks(current, stage.sparsity, stage.which, config.ranking)
    weights_lib.set_trainable(stage.model, current)
    if stage.walker is None:
        stage.walker = sparsification.GeodesicPruner(
            stage.model, step_size=g.step_size, damping=g.damping, output_metric=g.output_metric,
            cg_max_iterations=g.cg_iterations, cg_tolerance=g.cg_tolerance,
            tolerance=config.tolerance, max_steps=config.max_steps, jit_compile=stage.jit,
            log_every=config.log_every, verbose=config.run.verbose)
    walk = stage.walker.prune(masks, stage.batches("geodesic_walk"))
    row.update({k: v for k, v in walk.items() if k != "seconds"})
    row["gradient_equivalents"] = cost.gradient_equivalents(
        metric_products=walk["metric_products"], quadratic_forms=walk["quadratic_forms"])
    return masks


def _finetune(stage, current, row, steps=None, masks=None):
    config = stage.config
    if masks is None:
        masks = stage.masks("magnitude", current)
        weights_lib.set_trainable(stage.model, pruning.apply_masks(current, masks))
    steps = config.label_budget if steps is None else steps
    res = sparsification.masked_finetune(
        stage.model, masks, stage.batches("finetune"), steps, config.finetune_learning_rate,
        lr_schedule=config.finetune_lr_schedule, jit_compile=stage.jit,
        callbacks=tensorboard.callbacks(f"stage{stage.k + 1}/finetune"))
    row.update(finetune_steps=res["steps"],
               gradient_equivalents=row.get("gradient_equivalents", 0.0) + res["gradients"])
    row.setdefault("steps", res["steps"])
    return masks


def _gradual(stage, current, row):
    config = stage.config
    weights_lib.set_trainable(stage.model, current)
    res = sparsification.gradual_prune(
        stage.model, stage.batches("gradual"), stage.previous, stage.sparsity,
        config.label_budget, config.finetune_learning_rate, frequency=config.gradual_frequency,
        lr_schedule=config.finetune_lr_schedule,
        pruning_fraction=config.gradual_fraction, which=stage.which, scope=config.ranking,
        jit_compile=stage.jit, callbacks=tensorboard.callbacks(f"stage{stage.k + 1}/gradual"))
    row.update(gradient_equivalents=res["gradients"], steps=res["steps"])
    return None


def _geodesic_finetune(stage, current, row):
    config = stage.config
    # The function to keep: the dense start, or the method's own fine-tuned network
    # (which compounds the projections' growth of the kept weights: worse, README).
    reference = current if config.hybrid_reference == "current" else stage.dense
    masks = project(stage, current, row, stage.calibration[:config.hybrid_calibration_size],
                    config.hybrid_projection_steps, reference=reference)
    left = max(int(stage.config.label_budget - row["gradient_equivalents"]), 0)
    row["over_budget"] = row["gradient_equivalents"] > stage.config.label_budget
    return _finetune(stage, current, row, steps=left, masks=masks)


_METHODS = {"one_shot": _one_shot, "layerwise": _layerwise, "distill": _distill,
            "geodesic": project,
            "geodesic_walk": _geodesic_walk, "finetune": _finetune, "gradual": _gradual,
            "geodesic_finetune": _geodesic_finetune}


def calibration_set(train: data.ArraySplit, size: int, seed: int) -> np.ndarray:
    """`size` unlabelled training inputs, drawn once per run (the same for every method)."""
    size = min(size, len(train.y))
    pick = np.sort(np.random.default_rng(seed + 7).permutation(len(train.y))[:size])
    return train.x[pick]


def run_study(model: keras.Model, stages, train: data.ArraySplit, validation, test,
              config: SparsifyConfig, state: run_state.RunState, jit_compile: bool,
              on_stage=None) -> list[dict]:
    """Runs the study from `model` (the dense start); returns one row per
    (stage, method) plus the dense start. `state.completed` stages are skipped.

    Each row: stage, sparsity (asked), measured_sparsity, method, track,
    {validation,test}_{accuracy,loss}, gradient_equivalents, steps, seconds,
    and the method's own counters.
    """
    methods = list(config.methods)
    dense_all = model.get_weights()
    dense = weights_lib.get_trainable(model)
    which = pruning.prunable_variables(model, config.prune_biases, config.prune_last_layer)
    weights = {m: run_state.unpack_weights(m, state.arrays) or dense_all for m in methods}
    calibration = calibration_set(train, config.calibration_size, config.run.seed)
    rows = list(state.payload.get("rows", []))
    if not rows:
        start = {"stage": 0, "sparsity": 0.0, "method": "dense", "gradient_equivalents": 0.0,
                 "measured_sparsity": pruning.sparsity_of(dense, which)}
        _evaluate(model, "validation", validation, start)
        _evaluate(model, "test", test, start)
        rows.append(start)
    for k, sparsity in enumerate(stages):
        if k < state.completed:
            continue
        stage = _Stage(config, model, dense, train, calibration, which, jit_compile, k,
                       sparsity, stages[k - 1] if k > 0 else 0.0)
        stage_rows = []
        for method in methods:
            keras.utils.set_random_seed(_stage_seed(config.run.seed, k, method))
            model.set_weights(weights[method])
            current = weights_lib.get_trainable(model)
            began = time.time()
            row = {"stage": k + 1, "sparsity": float(sparsity), "method": method,
                   "track": "label-free" if method in LABEL_FREE else "label-using"}
            masks = _METHODS[method](stage, current, row)
            row.setdefault("seconds", time.time() - began)
            _check_sparse(model, masks, which, sparsity, method, row, k)
            _evaluate(model, "validation", validation, row)
            _evaluate(model, "test", test, row)
            weights[method] = model.get_weights()
            stage_rows.append(row)
            logging.info("stage %d (%.1f%%) %s: %s accuracy %.4f, %.0f gradient-equivalents, "
                         "%.1f s", k + 1, 100 * sparsity, method,
                         "validation" if validation is not None else "test",
                         row.get("validation_accuracy", row.get("test_accuracy")),
                         row["gradient_equivalents"], row["seconds"])
        rows.extend(stage_rows)
        for key in ("validation_accuracy", "test_accuracy", "gradient_equivalents"):
            tensorboard.scalars(key, {r["method"]: r[key] for r in stage_rows if key in r}, k + 1)
        arrays = {}
        for m in methods:
            arrays.update(run_state.pack_weights(m, weights[m]))
        state.save(k + 1, {"rows": rows}, arrays)
        if on_stage is not None:
            on_stage(rows)
    model.set_weights(dense_all)
    return rows


def _check_sparse(model, masks, which, sparsity, method, row, k):
    final = weights_lib.get_trainable(model)
    zeros, total = staged_pruning.exact_zero_count(final, which)
    row["measured_sparsity"] = zeros / total
    # The stage's own mask where the method has one; gradual computes its
    # masks as it goes, so its check is the count only.
    row["mask_respected"] = bool(masks is None or all(
        np.all(np.asarray(w)[np.asarray(m) == 0] == 0) for w, m in zip(final, masks)))
    # Global masks drop exactly round(s n) weights; per-unit and per-layer ones
    # (wanda, obs) round per unit, so their own count is the one to meet.
    expected = (int(round(sparsity * total)) if masks is None else
                sum(int(np.sum(np.asarray(m) == 0)) for m, p in zip(masks, which) if p))
    row["mask_zeros"] = expected
    if zeros < expected or not row["mask_respected"]:
        raise AssertionError(f"{method} at stage {k + 1}: {zeros}/{total} zeros for sparsity "
                             f"{sparsity}; mask respected: {row['mask_respected']}.")


def final_weights(state: run_state.RunState, method: str):
    """The method's network after the last completed stage (None for one_shot)."""
    return run_state.unpack_weights(method, state.arrays) or None


def summary_table(rows, split: str = "test") -> tuple[list[dict], list[str]]:
    """One row per stage: sparsity, each method's accuracy on `split`, and each
    method's cost in gradient-equivalents (`<method>_ge`)."""
    table = {}
    for r in rows:
        if r["method"] == "dense":
            continue
        t = table.setdefault(r["stage"], {"sparsity": f"{100 * r['sparsity']:.1f}%"})
        t[r["method"]] = r.get(f"{split}_accuracy", float("nan"))
        if r["method"] not in ("one_shot",):
            t[f"{r['method']}_ge"] = int(round(r["gradient_equivalents"]))
    present = [m for m in METHODS if any(m in t for t in table.values())]
    columns = ["sparsity"] + present + [f"{m}_ge" for m in present
                                        if any(f"{m}_ge" in t for t in table.values())]
    return [table[k] for k in sorted(table)], columns


def plot(rows, path: str, title: str, split: str = "test") -> str:
    """Accuracy vs sparsity, one panel per track, the dense start at 0%."""
    dense = [r for r in rows if r["method"] == "dense"]
    panels = []
    for track, methods in (("label-free", LABEL_FREE), ("label-using", LABEL_USING)):
        series = {}
        for m in methods:
            pts = [(100 * r["sparsity"], r[f"{split}_accuracy"]) for r in rows
                   if r["method"] == m and f"{split}_accuracy" in r]
            if pts:
                if dense and f"{split}_accuracy" in dense[0]:
                    pts.insert(0, (0.0, dense[0][f"{split}_accuracy"]))
                series[m.replace("_", "-")] = ([p[0] for p in pts], [p[1] for p in pts])
        if series:
            panels.append((f"{split} accuracy ({track})", series))
    return plotting.panel_plot(path, panels, xlabel="sparsity (%)", title=title)


def report(rows, stages, title: str, split: str) -> results.Report:
    table, columns = summary_table(rows, split)
    dense = next((r for r in rows if r["method"] == "dense"), {})
    caption = (f"dense {split} accuracy {dense.get(f'{split}_accuracy', float('nan')):.4f}; "
               f"{split} accuracy per method, then each method's gradient-equivalents per "
               f"stage (label-free: {', '.join(LABEL_FREE)}; label-using: "
               f"{', '.join(LABEL_USING)}):")
    return results.Report(
        title, {"schedule": stages, "cost_rule": cost.COSTS, "rows": rows}, table, columns,
        caption, plots={"accuracy.png": lambda path: plot(rows, path, title, split)})


def run(config: SparsifyConfig) -> results.Report:
    """Runs (or resumes) a sparsification study; see the module docstring."""
    check(config)
    tensorboard.configure(config.run)
    stages = schedule(config)
    logging.info("Sparsity schedule: %s", ", ".join(f"{100 * s:g}%" for s in stages))
    state = run_state.open_run(config)
    if state.completed:
        logging.info("Resuming after stage %d of %d from %s", state.completed, len(stages),
                     config.run.output_dir)
    ds, train, validation = data.load_run_splits(config.data, config.run.seed)
    networks.check_metric(config.geodesic.metric, config.network, ds.input_shape,
                          ds.num_classes)
    network = (os.path.basename(config.start_model) if config.start_model
               else config.network.model)
    title = f"{network} on {ds.name}"
    model = training.start_network(config.start_model, config.network, config.train, ds, train,
                                   validation, state, config.run.seed,
                                   verbose=config.run.verbose)
    jit = config_lib.jit_compile(config.run.compile, model)
    split = "validation" if validation is not None else "test"

    def progress(rows):
        results.write_report(config.run.output_dir, report(rows, stages, title, split),
                             config_lib.identity(config), echo=False)
        table, columns = summary_table(rows, split)
        logging.info("After stage %d (%s accuracy):\n%s", rows[-1]["stage"], split,
                     results.format_table(table, columns))

    rows = run_study(model, stages, train, validation, ds.test, config, state, jit,
                     on_stage=progress)
    for method in config.methods:
        weights = final_weights(state, method)
        if weights is not None:
            model.set_weights(weights)
            results.save_model(model, state.artifact(f"{method}.keras"))
    return report(rows, stages, title, "test")

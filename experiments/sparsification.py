"""Sparsification (application 1): methods compared stage by stage at equal compute, resumably.

Stage by stage through a sparsity schedule, each method carries its own
network from the previous stage's sparsity to the next (one-shot always
prunes the dense start):

  one_shot   magnitude-prune the dense start (no recovery)
  finetune   magnitude-prune, then masked Adam fine-tuning
  gradual    Zhu & Gupta polynomial-schedule pruning during fine-tuning
  geodesic   geodesic walk toward the pruned copy, then exact projection

Per stage, the geodesic method's cost in gradient-equivalents (its
metric-vector products and quadratic forms counted by the fixed rule of
`cost`, plus any fine-tuning steps) sets the gradient-step budget of the
`finetune` and `gradual` baselines, unless `baseline_steps` fixes it. Every
stage's networks and rows are checkpointed in a `RunState`, so an
interrupted study resumes at the next stage; each stage reseeds from
(seed, stage, method), so a resumed study equals an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import os
import time

import keras
import numpy as np
from absl import logging

from tfgeo import pruning
from tfgeo import sparsification
from tfgeo import weights as weights_lib

from . import config as config_lib
from . import cost
from . import data
from . import evaluation
from . import networks
from . import plotting
from . import results
from . import run_state

METHODS = ("one_shot", "finetune", "gradual", "geodesic")
_METHOD_INDEX = {m: i for i, m in enumerate(METHODS)}
option = config_lib.option


@dataclasses.dataclass
class SparsifyConfig:
    run: config_lib.RunConfig = config_lib.nested(config_lib.RunConfig,
                                                  output_dir="runs/sparsify")
    data: config_lib.DataConfig = config_lib.nested(config_lib.DataConfig,
                                                    validation_fraction=0.1)
    network: config_lib.NetworkConfig = config_lib.nested(config_lib.NetworkConfig)
    train: config_lib.TrainConfig = config_lib.nested(config_lib.TrainConfig, prefix="train_")
    geodesic: config_lib.GeodesicConfig = config_lib.nested(config_lib.GeodesicConfig)
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
    methods: tuple = option(METHODS, "Methods to run.", element=str, choices=METHODS,
                            unique=True, nonempty=True)
    batch_size: int = option(256, "Batch of the metric and of the baselines' steps.", lower=1,
                             upper=1_000_000)
    max_steps: int = option(500, "Most geodesic steps per stage.", lower=1, upper=10_000_000)
    tolerance: float = option(0.02, "A stage's walk stops once the pruned weights' norm is "
                              "below this fraction of its start value.", lower=0.0, upper=1.0,
                              upper_open=True)
    log_every: int = option(50, "Progress line every this many geodesic steps.", lower=1)
    geodesic_finetune_steps: int = option(0, "Masked fine-tuning steps after each geodesic "
                                          "stage (counted in its cost).", lower=0)
    finetune_learning_rate: float = option(1e-4, "Adam rate of the fine-tuning baselines.",
                                           lower=0.0, lower_open=True, upper=10.0)
    baseline_steps: int = option(0, "Gradient steps per stage for the baselines; 0 matches the "
                                 "geodesic stage's cost.", lower=0)
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
    needs_budget = {"finetune", "gradual"} & set(config.methods)
    if needs_budget and "geodesic" not in config.methods and config.baseline_steps == 0:
        raise config_lib.InputError(f"--methods={','.join(config.methods)}: {sorted(needs_budget)} match "
                         "the geodesic method's cost; add geodesic or set --baseline_steps.")
    networks.check_fits(config.network, config.data.dataset)


def _stage_seed(seed: int, stage: int, method: str) -> int:
    return int(seed) * 1000 + 10 * stage + _METHOD_INDEX[method]


def _evaluate(model, split_name, split, row):
    if split is None:
        return
    scores = evaluation.evaluate_classifier(model, split.x, split.y)
    row[f"{split_name}_accuracy"] = scores["accuracy"]
    row[f"{split_name}_loss"] = scores["loss"]


def exact_zero_count(weights, which) -> tuple[int, int]:
    """(zeros, total) over the prunable tensors."""
    total = sum(int(np.size(w)) for w, p in zip(weights, which) if p)
    zeros = sum(int(np.sum(np.asarray(w) == 0)) for w, p in zip(weights, which) if p)
    return zeros, total


class _Stage:
    """What every method of one stage shares."""

    def __init__(self, config, train, which, jit, k, sparsity, previous):
        self.config, self.train, self.which, self.jit = config, train, which, jit
        self.k, self.sparsity, self.previous = k, sparsity, previous
        self.budget = config.baseline_steps
        self.pruner = None

    def batches(self, method):
        seed = _stage_seed(self.config.run.seed, self.k, method)
        return data.to_dataset(self.train, self.config.batch_size, shuffle=True, seed=seed,
                               drop_remainder=True, repeat=True)


def _one_shot(stage, model, masks, row):
    current = weights_lib.get_trainable(model)
    weights_lib.set_trainable(model, pruning.apply_masks(current, masks))
    row.update(gradient_equivalents=0.0, steps=0)


def _geodesic(stage, model, masks, row, pruner_cache):
    config = stage.config
    if pruner_cache.get("pruner") is None:
        g = config.geodesic
        pruner_cache["pruner"] = sparsification.GeodesicPruner(
            model, step_size=g.step_size, damping=g.damping, output_metric=g.output_metric,
            cg_max_iterations=g.cg_iterations, cg_tolerance=g.cg_tolerance,
            tolerance=config.tolerance, max_steps=config.max_steps, jit_compile=stage.jit,
            log_every=config.log_every, verbose=config.run.verbose)
    batches = stage.batches("geodesic")
    walk = pruner_cache["pruner"].prune(masks, batches)
    extra = sparsification.masked_finetune(
        model, masks, batches, config.geodesic_finetune_steps, config.finetune_learning_rate,
        jit_compile=stage.jit)
    row.update({k: v for k, v in walk.items() if k != "seconds"})
    row["finetune_steps"] = extra["steps"]
    row["gradient_equivalents"] = cost.gradient_equivalents(
        metric_products=walk["metric_products"], quadratic_forms=walk["quadratic_forms"],
        gradients=extra["gradients"])
    if not stage.budget:
        stage.budget = max(int(round(row["gradient_equivalents"])), 1)


def _finetune(stage, model, masks, row):
    _one_shot(stage, model, masks, row)
    res = sparsification.masked_finetune(model, masks, stage.batches("finetune"), stage.budget,
                                         stage.config.finetune_learning_rate,
                                         jit_compile=stage.jit)
    row.update(gradient_equivalents=res["gradients"], steps=res["steps"])


def _gradual(stage, model, masks, row):
    config = stage.config
    res = sparsification.gradual_prune(
        model, stage.batches("gradual"), stage.previous, stage.sparsity, stage.budget,
        config.finetune_learning_rate, frequency=config.gradual_frequency,
        pruning_fraction=config.gradual_fraction, which=stage.which, scope=config.ranking,
        jit_compile=stage.jit)
    row.update(gradient_equivalents=res["gradients"], steps=res["steps"])


def run_study(model: keras.Model, stages, train: data.ArraySplit, validation, test,
              config: SparsifyConfig, state: run_state.RunState, jit_compile: bool,
              on_stage=None) -> list[dict]:
    """Runs the study from `model` (the dense start); returns one row per
    (stage, method) plus the dense start. `state.completed` stages are skipped.

    Each row: stage, sparsity (asked), measured_sparsity, method,
    {validation,test}_{accuracy,loss}, gradient_equivalents, steps, seconds,
    and for geodesic the CG and distance counters.
    """
    methods = list(config.methods)
    dense = model.get_weights()
    which = pruning.prunable(weights_lib.get_trainable(model), config.prune_biases,
                             config.prune_last_layer)
    weights = {m: run_state.unpack_weights(m, state.arrays) or dense for m in methods}
    rows = list(state.payload.get("rows", []))
    if not rows:
        start = {"stage": 0, "sparsity": 0.0, "method": "dense", "gradient_equivalents": 0.0,
                 "measured_sparsity": pruning.sparsity_of(weights_lib.get_trainable(model),
                                                          which)}
        _evaluate(model, "validation", validation, start)
        _evaluate(model, "test", test, start)
        rows.append(start)
    pruner_cache = {}
    for k, sparsity in enumerate(stages):
        if k < state.completed:
            continue
        stage = _Stage(config, train, which, jit_compile, k, sparsity,
                       stages[k - 1] if k > 0 else 0.0)
        stage_rows = []
        for method in sorted(methods, key=lambda m: m != "geodesic"):  # geodesic sets the budget
            keras.utils.set_random_seed(_stage_seed(config.run.seed, k, method))
            model.set_weights(dense if method == "one_shot" else weights[method])
            began = time.time()
            row = {"stage": k + 1, "sparsity": float(sparsity), "method": method}
            masks = pruning.magnitude_masks(weights_lib.get_trainable(model), sparsity, which,
                                            config.ranking)
            if method == "geodesic":
                _geodesic(stage, model, masks, row, pruner_cache)
            else:
                {"one_shot": _one_shot, "finetune": _finetune, "gradual": _gradual}[method](
                    stage, model, masks, row)
            row["seconds"] = time.time() - began
            _check_sparse(model, masks, which, sparsity, method, row, k)
            _evaluate(model, "validation", validation, row)
            _evaluate(model, "test", test, row)
            if method != "one_shot":
                weights[method] = model.get_weights()
            stage_rows.append(row)
        rows.extend(sorted(stage_rows, key=lambda r: _METHOD_INDEX[r["method"]]))
        arrays = {}
        for m in methods:
            arrays.update(run_state.pack_weights(m, weights[m]))
        state.save(k + 1, {"rows": rows}, arrays)
        if on_stage is not None:
            on_stage(rows)
    model.set_weights(dense)
    return rows


def _check_sparse(model, masks, which, sparsity, method, row, k):
    final = weights_lib.get_trainable(model)
    zeros, total = exact_zero_count(final, which)
    row["measured_sparsity"] = zeros / total
    # The stage's own mask for one-shot/finetune/geodesic; gradual computes
    # its masks as it goes, so its check is the count only.
    row["mask_respected"] = bool(method == "gradual" or all(
        np.all(np.asarray(w)[np.asarray(m) == 0] == 0) for w, m in zip(final, masks)))
    if zeros < int(round(sparsity * total)) or not row["mask_respected"]:
        raise AssertionError(f"{method} at stage {k + 1}: {zeros}/{total} zeros for sparsity "
                             f"{sparsity}; mask respected: {row['mask_respected']}.")


def final_weights(state: run_state.RunState, method: str):
    """The method's network after the last completed stage (None for one_shot)."""
    return run_state.unpack_weights(method, state.arrays) or None


def summary_table(rows, split: str = "test") -> tuple[list[dict], list[str]]:
    """One row per stage: sparsity, each method's accuracy on `split`, and costs."""
    table = {}
    for r in rows:
        if r["method"] == "dense":
            continue
        t = table.setdefault(r["stage"], {"sparsity": f"{100 * r['sparsity']:.1f}%"})
        t[r["method"]] = r.get(f"{split}_accuracy", float("nan"))
        if r["method"] == "geodesic":
            t["geodesic_steps"] = r["steps"]
            t["grad_equiv"] = round(r["gradient_equivalents"], 1)
        elif r["method"] in ("finetune", "gradual"):
            t["baseline_steps"] = r["steps"]
    columns = ["sparsity"] + [m for m in METHODS if any(m in t for t in table.values())]
    columns += [c for c in ("geodesic_steps", "grad_equiv", "baseline_steps")
                if any(c in t for t in table.values())]
    return [table[k] for k in sorted(table)], columns


def plot(rows, path: str, title: str, split: str = "test") -> str:
    """Accuracy vs sparsity, one line per method, the dense start at 0%."""
    dense = [r for r in rows if r["method"] == "dense"]
    series = {}
    for m in METHODS:
        pts = [(100 * r["sparsity"], r[f"{split}_accuracy"]) for r in rows
               if r["method"] == m and f"{split}_accuracy" in r]
        if pts:
            if dense and f"{split}_accuracy" in dense[0]:
                pts.insert(0, (0.0, dense[0][f"{split}_accuracy"]))
            series[m.replace("_", "-")] = ([p[0] for p in pts], [p[1] for p in pts])
    return plotting.line_plot(path, series, xlabel="sparsity (%)",
                              ylabel=f"{split} accuracy", title=title)


def report(rows, stages, title: str, split: str) -> results.Report:
    table, columns = summary_table(rows, split)
    dense = next((r for r in rows if r["method"] == "dense"), {})
    caption = (f"dense {split} accuracy {dense.get(f'{split}_accuracy', float('nan')):.4f}; "
               f"{split} accuracy per method (baselines get the geodesic stage's "
               "gradient-equivalents):")
    return results.Report(
        title, {"schedule": stages, "cost_rule": cost.COSTS, "rows": rows}, table, columns,
        caption, plots={"accuracy.png": lambda path: plot(rows, path, title, split)})


def run(config: SparsifyConfig) -> results.Report:
    """Runs (or resumes) a sparsification study; see the module docstring."""
    check(config)
    stages = schedule(config)
    logging.info("Sparsity schedule: %s", ", ".join(f"{100 * s:g}%" for s in stages))
    state = run_state.open_run(config)
    if state.completed:
        logging.info("Resuming after stage %d of %d from %s", state.completed, len(stages),
                     config.run.output_dir)
    ds, train, validation = data.load_run_splits(config.data, config.run.seed)
    title = f"{config.network.model} on {ds.name}"
    model = networks.start_network(config.start_model, config.network, config.train, ds, train,
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

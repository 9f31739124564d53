"""Sparsification methods compared stage by stage at equal compute, resumably.

Each method carries its own network through the stages (one-shot always
prunes the dense start). Per stage, the geodesic method's cost in
gradient-equivalents (metric-vector products and quadratic forms times
their measured cost, plus any fine-tuning steps) sets the gradient-step
budget of the `finetune` and `gradual` baselines, unless a fixed
`baseline_steps` is given. Every stage's networks and rows are checkpointed
in a `RunState`, so an interrupted study resumes at the next stage; each
stage reseeds from (seed, stage), so a resumed study equals an uninterrupted
one.
"""
from __future__ import annotations

import dataclasses
import time

import keras
import numpy as np

from tfgeo import cost as cost_lib
from tfgeo import data
from tfgeo import paths
from tfgeo import plotting
from tfgeo import pruning
from tfgeo import run_state
from tfgeo import sparsification

METHODS = ("one_shot", "finetune", "gradual", "geodesic")
_METHOD_INDEX = {m: i for i, m in enumerate(METHODS)}


@dataclasses.dataclass
class StudyConfig:
    batch_size: int = 256
    prune_biases: bool = False
    prune_last_layer: bool = True
    scope: str = "global"
    # GeodesicPruner options.
    step_size: float = 0.05
    damping: float = 1e-3
    output_metric: str = "fisher"
    cg_max_iterations: int = 10
    tolerance: float = 0.02
    max_steps: int = 500
    log_every: int = 50
    geodesic_finetune_steps: int = 0
    # Baselines.
    finetune_learning_rate: float = 1e-4
    baseline_steps: int = 0  # 0: match the geodesic stage's cost
    gradual_frequency: int = 50
    gradual_fraction: float = 0.75
    jit_compile: bool = True
    seed: int = 0


def _endless(split: data.ArraySplit, batch_size: int, seed: int):
    return data.to_dataset(split, batch_size, shuffle=True, seed=seed, drop_remainder=True,
                           repeat=True)


def _stage_seed(seed: int, stage: int, method: str) -> int:
    return int(seed) * 1000 + 10 * stage + _METHOD_INDEX[method]


def _evaluate(model, split_name, split, row):
    if split is None:
        return
    scores = paths.evaluate_classifier(model, split.x, split.y)
    row[f"{split_name}_accuracy"] = scores["accuracy"]
    row[f"{split_name}_loss"] = scores["loss"]


def exact_zero_count(weights, which) -> tuple[int, int]:
    """(zeros, total) over the prunable tensors."""
    total = sum(int(np.size(w)) for w, p in zip(weights, which) if p)
    zeros = sum(int(np.sum(np.asarray(w) == 0)) for w, p in zip(weights, which) if p)
    return zeros, total


def run(model: keras.Model, stages, methods, train: data.ArraySplit, validation, test,
        config: StudyConfig, state: run_state.RunState, ratios: cost_lib.CostRatios,
        on_stage=None) -> list[dict]:
    """Runs the study; returns one row per (stage, method) plus the dense start.

    Args:
      model: the trained dense network (its weights are the start).
      stages: increasing sparsities in [0, 1).
      methods: subset of METHODS.
      train: split for the metric and the baselines' gradients; validation
        (may be None) and test are only evaluated.
      state: checkpoint; `state.completed` stages are skipped.
      ratios: gradient-equivalent costs of g v and <v, g v>.
      on_stage: called as on_stage(rows) after each stage is saved.
    Each row: stage, sparsity (asked), measured_sparsity, method,
    {validation,test}_{accuracy,loss}, gradient_equivalents, steps, seconds,
    and for geodesic the CG and distance counters.
    """
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"Unknown methods {sorted(unknown)}; expected some of {METHODS}.")
    if list(stages) != sorted(stages) or any(not 0 <= s < 1 for s in stages):
        raise ValueError(f"stages must be increasing sparsities in [0, 1), got {stages}.")
    if ({"finetune", "gradual"} & set(methods) and "geodesic" not in methods
            and config.baseline_steps == 0):
        raise ValueError("finetune/gradual match the geodesic cost: run geodesic too or set "
                         "baseline_steps.")
    dense = model.get_weights()
    dense_trainable = sparsification.trainable_weights(model)
    which = pruning.prunable(dense_trainable, config.prune_biases, config.prune_last_layer)
    weights = {m: run_state.unpack_weights(m, state.arrays) or dense for m in methods}
    rows = list(state.payload.get("rows", []))
    if not rows:
        start = {"stage": 0, "sparsity": 0.0, "method": "dense", "gradient_equivalents": 0.0,
                 "measured_sparsity": pruning.sparsity_of(dense_trainable, which)}
        _evaluate(model, "validation", validation, start)
        _evaluate(model, "test", test, start)
        rows.append(start)
    pruner = None
    for k, sparsity in enumerate(stages):
        if k < state.completed:
            continue
        previous = stages[k - 1] if k > 0 else 0.0
        budget = config.baseline_steps
        stage_rows = []
        for method in sorted(methods, key=lambda m: m != "geodesic"):  # geodesic sets the budget
            keras.utils.set_random_seed(_stage_seed(config.seed, k, method))
            batches = _endless(train, config.batch_size, _stage_seed(config.seed, k, method))
            model.set_weights(dense if method == "one_shot" else weights[method])
            began = time.time()
            row = {"stage": k + 1, "sparsity": float(sparsity), "method": method}
            current = sparsification.trainable_weights(model)
            masks = pruning.magnitude_masks(current, sparsity, which, config.scope)
            if method == "one_shot":
                sparsification.set_trainable_weights(model, pruning.apply_masks(current, masks))
                row.update(gradient_equivalents=0.0, steps=0)
            elif method == "geodesic":
                if pruner is None:
                    pruner = sparsification.GeodesicPruner(
                        model, step_size=config.step_size, damping=config.damping,
                        output_metric=config.output_metric,
                        cg_max_iterations=config.cg_max_iterations, tolerance=config.tolerance,
                        max_steps=config.max_steps, jit_compile=config.jit_compile,
                        log_every=config.log_every)
                walk = pruner.prune(masks, batches)
                extra = sparsification.masked_finetune(
                    model, masks, batches, config.geodesic_finetune_steps,
                    config.finetune_learning_rate, jit_compile=config.jit_compile)
                row.update({k2: v for k2, v in walk.items() if k2 != "seconds"})
                row["finetune_steps"] = extra["steps"]
                row["gradient_equivalents"] = ratios.gradient_equivalents(
                    walk["metric_products"], walk["quadratic_forms"], extra["gradients"])
                if not budget:
                    budget = max(int(round(row["gradient_equivalents"])), 1)
            elif method == "finetune":
                sparsification.set_trainable_weights(model, pruning.apply_masks(current, masks))
                res = sparsification.masked_finetune(
                    model, masks, batches, budget, config.finetune_learning_rate,
                    jit_compile=config.jit_compile)
                row.update(gradient_equivalents=res["gradients"], steps=res["steps"])
            else:  # gradual
                res = sparsification.gradual_prune(
                    model, batches, previous, sparsity, budget, config.finetune_learning_rate,
                    frequency=config.gradual_frequency, pruning_fraction=config.gradual_fraction,
                    which=which, scope=config.scope, jit_compile=config.jit_compile)
                row.update(gradient_equivalents=res["gradients"], steps=res["steps"])
            row["seconds"] = time.time() - began
            final = sparsification.trainable_weights(model)
            zeros, total = exact_zero_count(final, which)
            row["measured_sparsity"] = zeros / total
            # The stage's own mask for one-shot/finetune/geodesic; gradual
            # computes its masks as it goes, so its check is the count only.
            row["mask_respected"] = bool(method == "gradual" or all(
                np.all(np.asarray(w)[np.asarray(m) == 0] == 0) for w, m in zip(final, masks)))
            if zeros < int(round(sparsity * total)) or not row["mask_respected"]:
                raise AssertionError(f"{method} at stage {k + 1}: {zeros}/{total} zeros for "
                                     f"sparsity {sparsity}; mask respected: {row['mask_respected']}.")
            _evaluate(model, "validation", validation, row)
            _evaluate(model, "test", test, row)
            if method != "one_shot":
                weights[method] = model.get_weights()
            stage_rows.append(row)
        rows.extend(sorted(stage_rows, key=lambda r: _METHOD_INDEX[r["method"]]))
        arrays = {}
        for m in methods:
            arrays.update(run_state.pack_weights(m, weights[m]))
        state.save(k + 1, {"rows": rows, "cost": ratios._asdict()}, arrays)
        if on_stage is not None:
            on_stage(rows)
    model.set_weights(dense)
    return rows


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

"""`prune`: label-free pruning of a trained Keras model, stage by stage.

    report = tfgeo.sparsify.prune(model, x_unlabelled, sparsity=[0.9, 0.95, 0.98])
    print(report)

The recipe chosen on validation splits (see the sparsification docs page):
through an increasing schedule of sparsities, each stage chooses its masks
from the network the previous stage left (so masks nest), the per-tensor
counts of `magnitude_dense` from a global ranking of the reference network,
and then recovers the reference's function on the unlabelled inputs:

  distill     (the default) masked Adam on the functional distance D to the
              reference's outputs (`distillation.distill`): on the label-free
              frontier (accuracy against compute, tuned on validation) it
              dominates the projection at every budget;
  geodesic    the Gauss-Newton projection onto the mask
              (`projection.gauss_newton_projection`): damped Gauss-Newton
              steps on the kept weights driving the same D to its minimum,
              re-linearised each step;
  layerwise   layer-wise least-squares reconstruction (`layerwise.reconstruct`);
  magnitude   one-shot magnitude pruning of the reference (no recovery).

The model is pruned in place, as `fit` trains in place. Compute is counted by
`tfgeo.cost` in gradient-equivalents on batches of `batch_size`.
"""
from __future__ import annotations

import math
import numbers
import time
from typing import Callable, NamedTuple, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfgeo import model_checks
from tfgeo import batching
from tfgeo import cost
from tfgeo import output_metrics
from tfgeo import representations
from tfgeo import weights as weights_lib
from tfgeo.sparsify import distillation
from tfgeo.sparsify import layerwise
from tfgeo.sparsify import projection
from tfgeo.sparsify import pruning

METHODS = ("geodesic", "layerwise", "distill", "magnitude")
MASKS = ("magnitude", "magnitude_dense", "wanda", "obs")
STARTS = ("mask", "layerwise", "distill", "closer")

#: The projection's solves by default: inexact Gauss-Newton (CG to a 10% residual).
DEFAULT_SOLVER = projection.Solver(damping=1e-3, max_iterations=50, tolerance=0.1)


class Distillation(NamedTuple):
    """Settings of `method="distill"` (`distillation.distill`); the defaults are
    the label-free frontiers' choice on validation: 4,000 Adam steps at the
    last stage and 1,000 at each stage before it, at a rate each stage
    chooses between 1e-2 and 3e-3 without labels.

    With a sequence of candidate rates as `learning_rate`, each stage first
    runs `probe_steps` steps (default: an eighth of the last stage's steps)
    at each candidate on 7/8 of the inputs, keeps the rate whose result is
    nearest the reference's function on the other 1/8, and distils at it on
    all inputs; the probes are counted in the stage's gradient-equivalents
    (+25% of the last stage's steps by default). No fixed rate is best
    everywhere: 1e-2 is 0.2-0.9 points better than 3e-3 at 98% on
    LeNet-300-100 and LeNet-5 but 17 points worse on a VGG11 without batch
    norm at 80% (3e-2 collapses it to chance); the probes chose 1e-2 on the
    MNIST networks and 3e-3 on that VGG11 until 95%, as good as the better
    fixed rate at every stage (sparsification docs, "The distillation rate
    across networks"). A single number skips the probes.

    With `held_out_checks` k > 0 the stage's distillation stops early without
    labels: it descends on the probes' 7/8 of the inputs, measures D on
    their held-out 1/8 at the start and k times along the way, and keeps the
    weights nearest the reference there (`distillation.distill`'s
    `held_out`); with `schedule="restarts"` each check ends a cosine cycle.
    0 (the default) descends on all the inputs for `steps`: on the VGG11
    stopping early gained 1.7-3.3 points at 98% but lost up to 0.3 at
    90-95%, and it lost 0.1-0.6 at 98% on LeNet-5 and LeNet-300-100
    (sparsification docs, "Stopping early without labels").

    Every stage but the last distils `intermediate_fraction` of `steps`
    (rounded), the last all of them. Why a quarter: a network distilled less
    on the way prunes better at the next stage. Through 80 -> 98% on a VGG11,
    1,000 steps at 80-95% then 4,000 at 98% reach 69.06% validation
    accuracy, 4,000 at every stage 66.54% (and 4,000 at 80-95% then 1,000
    at 98% 65.82%), at 57% of the GE; a call ending at 95% is 1.2 points
    below 4,000 at every stage there. On LeNet-5 and LeNet-300-100 (three
    seeds) it ties 4,000 at every stage at 95-98% for 62-71% of the GE
    (sparsification docs, "Short stages on the way, a long last stage").

    `steps` may also be a sequence, one count per stage of `prune`'s
    schedule (e.g. (1000, 1000, 4000); then `intermediate_fraction` is
    ignored). Either way the probes take an eighth of the last stage's count
    at every stage, unless `probe_steps` is given."""
    steps: int | tuple = 4000
    batch_size: int = 256
    learning_rate: float | tuple = (1e-2, 3e-3)
    schedule: str = "cosine"
    probe_steps: int | None = None
    held_out_checks: int = 0
    intermediate_fraction: float = 0.25

    def stage_steps(self, stages: int) -> list[int]:
        """The step count of each stage of a schedule of `stages` stages."""
        if not isinstance(self.steps, numbers.Integral):
            return [int(s) for s in self.steps]
        between = int(round(self.intermediate_fraction * int(self.steps)))
        return [between] * (stages - 1) + [int(self.steps)]

    @property
    def probe_length(self) -> int:
        """Steps of each rate probe: `probe_steps`, or an eighth of the last
        stage's steps (at least one)."""
        if self.probe_steps is not None:
            return self.probe_steps
        last = self.steps if isinstance(self.steps, numbers.Integral) else self.steps[-1]
        return max(1, int(last) // 8)

    def for_stage(self, k: int, stages: int) -> "Distillation":
        """Stage k's (0-based) settings in a schedule of `stages`: its own step
        count as `steps`, the probes' length fixed."""
        return self._replace(steps=self.stage_steps(stages)[k], probe_steps=self.probe_length,
                             intermediate_fraction=1.0)


#: The share of the calibration inputs the rate probes hold out to compare on.
PROBE_HELD_OUT = 0.125


def probe_held_out(n: int) -> int:
    """How many of `n` calibration inputs the rate probes hold out: about
    `PROBE_HELD_OUT` of them, in multiples of 8 beyond 16 inputs. Under a
    strategy of R replicas (R = 1, 2, 4 or 8) the probes then fit on a
    multiple of R whenever n is one, as distillation's batch must be when
    the inputs are fewer than it; and the split is the same on any number of
    replicas, so a replicated call equals a single-device one."""
    if n > 16:
        return min(8 * max(1, int(round(PROBE_HELD_OUT * n / 8))), n - 8)
    return min(max(1, int(round(PROBE_HELD_OUT * n))), n - 1)


class PruneReport:
    """What `prune` did: one dict per stage and the last stage's masks.

    Each stage: stage (1-based), sparsity (asked), measured_sparsity (exact
    zeros over prunable entries), method, functional_distance (D to the
    reference on the inputs), gradient_equivalents, seconds, and the method's
    own counters (steps, cg_iterations, start, ...).
    """

    def __init__(self, stages: list[dict], masks: list[np.ndarray], which: list[bool]):
        self.stages, self.masks, self.which = stages, masks, which

    @property
    def gradient_equivalents(self) -> float:
        return float(sum(s["gradient_equivalents"] for s in self.stages))

    def __str__(self) -> str:
        head = f"{'stage':>5}  {'sparsity':>8}  {'measured':>8}  {'method':<10} " \
               f"{'distance':>10}  {'GE':>8}  {'seconds':>8}"
        lines = [head] + [
            f"{s['stage']:>5}  {100 * s['sparsity']:>7.2f}%  {100 * s['measured_sparsity']:>7.2f}%"
            f"  {s['method']:<10} {s['functional_distance']:>10.4g}  "
            f"{s['gradient_equivalents']:>8.0f}  {s['seconds']:>8.1f}" for s in self.stages]
        return "\n".join(lines)

    __repr__ = __str__


def prune(model: keras.Model, inputs, sparsity: float | Sequence[float], *,
          method: str = "distill", mask: str = "magnitude_dense", steps: int = 10,
          start: str = "mask", layers: str = "logits", output_metric: str = "fisher",
          logits_weight: float = 1.0, solver: projection.Solver = DEFAULT_SOLVER,
          distillation_settings: Distillation = Distillation(), ranking: str = "global",
          prune_biases: bool = False, prune_last_layer: bool = True, refit_bias: bool = True,
          reference=None, allocation=None, batch_size: int = 256, seed: int | None = 0,
          verbose: int = 1, on_stage: Callable[[dict], None] | None = None) -> PruneReport:
    """Prunes `model` in place to `sparsity` without labels; returns a `PruneReport`.

    Args:
      model: a built Keras model whose outputs are logits (a final softmax is
        refused: its Fisher would be wrong).
      inputs: unlabelled calibration inputs, an array [N, ...] (or a dict of
        arrays) that the model accepts; every method sees all N. More is
        better for distillation, whose cost per step does not grow with N
        (layer-wise's and the projection's do, in proportion).
      sparsity: the final sparsity in [0, 1) (one stage), or the increasing
        sparsities of successive stages, e.g. [0.9, 0.95, 0.98].
      method: "geodesic", "layerwise", "distill" or "magnitude" (module docstring).
      mask: how each stage chooses its mask from the current network:
        "magnitude_dense" (per tensor, as many as a global ranking of the
        reference drops), "magnitude" (`ranking` over |w|), "wanda" or "obs"
        (calibration-based). "magnitude" method prunes the reference itself.
      steps: Gauss-Newton steps per stage (geodesic).
      start: where the projection (or distillation) starts: "mask" (the masked
        network), "layerwise" (its layer-wise reconstruction), "distill"
        (geodesic only: `distillation_settings`' masked Adam from the masked
        network, then the projection; the cost of both) or "closer" (mask and
        layerwise, keeping the one nearer the reference's function on
        `inputs`; the cost of both).
      layers: "logits" (D on the outputs) or "hidden" (every weighted layer's
        pre-activation too); geodesic and distill.
      output_metric: the divergence on the outputs ("fisher": KL; see
        `tfgeo.output_metrics.NAMES`).
      solver: the projection's CG settings (`projection.Solver`).
      distillation_settings: `Distillation` (steps, batch, rate, schedule).
      ranking, prune_biases, prune_last_layer: which entries may be pruned and
        how `mask="magnitude"` ranks them (`pruning.magnitude_masks`).
      reference: trainable weights whose function to keep (default: the
        model's at the call, i.e. the dense network).
      allocation: trainable weights whose global ranking sets magnitude_dense's
        per-tensor counts (default: `reference`).
      batch_size: the batch of the gradient-equivalents' unit.
      seed: seeds each stage (`keras.utils.set_random_seed(seed + stage)`),
        so a call is reproducible; None leaves the global seed alone.
      verbose: 0 silent, 1 a line per stage, 2 also a line per Gauss-Newton step.
      on_stage: called with each stage's dict once the stage is done (e.g. to
        checkpoint `model`).

    Raises:
      ValueError: on any bad argument, naming it.
    """
    stages = _check(model, inputs, sparsity, method, mask, start, layers, output_metric, steps,
                    batch_size, verbose)
    _check_distillation(distillation_settings, method, start, len(stages))
    reference = weights_lib.get_trainable(model) if reference is None else [
        np.asarray(w) for w in reference]
    weights_lib.check_vector(model, reference)
    allocation = reference if allocation is None else [np.asarray(w) for w in allocation]
    which = pruning.prunable_variables(model, prune_biases, prune_last_layer)
    names = None if layers == "logits" else "hidden"
    n = batching.num_examples(inputs)
    rows, masks = [], None
    for k, s in enumerate(stages):
        if seed is not None:
            keras.utils.set_random_seed(int(seed) + k)
        began = time.time()
        current = weights_lib.get_trainable(model)
        row = {"stage": k + 1, "sparsity": float(s), "method": method}
        if method == "magnitude":
            masks = pruning.magnitude_masks(reference, s, which, ranking,
                                            allocation=allocation if mask == "magnitude_dense"
                                            else None)
            weights_lib.set_trainable(model, pruning.apply_masks(reference, masks))
            row.update(gradient_equivalents=0.0, steps=0)
        else:
            masks = _masks(model, mask, current, s, which, ranking, allocation, inputs)
            if method == "layerwise":
                weights_lib.set_trainable(model, reference)
                layerwise.reconstruct(model, masks, inputs, refit_bias=refit_bias, apply=True)
                row.update(gradient_equivalents=reconstruction_cost(model, n, batch_size),
                           steps=0)
            else:
                distill = distillation_settings
                if method == "distill" or start == "distill":  # else unchecked, unused
                    distill = distill.for_stage(k, len(stages))
                row.update(_recover(method, model, masks, inputs, reference, current, start,
                                    steps, names, output_metric, logits_weight, solver,
                                    distill, refit_bias, batch_size, verbose,
                                    0 if seed is None else int(seed) + k))
        row["seconds"] = time.time() - began
        row["measured_sparsity"] = _verify(model, masks, which, method, k)
        _warn_emptied(model, masks, which, k)
        if "functional_distance" not in row:
            row["functional_distance"] = functional_distance(
                model, reference, inputs, names, output_metric, logits_weight, solver.chunk_size)
        rows.append(row)
        if verbose:
            print(f"Stage {k + 1}/{len(stages)}: sparsity {100 * s:.2f}% ({method}), functional "
                  f"distance {row['functional_distance']:.4g}, "
                  f"{row['gradient_equivalents']:.0f} gradient-equivalents, "
                  f"{row['seconds']:.1f} s" + (f", rate {row['learning_rate']:g} chosen by "
                                               f"the probes" if "learning_rate" in row else "")
                  + (f", kept step {row['best_step']} of {row['steps']} (held-out distance "
                     f"{row['held_out_distance']:.4g})" if "best_step" in row else ""),
                  flush=True)
        if on_stage is not None:
            on_stage(row)
    return PruneReport(rows, masks, which)


#: A pruned tensor keeping less than this fraction of its entries is reported.
NEARLY_EMPTY = 0.02


def _warn_emptied(model, masks, which, k) -> list[str]:
    """Names (and logs once per stage) the pruned tensors that keep less than
    `NEARLY_EMPTY` of their entries: a global ranking can empty one layer of a
    user's network (a BatchNorm CNN's convolutions, a depthwise kernel), which
    no recovery can undo; `mask="magnitude_dense"` allocates per tensor from
    the dense start."""
    emptied = [f"{v.path} ({100 * float(np.mean(m)):.2g}% kept)"
               for v, m, w in zip(model.trainable_variables, masks, which)
               if w and np.mean(m) < NEARLY_EMPTY]
    if emptied:
        logging.warning("Stage %d leaves %s nearly empty.", k + 1, ", ".join(emptied))
    return emptied


def functional_distance(model: keras.Model, reference, inputs, layers=None,
                        output_metric: str = "fisher", logits_weight: float = 1.0,
                        chunk_size: int = 512) -> float:
    """D between the model's current function and that of `reference` (trainable
    weights) on `inputs` (the quantity `projection` and `distillation` minimise)."""
    current = weights_lib.get_trainable(model)
    weights_lib.set_trainable(model, reference)
    try:
        ref = projection.reference(model, inputs, layers, logits_weight, chunk_size)
    finally:
        weights_lib.set_trainable(model, current)
    run = projection.representation_fn(model, ref.names)
    metric = output_metrics.get(output_metric)
    return float(batching.chunked_mean(
        lambda c: projection.functional_distance(ref, metric, run(c["x"]), c["ref"]),
        {"x": inputs, "ref": [tf.constant(v) for v in ref.values]}, chunk_size))


def reconstruction_cost(model: keras.Model, examples: int, batch_size: int) -> float:
    """Gradient-equivalents of a layer-wise reconstruction on `examples` inputs: one
    forward pass per weighted layer (and one for the dense targets)."""
    layers = len(representations.weighted_layers(model))
    return cost.gradient_equivalents(forwards=layers + 1, batch=examples,
                                     reference_batch=batch_size)


def projection_cost(report: dict, batch_size: int) -> float:
    """Gradient-equivalents of a `gauss_newton_projection` report: products and
    quadratic forms on its curvature inputs, gradients, K-FAC factors and
    forward passes on all of its inputs."""
    n, m = report["examples"], report["curvature_examples"]
    return cost.gradient_equivalents(
        metric_products=report["products"], quadratic_forms=report["quadratic_forms"],
        batch=m, reference_batch=batch_size) + cost.gradient_equivalents(
        gradients=report["gradients"] + report["curvature"], forwards=report["forwards"],
        batch=n, reference_batch=batch_size)


def distillation_cost(report: dict, batch_size: int) -> float:
    """Gradient-equivalents of a `distillation.distill` report: a gradient per step
    on its batch, its forward passes over all of its inputs and (stopping
    early) one over the held-out inputs per check; with rate
    probes (`Distillation` with several rates), theirs too, and two forward
    passes over the held-out inputs per probe (reference and result)."""
    total = cost.gradient_equivalents(
        gradients=report["gradients"], batch=report["batch"],
        reference_batch=batch_size) + cost.gradient_equivalents(
        forwards=report["forwards"], batch=report["examples"], reference_batch=batch_size)
    if "held_out_forwards" in report:
        total += cost.gradient_equivalents(forwards=report["held_out_forwards"],
                                           batch=report["held_out_examples"],
                                           reference_batch=batch_size)
    probes = report.get("probes")
    if probes is not None:
        total += sum(distillation_cost(r, batch_size) for r in probes["reports"])
        total += cost.gradient_equivalents(forwards=2 * len(probes["reports"]),
                                           batch=probes["held_out"], reference_batch=batch_size)
    return total


def _recover(method, model, masks, inputs, reference, current, start, steps, names,
             output_metric, logits_weight, solver, distill, refit_bias, batch_size, verbose,
             seed) -> dict:
    """The projection (method "geodesic") or distillation ("distill") from each of
    `start`'s starting points; keeps the result nearer the reference's function
    on the inputs (no labels needed)."""
    n = batching.num_examples(inputs)
    outcomes = {}
    for begin in (("mask", "layerwise") if start == "closer" else (start,)):
        weights_lib.set_trainable(model, reference)  # the function to keep
        initial, extra = current, 0.0
        if begin == "layerwise":
            initial, _ = layerwise.reconstruct(model, masks, inputs, refit_bias=refit_bias)
            extra = reconstruction_cost(model, n, batch_size)
            weights_lib.set_trainable(model, reference)
        elif begin == "distill":  # a cheap first-order descent, then Gauss-Newton
            extra = distillation_cost(_distill(model, masks, inputs, reference, current,
                                               names, output_metric, logits_weight, solver,
                                               distill, seed), batch_size)
            initial = weights_lib.get_trainable(model)
            weights_lib.set_trainable(model, reference)
        if method == "geodesic":
            report = projection.gauss_newton_projection(
                model, masks, inputs, layers=names, output_metric=output_metric, steps=steps,
                solver=solver, start=initial, logits_weight=logits_weight,
                on_step=_print_step if verbose >= 2 else None)
            report["gradient_equivalents"] = extra + projection_cost(report, batch_size)
        else:
            report = _distill(model, masks, inputs, reference, initial, names, output_metric,
                              logits_weight, solver, distill, seed)
            report["gradient_equivalents"] = extra + distillation_cost(report, batch_size)
        outcomes[begin] = (report, weights_lib.get_trainable(model))
    chosen = min(outcomes, key=lambda b: outcomes[b][0]["distance"])
    report = outcomes[chosen][0]
    weights_lib.set_trainable(model, outcomes[chosen][1])
    row = {"steps": report["steps"], "functional_distance": report["distance"],
           "start": chosen,
           "gradient_equivalents": sum(r["gradient_equivalents"] for r, _ in outcomes.values())}
    if method == "geodesic":
        row["cg_iterations"] = report["cg_iterations"]
    else:
        if "probes" in report:  # the rate the held-out probes chose, and their distances
            row["learning_rate"] = report["probes"]["learning_rate"]
            row["rate_distances"] = report["probes"]["distances"]
        if "best_step" in report:  # where the held-out D was smallest
            row["best_step"] = report["best_step"]
            row["held_out_distance"] = report["held_out_distance"]
    if len(outcomes) > 1:
        row["start_distances"] = {b: r["distance"] for b, (r, _) in outcomes.items()}
    return row


def _distill(model, masks, inputs, reference, start, names, output_metric, logits_weight,
             solver, distill, seed) -> dict:
    """`distillation.distill` with `distill`'s settings; with several candidate
    rates, the rate chosen by `_probe_rates` first."""
    rates = rate_candidates(distill.learning_rate)
    n = batching.num_examples(inputs)
    probes = None
    if len(rates) > 1 and n < 2:
        # Nothing to hold out: the smallest candidate, the one that never failed.
        logging.warning("One calibration input: no rate probes, distilling at %g.", min(rates))
        rates = (min(rates),)
    if len(rates) > 1:
        probes = _probe_rates(model, masks, inputs, reference, start, names, output_metric,
                              logits_weight, solver, distill, rates, seed)
    rate = rates[0] if probes is None else probes["learning_rate"]
    stop_early = distill.held_out_checks > 0 and n >= 2
    report = distillation.distill(
        model, masks, inputs, distill.steps, distill.batch_size, rate,
        distill.schedule, names, output_metric, logits_weight, start=start, seed=seed,
        jit_compile=solver.jit_compile, chunk_size=solver.chunk_size,
        reference_weights=reference,
        held_out=held_out_rows(n, seed) if stop_early else None,
        checks=max(1, distill.held_out_checks))
    if probes is not None:
        report["probes"] = probes
    return report


def held_out_rows(n: int, seed: int) -> np.ndarray:
    """The `probe_held_out(n)` calibration rows (sorted) that a stage seeded
    `seed` holds out, for its rate probes and its early stopping alike."""
    return np.sort(np.random.default_rng(seed).permutation(n)[:probe_held_out(n)])


def rate_candidates(learning_rate) -> tuple[float, ...]:
    """`Distillation.learning_rate` (a rate or a sequence of candidates) as a tuple."""
    if isinstance(learning_rate, numbers.Real):
        return (float(learning_rate),)
    return tuple(float(r) for r in learning_rate)


def _probe_rates(model, masks, inputs, reference, start, names, output_metric, logits_weight,
                 solver, distill, rates, seed) -> dict:
    """Distils `distill.probe_length` steps at each rate on the inputs less
    `probe_held_out(n)` held out (a seeded draw), measures D to the reference on
    the held-out inputs, and returns {"learning_rate" (the smallest D's; a
    diverged probe's D counts as infinite), "distances" {rate: D},
    "reports" [each probe's distill report], "held_out" (inputs)}."""
    n = batching.num_examples(inputs)
    held_rows = held_out_rows(n, seed)
    fit = batching.take_rows(inputs, np.setdiff1d(np.arange(n), held_rows))
    held_out = batching.take_rows(inputs, held_rows)
    held = len(held_rows)
    distances, reports = [], []
    for rate in rates:
        reports.append(distillation.distill(
            model, masks, fit, distill.probe_length, distill.batch_size, rate, distill.schedule,
            names, output_metric, logits_weight, start=start, seed=seed,
            jit_compile=solver.jit_compile, chunk_size=solver.chunk_size,
            reference_weights=reference, checks=1))  # one cycle: "restarts" is "cosine"
        d = functional_distance(model, reference, held_out, names, output_metric,
                                logits_weight, solver.chunk_size)
        distances.append(d if math.isfinite(d) else math.inf)
    weights_lib.set_trainable(model, reference)
    best = int(np.argmin(distances))
    return {"learning_rate": rates[best], "distances": dict(zip(rates, distances)),
            "reports": reports, "held_out": held}


def _print_step(entry):
    print(f"  Gauss-Newton step {entry['step']}: functional distance {entry['distance']:.4g}",
          flush=True)


def _masks(model, choice, current, sparsity, which, ranking, allocation, inputs):
    """The stage's masks chosen from the current network (so they nest)."""
    if choice in ("magnitude", "magnitude_dense"):
        return pruning.magnitude_masks(current, sparsity, which, ranking,
                                       allocation=allocation if choice == "magnitude_dense"
                                       else None)
    saved = weights_lib.get_trainable(model)
    weights_lib.set_trainable(model, current)
    try:
        if choice == "wanda":
            return pruning.wanda_masks(model, inputs, sparsity, which)
        return pruning.obs_masks(model, inputs, sparsity, which)[0]
    finally:
        weights_lib.set_trainable(model, saved)


def exact_zero_count(weights, which) -> tuple[int, int]:
    """(zeros, total) over the prunable tensors."""
    total = sum(int(np.size(w)) for w, p in zip(weights, which) if p)
    zeros = sum(int(np.sum(np.asarray(w) == 0)) for w, p in zip(weights, which) if p)
    return zeros, total


def _verify(model, masks, which, method, k) -> float:
    """The measured sparsity; raises if the mask's zeros are not all exactly zero."""
    final = weights_lib.get_trainable(model)
    zeros, total = exact_zero_count(final, which)
    respected = all(np.all(np.asarray(w)[np.asarray(m) == 0] == 0) for w, m in zip(final, masks))
    if not respected:
        raise AssertionError(f"{method} at stage {k + 1} left pruned weights non-zero.")
    return zeros / total


def _check_integer(name, value, least) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}.")


def _check_distillation(settings, method, start, stages: int) -> None:
    """Refuses bad `Distillation` settings (for a schedule of `stages`) before any
    stage runs."""
    if method != "distill" and start != "distill":
        return
    if not isinstance(settings, Distillation):
        raise ValueError(f"distillation_settings must be a Distillation, got "
                         f"{type(settings).__name__}.")
    steps = settings.steps
    if isinstance(steps, Sequence) and not isinstance(steps, (str, bytes)):
        if len(steps) != stages:
            raise ValueError(f"Distillation.steps has {len(steps)} counts for a schedule of "
                             f"{stages} stage(s): give one per stage, or one integer.")
        for count in steps:
            _check_integer("each of Distillation.steps", count, 0)
    else:
        _check_integer("Distillation.steps", steps, 0)
    fraction = settings.intermediate_fraction
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) \
            or not math.isfinite(fraction) or fraction < 0:
        raise ValueError(f"Distillation.intermediate_fraction must be a finite number >= 0, "
                         f"got {fraction!r}.")
    for name, least in (("batch_size", 1), ("probe_steps", 1), ("held_out_checks", 0)):
        value = getattr(settings, name)
        if not (name == "probe_steps" and value is None):
            _check_integer(f"Distillation.{name}", value, least)
    rates = settings.learning_rate
    if isinstance(rates, (str, bytes)) or not isinstance(rates, (numbers.Real, Sequence)):
        raise ValueError(f"Distillation.learning_rate must be a rate or a sequence of "
                         f"candidate rates, got {rates!r}.")
    rates = [rates] if isinstance(rates, numbers.Real) else list(rates)
    if not rates or any(isinstance(r, bool) or not isinstance(r, numbers.Real)
                        or not math.isfinite(r) or r <= 0 for r in rates):
        raise ValueError(f"Distillation.learning_rate must be finite rates > 0 (at least "
                         f"one), got {settings.learning_rate!r}.")
    if settings.schedule not in distillation.SCHEDULES:
        raise ValueError(f"Distillation.schedule must be one of {distillation.SCHEDULES}, "
                         f"got {settings.schedule!r}.")


def _check(model, inputs, sparsity, method, mask, start, layers, output_metric, steps,
           batch_size, verbose) -> list[float]:
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras.Model, got {type(model).__name__}.")
    model_checks.check_network(model)
    for name, value, allowed in (("method", method, METHODS), ("mask", mask, MASKS),
                                 ("start", start, STARTS), ("layers", layers, ("logits", "hidden")),
                                 ("output_metric", output_metric, output_metrics.NAMES)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        _check_integer(name, value, 1)
    if start == "distill" and method != "geodesic":
        raise ValueError(f'start="distill" starts the geodesic projection from a short '
                         f'distillation; method={method!r} takes start="mask", "layerwise" or '
                         f'"closer".')
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}.")
    stages = [sparsity] if isinstance(sparsity, numbers.Real) else list(sparsity)
    if not stages:
        raise ValueError("sparsity must be a number or a non-empty sequence of numbers.")
    for s in stages:
        if not isinstance(s, numbers.Real) or isinstance(s, bool) or not math.isfinite(s) \
                or not 0 <= s < 1:
            raise ValueError(f"each sparsity must be a number in [0, 1), got {s!r}.")
    if any(b <= a for a, b in zip(stages, stages[1:])):
        raise ValueError(f"stage sparsities must increase, got {stages}.")
    try:
        n = batching.num_examples(inputs)
    except Exception as e:  # noqa: BLE001 - any malformed structure gets one message
        raise ValueError(f"inputs must be an array [N, ...] or a dict of arrays: {e}") from None
    if n < 1:
        raise ValueError("inputs hold no examples.")
    for leaf in tf.nest.flatten(inputs):
        if not np.all(np.isfinite(np.asarray(leaf, dtype=np.float64))):
            raise ValueError("inputs contain NaN or infinite values.")
    try:
        outputs = model(tf.nest.map_structure(lambda a: a[:1], inputs), training=False)
    except Exception as e:  # noqa: BLE001 - the model decides what it accepts
        raise ValueError(f"the model does not accept inputs of this shape: "
                         f"{str(e).splitlines()[0]}") from None
    model_checks.check_outputs(outputs)
    return [float(s) for s in stages]

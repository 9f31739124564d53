"""`find_path`: a path between two trained Keras networks, and its evaluation.

    path = tfgeo.connect.find_path(model_a, model_b, x_train, y_train, method="geodesic")
    scores = path.evaluate(x_test, y_test)       # accuracy, loss, barrier along the path
    midpoint = path.model_at(0.5)                # a Keras model with the weights there

Methods (A and B fixed, only trainable weights move):
  geodesic   the relaxed boundary-value geodesic (`relaxed_path`): inner points
             (or Bezier bends) relaxed to minimise the path's metric energy;
  shooting   the geodesic walk from A toward B (`geodesic_walk`), landing with
             a last straight step;
  bezier, polychain
             Garipov et al.'s curves with one bend (`curves`), trained on the
             task loss for a budget of gradient-equivalents;
  fip        the FIP authors' first-order output-preserving path (`output_path`);
  straight   the segment A -> B (the floor).
With `align=True`, B is first permuted onto A by weight matching
(`permutation`); the permuted B must compute B's function, else the call
refuses (skip connections the matching does not model change it).

Every path is returned as `num_points` points equally spaced in Euclidean arc
length; compute is counted by `tfgeo.cost` in gradients on batches of
`REFERENCE_BATCH`.
"""
from __future__ import annotations

import numbers
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfgeo import model_checks
from tfgeo import classification
from tfgeo import cost
from tfgeo import distribute
from tfgeo import weights as weights_lib
from tfgeo.connect import curves
from tfgeo.connect import geodesic_walk
from tfgeo.connect import output_path
from tfgeo.connect import paths
from tfgeo.connect import permutation
from tfgeo.connect import relaxed_path

METHODS = ("geodesic", "shooting", "straight", "bezier", "polychain", "fip")
#: Methods refused under a strategy of several replicas.
NOT_DISTRIBUTED = ("fip",)
#: Gradient-equivalents are counted in gradients on batches of this size.
REFERENCE_BATCH = 128
#: The default budget of every method that trains (gradient-equivalents): the
#: relaxed geodesic's compute at 743 iterations of its defaults (866.8, which
#: the curves' whole steps round to 867).
DEFAULT_BUDGET = 867.0


class Relaxation(NamedTuple):
    """Settings of the relaxed geodesic (`relaxed_path.relax_path`); `iterations`
    (if set) overrides the budget, else the geodesic gets the iterations the
    budget buys (`relaxation_iterations`: 743 at the default budget)."""
    iterations: int | None = None
    inner_points: int = 4
    batch_size: int = 32
    energy: str = "divergence"
    representations: str = "logits"
    loss_weight: float = 0.0
    learning_rate: float = 1e-3
    parametrization: str = "bezier"
    bends: int = 1
    output_metric: str = "fisher"


class Shooting(NamedTuple):
    """Settings of the shooting walk (`geodesic_walk.geodesic_path`)."""
    step_size: float = 0.1
    damping: float = 1e-3
    cg_iterations: int = 10
    tolerance: float = 0.01
    max_steps: int = 3000
    record_every: int = 5
    batch_size: int = 256
    output_metric: str = "fisher"


class CurveTraining(NamedTuple):
    """Settings of the Bezier and polygonal-chain curves (`curves.train_curve`);
    `steps` (if set) overrides the budget."""
    batch_size: int = 128
    learning_rate: float = 1e-3
    steps: int | None = None


class FIP(NamedTuple):
    """Settings of the FIP path (`output_path.output_path`)."""
    batch_size: int = 256
    inner_steps: int = 40
    learning_rate: float = 0.5
    beta: float = 0.03
    tolerance: float = 0.01


class Path:
    """A path of trainable weights from A to B, equally spaced in arc length.

    Attributes: points (each a list of arrays shaped like the trainable
    variables; the first is A, the last B), method, gradient_equivalents,
    seconds, info (the method's own counters).
    """

    def __init__(self, model: keras.Model, points, method: str, gradient_equivalents: float,
                 seconds: float, info: dict):
        self._model = model
        self.points, self.method = points, method
        self.gradient_equivalents, self.seconds, self.info = gradient_equivalents, seconds, info
        self._positions = paths.euclidean_positions(points)

    def weights_at(self, t: float) -> list[np.ndarray]:
        """The trainable weights at normalised arc length t in [0, 1]."""
        if not isinstance(t, numbers.Real) or not 0.0 <= t <= 1.0:
            raise ValueError(f"t must be a number in [0, 1], got {t!r}.")
        k = int(np.clip(np.searchsorted(self._positions, t, side="right") - 1, 0,
                        len(self.points) - 2))
        span = self._positions[k + 1] - self._positions[k]
        return paths.interpolate(self.points[k], self.points[k + 1],
                                 float((t - self._positions[k]) / span) if span > 0 else 0.0)

    def model_at(self, t: float) -> keras.Model:
        """A new Keras model (a clone of A's architecture, A's non-trainable
        weights) holding the path's trainable weights at t."""
        clone = keras.models.clone_model(self._model)
        clone.set_weights(self._model.get_weights())
        weights_lib.set_trainable(clone, self.weights_at(t))
        return clone

    def evaluate(self, x, y, num_points: int | None = None, batch_size: int = 1024) -> dict:
        """Accuracy and cross-entropy of the logits classifier at `num_points`
        points equally spaced in arc length (default: the path's own points).

        Returns {"position", "accuracy", "loss" (lists), "barrier" (max loss
        minus the endpoints' mean), "max_loss", "min_accuracy"}.
        """
        points = self.points if num_points is None else resample(self.points, num_points)
        scores = [classification.evaluate_weights_trainable(self._model, p, x, y, batch_size)
                  for p in points]
        losses = [s["loss"] for s in scores]
        return {"position": paths.euclidean_positions(points).tolist(),
                "accuracy": [s["accuracy"] for s in scores], "loss": losses,
                "barrier": geodesic_walk.loss_barrier(losses), "max_loss": float(max(losses)),
                "min_accuracy": float(min(s["accuracy"] for s in scores))}


def find_path(model_a: keras.Model, model_b: keras.Model, x, y, method: str = "geodesic", *,
              align: bool = False, num_points: int = 41, budget: float = DEFAULT_BUDGET,
              relaxation: Relaxation = Relaxation(), shooting: Shooting = Shooting(),
              curve_training: CurveTraining = CurveTraining(), fip: FIP = FIP(),
              seed: int = 0, jit_compile: bool = False, verbose: int = 1) -> Path:
    """A path from `model_a` to `model_b` by `method` (module docstring).

    Args:
      model_a, model_b: built Keras logits classifiers of one architecture,
        equal in their non-trainable weights (B's would otherwise be lost).
      x, y: training inputs [N, ...] and integer labels [N]: the metric's
        inputs (geodesic, shooting, fip) and the curves' training data.
      align: connect A to B permuted onto A by weight matching (Dense/Conv2D
        chains only; refused when the permuted B computes another function).
      num_points: points of the returned path (>= 2).
      budget: gradient-equivalents (batches of 128) of every method that
        trains (geodesic, curves, FIP): each gets the whole steps that come
        nearest it (`relaxation_iterations`, `curve_steps`); the default is
        the relaxed geodesic's compute at 743 iterations.
      relaxation, shooting, curve_training, fip: each method's settings.
      seed: seeds data order and initialisation (reproducible under a seed).
      jit_compile: XLA-compile the training steps (slow for conv nets on CPU).
      verbose: 0 silent, 1 one line when done.
    """
    _check(model_a, model_b, x, y, method, num_points, budget, verbose)
    check_settings(relaxation=relaxation, shooting=shooting, curve_training=curve_training,
                   fip=fip)
    a, b = weights_lib.get_trainable(model_a), weights_lib.get_trainable(model_b)
    if align:
        b = align_to(model_a, model_b, x)
    keras.utils.set_random_seed(int(seed))
    model = keras.models.clone_model(model_a)
    model.set_weights(model_a.get_weights())
    path = path_between(model, a, b, x, y, method, num_points, budget, relaxation, shooting,
                        curve_training, fip, seed, jit_compile)
    if verbose:
        print(f"{method} path A -> B{' (aligned)' if align else ''}: {len(path.points)} points, "
              f"{path.gradient_equivalents:.0f} gradient-equivalents, {path.seconds:.1f} s",
              flush=True)
    return path


def align_to(model_a: keras.Model, model_b: keras.Model, x, seed: int = 0) -> list:
    """B's trainable weights permuted onto A by weight matching; raises ValueError
    when the permuted weights do not compute B's function on x[:256]."""
    units = permutation.spec(model_a)
    a, b = weights_lib.get_trainable(model_a), weights_lib.get_trainable(model_b)
    _, aligned = permutation.weight_matching(units, a, b, seed=seed)
    probe = tf.nest.map_structure(lambda v: v[:256], x)
    before = classification.predict_logits(model_b, probe)
    after = classification.logits_at(model_b, aligned, probe)
    scale = max(float(np.max(np.abs(before))), 1e-6)
    if float(np.max(np.abs(after - before))) > 1e-3 * scale:
        raise ValueError("Weight matching changed B's function (its outputs moved by "
                         f"{float(np.max(np.abs(after - before))) / scale:.1%} of their largest "
                         "value): the network has connections the matching does not model "
                         "(e.g. skip connections). Use align=False.")
    logging.info("Weight matching: ||B - A|| %.3f -> %.3f", paths.distance(a, b),
                 paths.distance(a, aligned))
    return aligned


def path_between(model: keras.Model, a, b, x, y, method: str, num_points: int = 41,
                 budget: float = DEFAULT_BUDGET, relaxation: Relaxation = Relaxation(),
                 shooting: Shooting = Shooting(), curve_training: CurveTraining = CurveTraining(),
                 fip: FIP = FIP(), seed: int = 0, jit_compile: bool = False) -> Path:
    """The path from trainable weights `a` to `b` on `model`'s architecture (the
    model's weights are used as scratch and left at `a`); see `find_path`."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    replicas = distribute.num_replicas_in_scope()
    if method in NOT_DISTRIBUTED and replicas > 1:
        raise ValueError(f"method={method!r} does not run over {replicas} replicas (its inner "
                         f"loop updates weights in place); under a strategy use one of "
                         f"{[m for m in METHODS if m not in NOT_DISTRIBUTED]}.")
    weights_lib.set_trainable(model, a)
    if method == "geodesic":
        raw, ge, seconds, info = _relaxed(model, a, b, x, y, relaxation, budget, seed,
                                          jit_compile, num_points)
        points = raw
    elif method == "shooting":
        raw, ge, seconds, info = _shooting(model, a, b, x, y, shooting, seed, jit_compile)
        points = resample(raw, num_points)
    elif method == "straight":
        points, ge, seconds, info = paths.straight_path(a, b, num_points), 0.0, 0.0, {}
    elif method in ("bezier", "polychain"):
        points, ge, seconds, info = _curve(model, method, a, b, x, y, curve_training, budget,
                                           seed, jit_compile, num_points)
    else:
        raw, ge, seconds, info = _fip(model, a, b, x, y, fip, budget, seed, jit_compile)
        points = resample(raw, num_points)
    weights_lib.set_trainable(model, a)
    return Path(model, points, method, float(ge), float(seconds), info)


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


def _batches(x, y, batch_size, seed):
    """Endless shuffled (x, y) batches of a static size."""
    n = len(y)
    return (tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(n, seed=seed, reshuffle_each_iteration=True).repeat()
            .batch(batch_size, drop_remainder=True))


def relaxation_cost(s: Relaxation) -> float:
    """Gradient-equivalents (batches of `REFERENCE_BATCH`) of one relaxation
    iteration: K gradients and 2 forwards (divergence energy) or K metric
    products (metric energy) on `s.batch_size` inputs (`relaxed_path`)."""
    if s.energy == "divergence":
        counts = {"gradients": s.inner_points, "forwards": 2}
    else:
        counts = {"metric_products": s.inner_points}
    return cost.gradient_equivalents(**counts, batch=s.batch_size,
                                     reference_batch=REFERENCE_BATCH)


def relaxation_iterations(s: Relaxation, budget: float) -> int:
    """`s.iterations` if set, else the whole iterations nearest `budget` GE (>= 1)."""
    if s.iterations is not None:
        return int(s.iterations)
    return max(1, int(round(budget / relaxation_cost(s))))


def curve_steps(s: CurveTraining, budget: float) -> int:
    """`s.steps` if set, else the whole training steps nearest `budget` GE (>= 1)."""
    if s.steps is not None:
        return int(s.steps)
    return max(1, int(round(budget * REFERENCE_BATCH / s.batch_size)))


def _relaxed(model, a, b, x, y, s: Relaxation, budget, seed, jit, num_points):
    iterations = relaxation_iterations(s, budget)
    res = relaxed_path.relax_path(
        model, a, b, _batches(x, y, s.batch_size, seed), iterations,
        num_points=s.inner_points, energy=s.energy, output_metric=s.output_metric,
        representations=s.representations, loss_weight=s.loss_weight,
        optimizer=keras.optimizers.Adam(s.learning_rate), jit_compile=jit,
        log_every=max(1, iterations // 10), parametrization=s.parametrization,
        num_bends=s.bends, seed=seed)
    c = res["counts"]
    ge = cost.gradient_equivalents(metric_products=c["metric_products"],
                                   gradients=c["gradients"], forwards=c["forwards"],
                                   batch=res["batch"], reference_batch=REFERENCE_BATCH)
    info = {"iterations": res["iterations"], "inner_points": s.inner_points,
            "energy": res["energy"], "train_loss": res["loss"], "history": res["history"]}
    points = (curve_points("bezier", a, res["bends"], b, num_points)
              if res["bends"] is not None else resample(res["points"], num_points))
    return points, ge, res["seconds"], info


def _shooting(model, a, b, x, y, s: Shooting, seed, jit):
    weights_lib.set_trainable(model, a)
    walk = geodesic_walk.geodesic_path(
        model, b, _batches(x, y, s.batch_size, seed), step_size=s.step_size, damping=s.damping,
        output_metric=s.output_metric, cg_max_iterations=s.cg_iterations,
        tolerance=s.tolerance, max_steps=s.max_steps, record_every=s.record_every,
        jit_compile=jit, verbose=0)
    if not walk["reached"]:
        logging.warning("The shooting walk stopped %.3g from its target (of %.3g) after %d "
                        "steps; its last leg is a straight segment, evaluated as part of the "
                        "path.", walk["final_distance"], walk["start_distance"], walk["steps"])
    ge = cost.gradient_equivalents(metric_products=walk["metric_products"],
                                   quadratic_forms=walk["quadratic_forms"],
                                   batch=s.batch_size, reference_batch=REFERENCE_BATCH)
    info = {"steps": walk["steps"], "reached": walk["reached"],
            "straight_leg_points": walk["straight_leg_points"]}
    return walk["points"], ge, walk["seconds"], info


def _curve(model, kind, a, b, x, y, s: CurveTraining, budget, seed, jit, num_points):
    steps = curve_steps(s, budget)
    res = curves.train_curve(model, a, b, _batches(x, y, s.batch_size, seed), steps, kind=kind,
                             num_bends=1, optimizer=keras.optimizers.Adam(s.learning_rate),
                             seed=seed, jit_compile=jit, log_every=max(1, min(500, steps)))
    points = curve_points(kind, a, res["curve"].bend_points(), b, num_points)
    ge = cost.gradient_equivalents(gradients=res["gradients"], batch=s.batch_size,
                                   reference_batch=REFERENCE_BATCH)
    return points, ge, res["seconds"], {"steps": res["steps"], "train_loss": res["loss"]}


def _fip(model, a, b, x, y, s: FIP, budget, seed, jit):
    per_step = cost.gradient_equivalents(gradients=s.inner_steps + 1.0 / 3.0,
                                         batch=s.batch_size, reference_batch=REFERENCE_BATCH)
    steps = max(1, int(round(budget / per_step)))
    # Each outer step aims a fraction eta of the remaining way: eta so that the steps
    # leave the tolerance of the distance.
    eta = min(1.0, 1.0 - max(s.tolerance, 1e-3) ** (1.0 / steps))
    inputs = x[np.random.default_rng(seed).permutation(len(y))[:s.batch_size]]
    weights_lib.set_trainable(model, a)
    res = output_path.output_path(model, b, inputs, num_steps=steps, inner_steps=s.inner_steps,
                                  learning_rate=s.learning_rate, beta=s.beta, eta=eta,
                                  tolerance=s.tolerance, jit_compile=jit)
    ge = cost.gradient_equivalents(gradients=res["gradients"], batch=res["batch"],
                                   reference_batch=REFERENCE_BATCH)
    return res["points"], ge, res["seconds"], {"steps": res["steps"], "eta": eta,
                                               "reached": res["reached"]}


#: Settings fields that count things (integers >= 1; None where it means "from
#: the budget"), and those that must be finite and > 0 or >= 0.
_COUNTS = ("iterations", "inner_points", "batch_size", "bends", "steps", "max_steps",
           "record_every", "cg_iterations", "inner_steps")
_POSITIVE = ("learning_rate", "step_size", "tolerance", "beta")
_NON_NEGATIVE = ("loss_weight", "damping")


def check_settings(**settings) -> None:
    """Raises ValueError naming the field (e.g. `relaxation.batch_size`) of any
    settings tuple holding a count that is not an integer >= 1 or a rate that is
    not finite and positive."""
    for name, value in settings.items():
        for field, v in value._asdict().items():
            where = f"{name}.{field}"
            if field in _COUNTS and v is not None and (
                    isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1):
                raise ValueError(f"{where} must be an integer >= 1, got {v!r}.")
            if field in _POSITIVE + _NON_NEGATIVE and (
                    isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v)
                    or v < 0 or (field in _POSITIVE and v == 0)):
                bound = "> 0" if field in _POSITIVE else ">= 0"
                raise ValueError(f"{where} must be a finite number {bound}, got {v!r}.")


def check_fixed_weights(model_a, model_b, names=("model_a", "model_b")) -> None:
    """Raises ValueError if the endpoints differ in non-trainable weights: a path
    moves trainable weights only, so it would not end at B."""
    fixed_a = [np.asarray(v) for v in model_a.non_trainable_weights]
    fixed_b = [np.asarray(v) for v in model_b.non_trainable_weights]
    if len(fixed_a) != len(fixed_b) or any(
            p.shape != q.shape or not np.array_equal(p, q) for p, q in zip(fixed_a, fixed_b)):
        raise ValueError(f"{names[0]} and {names[1]} differ in non-trainable weights (frozen "
                         "layers, normalisation statistics): a path of trainable weights would "
                         "not end at B.")


def _check(model_a, model_b, x, y, method, num_points, budget, verbose):
    for name, m in (("model_a", model_a), ("model_b", model_b)):
        if not isinstance(m, keras.Model):
            raise ValueError(f"{name} must be a keras.Model, got {type(m).__name__}.")
        model_checks.check_network(m, name)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if weights_lib.shapes(model_a) != weights_lib.shapes(model_b):
        raise ValueError(f"model_a and model_b differ in architecture: trainable weights of "
                         f"shapes {weights_lib.shapes(model_a)} and {weights_lib.shapes(model_b)}.")
    check_fixed_weights(model_a, model_b)
    a, b = weights_lib.get_trainable(model_a), weights_lib.get_trainable(model_b)
    if paths.distance(a, b) == 0.0:
        raise ValueError("model_a and model_b have identical weights: there is no path to find.")
    if not isinstance(num_points, numbers.Integral) or num_points < 2:
        raise ValueError(f"num_points must be an integer >= 2, got {num_points!r}.")
    if not isinstance(budget, numbers.Real) or not budget > 0 or not np.isfinite(budget):
        raise ValueError(f"budget must be a finite number > 0, got {budget!r}.")
    if verbose not in (0, 1):
        raise ValueError(f"verbose must be 0 or 1, got {verbose!r}.")
    y = np.asarray(y)
    if len(y) != len(tf.nest.flatten(x)[0]) or len(y) < 1:
        raise ValueError(f"x and y must hold the same number (>= 1) of examples, got "
                         f"{len(tf.nest.flatten(x)[0])} and {len(y)}.")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must hold integer labels, got dtype {y.dtype}.")
    classes = model_checks.output_classes(model_a, x, "model_a")
    if y.min() < 0 or y.max() >= classes:
        raise ValueError(f"labels must be in [0, {classes}), got [{y.min()}, {y.max()}].")

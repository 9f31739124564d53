"""One geodesic step: the metric-constrained move toward a second objective.

    theta* = argmin_theta <theta, g theta> - beta <theta, v>  s.t. ||theta|| = eps

Stationarity of the Lagrangian gives theta = (beta / 2) (g + lambda I)^{-1} v
for a multiplier lambda; for lambda >= 0 (> -lambda_min(g)) this stationary
point is the global minimiser on the sphere. Two parametrisations:

* `geodesic_step(..., damping=lambda)`: fix lambda, solve x = (g + lambda I)^{-1} v
  by CG and return theta = eps x / ||x||; the beta it solves for is
  `implied_beta = 2 eps / ||x||`.
* `multiplier_for_beta(..., beta, eps)`: find the lambda >= 0 at which
  ||(beta/2)(g + lambda I)^{-1} v|| = eps (Newton on the secular equation,
  Moré & Sorensen 1983), then take the step with that damping.

Both take the metric as a `tfgeo.linear_operator.LinearOperator`.

When CG breaks down (non-positive curvature, non-finite values) after
accepting some iterations, the step follows the last accepted iterate: it
minimises the damped quadratic over the Krylov subspace explored so far (a
truncated-Newton direction), and the breakdown is reported in `cg.status`.
Only a solve that accepted nothing, or a non-finite result, gives a zero step
with `ok` False.
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Sequence

import tensorflow as tf

from tfgeo import krylov
from tfgeo import linear_operator
from tfgeo import vectors


class GeodesicStepResult(NamedTuple):
    step: list  # theta, shaped like v; ||theta|| = eps, or zeros if the solve failed
    functional_change: tf.Tensor  # <theta, g theta>
    cosine: tf.Tensor  # <theta, v> / (||theta|| ||v||)
    implied_beta: tf.Tensor  # beta for which theta solves the problem at this lambda
    ok: tf.Tensor  # bool: a finite, non-zero step was produced
    cg: krylov.CGResult
    true_residual: tf.Tensor  # ||v - (g + lambda I) x|| / ||v|| from one more product, or -1


def _check_step_size(step_size):
    if isinstance(step_size, numbers.Real) and not (math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size must be a finite number > 0, got {step_size!r}.")


def geodesic_step(
    operator,
    direction: Sequence[tf.Tensor],
    step_size,
    damping=1e-3,
    max_iterations: int = 20,
    tolerance: float = 1e-5,
    unroll: bool = False,
    preconditioner: linear_operator.LinearOperator | None = None,
    initial: Sequence[tf.Tensor] | None = None,
    true_residual: bool = False,
) -> GeodesicStepResult:
    """theta = eps (g + lambda I)^{-1} v / ||(g + lambda I)^{-1} v||.

    Args:
      operator: g, a `LinearOperator` (e.g. `tfgeo.metric.MetricOperator`);
        the functional change uses its `quadratic_form`.
      direction: v, the second objective's direction (list of tensors).
      step_size: eps > 0, the Euclidean length of the step (a tensor eps <= 0,
        e.g. a clipped length at the goal, gives a zero step with ok False).
      damping: lambda >= 0.
      max_iterations, tolerance, unroll, preconditioner: passed to
        `krylov.conjugate_gradient`.
      initial: a warm start for x = (g + lambda I)^{-1} v (e.g. the previous
        step's `cg.solution`).
      true_residual: also compute the solve's true relative residual (one
        more product; CG's own residual drifts from it in finite precision).
    Returns:
      GeodesicStepResult; see the module docstring for failed solves.
    """
    _check_step_size(step_size)
    v = [tf.convert_to_tensor(t) for t in direction]
    operator = linear_operator.as_operator(operator, v)
    v = operator.check(v)
    dot = operator.dot
    eps = vectors.scalar(step_size, operator.dtype)
    cg = krylov.conjugate_gradient(
        operator, v, damping=damping, max_iterations=max_iterations, tolerance=tolerance,
        unroll=unroll, preconditioner=preconditioner, initial=initial,
    )
    x_norm = tf.sqrt(dot(cg.solution, cg.solution))
    ok = tf.math.is_finite(x_norm) & (x_norm > 0) & tf.math.is_finite(eps) & (eps > 0)
    safe_norm = tf.where(ok, x_norm, tf.ones_like(x_norm))
    factor = tf.where(ok, eps / safe_norm, tf.zeros_like(eps))
    theta = vectors.scale(factor, cg.solution)
    # A step too long for the dtype (eps near its largest value) overflows: no step.
    finite = tf.math.is_finite(tf.sqrt(dot(theta, theta)))
    theta = [tf.where(finite, t, tf.zeros_like(t)) for t in theta]
    ok = ok & finite
    change = operator.quadratic_form(theta)
    v_norm = tf.sqrt(dot(v, v))
    denom = eps * v_norm
    safe_denom = tf.where(ok & (denom > 0), denom, tf.ones_like(denom))
    cosine = tf.where(ok & (denom > 0), dot(theta, v) / safe_denom, tf.zeros_like(denom))
    implied_beta = tf.where(ok, 2 * eps / safe_norm, tf.zeros_like(eps))
    residual = (krylov.true_relative_residual(operator, v, cg.solution, damping)
                if true_residual else tf.constant(-1.0, operator.dtype))
    return GeodesicStepResult(theta, change, cosine, implied_beta, ok, cg, residual)


def multiplier_for_beta(
    operator,
    direction,
    beta,
    step_size,
    initial_damping=1e-3,
    newton_iterations: int = 10,
    max_iterations: int = 50,
    tolerance: float = 1e-8,
):
    """lambda >= 0 solving ||(beta / 2) (g + lambda I)^{-1} v|| = eps.

    Newton's method on phi(lambda) = 1/eps - 1/||x(lambda)||, which is concave
    and increasing, so iterates approach the root monotonically from below
    after the first step. Each iteration costs two CG solves:
    x = (beta/2)(g + lambda I)^{-1} v and y = (g + lambda I)^{-1} x, with
    lambda+ = lambda + (||x||^2 / <x, y>) (||x|| - eps) / eps.
    If the root is negative (the unconstrained minimiser lies inside the
    sphere, only possible for a nearly singular g and large beta) the result
    is clamped to 0.

    Returns:
      (lambda, step_norm): the multiplier and ||x(lambda)|| at it.
    """
    _check_step_size(step_size)
    if isinstance(beta, numbers.Real) and not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}.")
    v = [tf.convert_to_tensor(t) for t in direction]
    operator = linear_operator.as_operator(operator, v)
    v = operator.check(v)
    dot = operator.dot
    half_beta = vectors.scalar(beta, operator.dtype) / 2
    eps = vectors.scalar(step_size, operator.dtype)
    lam = vectors.scalar(initial_damping, operator.dtype)

    def solve(rhs, lam):
        return krylov.conjugate_gradient(
            operator, rhs, damping=lam, max_iterations=max_iterations, tolerance=tolerance,
        ).solution

    for _ in range(newton_iterations):
        x = vectors.scale(half_beta, solve(v, lam))
        y = solve(x, lam)
        xx = dot(x, x)
        x_norm = tf.sqrt(xx)
        xy = dot(x, y)
        update = (xx / xy) * (x_norm - eps) / eps
        lam = tf.maximum(lam + tf.where(xy > 0, update, tf.zeros_like(update)), 0)
    x = vectors.scale(half_beta, solve(v, lam))
    return lam, tf.sqrt(dot(x, x))

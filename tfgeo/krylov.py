"""Conjugate gradient for (A + lambda I) x = b over weight-space vectors.

A is any symmetric positive semi-definite operator given as a callable on
lists of tensors (e.g. `tfgeo.metric.MetricOperator`). The loop is a
`tf.while_loop` by default (compiles under XLA); `unroll=True` writes a fixed
number of iterations as straight-line code with no data-dependent control
flow, which is what `tf.distribute` needs when A all-reduces across replicas
(MirroredStrategy refuses `merge_call` inside a `while_loop`).

Breakdown is detected, not hidden: an iteration whose curvature p^T A p is
not positive, or whose coefficients are not finite, is rejected; the solver
stops and returns the last accepted iterate with a status code.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import tensorflow as tf

from tfgeo import vectors

# Status codes (int32 scalars in `CGResult.status`).
RUNNING = -1
CONVERGED = 0
MAX_ITERATIONS = 1
NON_POSITIVE_CURVATURE = 2
NOT_FINITE = 3

STATUS_NAMES = {
    CONVERGED: "converged",
    MAX_ITERATIONS: "max_iterations",
    NON_POSITIVE_CURVATURE: "non_positive_curvature",
    NOT_FINITE: "not_finite",
}


def status_name(status) -> str:
    """Human-readable name of a status code (accepts a tensor or int)."""
    return STATUS_NAMES.get(int(status), f"unknown({int(status)})")


class CGResult(NamedTuple):
    solution: list  # x, shaped like b
    iterations: tf.Tensor  # int32: accepted iterations (operator products used)
    relative_residual: tf.Tensor  # ||b - (A + lambda I) x|| / ||b|| (recursive residual)
    status: tf.Tensor  # int32 status code, see module constants


def conjugate_gradient(
    operator: Callable[[Sequence[tf.Tensor]], Sequence[tf.Tensor]],
    rhs: Sequence[tf.Tensor],
    damping=0.0,
    max_iterations: int = 20,
    tolerance: float = 1e-5,
    initial: Sequence[tf.Tensor] | None = None,
    unroll: bool = False,
    dot: Callable | None = None,
) -> CGResult:
    """Solves (A + damping I) x = rhs by conjugate gradient.

    Args:
      operator: v -> A v on lists of tensors; A symmetric PSD.
      rhs: b, a list of tensors.
      damping: lambda >= 0 added to the diagonal.
      max_iterations: at most this many operator products (>= 1).
      tolerance: stop when ||r|| <= tolerance * ||b||.
      initial: x_0 (default 0).
      unroll: straight-line loop of `max_iterations` masked iterations
        instead of `tf.while_loop` (for cross-replica reductions in `operator`).
      dot: inner product on vectors (default `tfgeo.vectors.dot`).
    Returns:
      CGResult. For status NON_POSITIVE_CURVATURE or NOT_FINITE the solution
      is the last accepted iterate (finite; 0 if none was accepted).
    """
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations}.")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}.")
    dot = dot or vectors.dot
    b = [tf.convert_to_tensor(t) for t in rhs]
    dtype = b[0].dtype
    damping = vectors.scalar(damping, dtype)
    tol = vectors.scalar(tolerance, dtype)

    def apply(v):
        return vectors.axpy(damping, v, operator(v))

    if initial is None:
        x = vectors.zeros_like(b)
        r = b
    else:
        x = [tf.cast(t, dtype) for t in initial]
        r = vectors.subtract(b, apply(x))
    b_norm = tf.sqrt(dot(b, b))
    rs = dot(r, r)
    # A zero right-hand side is solved by x = 0.
    safe_b_norm = tf.where(b_norm > 0, b_norm, tf.ones_like(b_norm))
    status = tf.where(
        tf.sqrt(rs) <= tol * b_norm,
        tf.constant(CONVERGED, tf.int32),
        tf.constant(RUNNING, tf.int32),
    )
    status = tf.where(tf.math.is_finite(rs), status, tf.constant(NOT_FINITE, tf.int32))
    p = r
    iterations = tf.constant(0, tf.int32)

    def body(x, r, p, rs, status, iterations):
        ap = apply(p)
        curvature = dot(p, ap)
        alpha = rs / tf.where(curvature != 0, curvature, tf.ones_like(curvature))
        r_new = vectors.axpy(-alpha, ap, r)
        rs_new = dot(r_new, r_new)
        finite = tf.math.is_finite(curvature) & tf.math.is_finite(rs_new)
        new_status = tf.where(
            ~finite,
            NOT_FINITE,
            tf.where(
                curvature <= 0,
                NON_POSITIVE_CURVATURE,
                tf.where(tf.sqrt(rs_new) <= tol * b_norm, CONVERGED, RUNNING),
            ),
        )
        # Only a running solver may take a step; a rejected step leaves
        # (x, r, p, rs) untouched, so no NaN reaches the returned iterate.
        new_status = tf.where(status == RUNNING, new_status, status)
        accept = (status == RUNNING) & (new_status <= CONVERGED)
        step = tf.where(accept, alpha, tf.zeros_like(alpha))
        x = vectors.axpy(step, p, x)
        r = [tf.where(accept, rn, ro) for rn, ro in zip(r_new, r)]
        beta = rs_new / tf.where(rs != 0, rs, tf.ones_like(rs))
        p = [tf.where(accept, rn + beta * po, po) for rn, po in zip(r_new, p)]
        rs = tf.where(accept, rs_new, rs)
        iterations += tf.cast(accept, tf.int32)
        return x, r, p, rs, new_status, iterations

    state = (x, r, p, rs, status, iterations)
    if unroll:
        for _ in range(max_iterations):
            state = body(*state)
    else:
        state = tf.while_loop(
            lambda *s: (s[4] == RUNNING) & (s[5] < max_iterations),
            body,
            state,
            maximum_iterations=max_iterations,
        )
    x, _, _, rs, status, iterations = state
    status = tf.where(status == RUNNING, tf.constant(MAX_ITERATIONS, tf.int32), status)
    relative_residual = tf.where(b_norm > 0, tf.sqrt(rs) / safe_b_norm, tf.zeros_like(rs))
    return CGResult(list(x), iterations, relative_residual, status)

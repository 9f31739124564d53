"""(Preconditioned) conjugate gradient for (A + lambda I) x = b over weight-space vectors.

A is a symmetric positive semi-definite `tfgeo.linear_operator.LinearOperator`
(a plain callable v -> A v is wrapped). With a preconditioner P (an operator
whose `solve` applies P^{-1}, P ~ A + lambda I), each iteration also takes
one P^{-1} product and the iterates are those of CG on P^{-1/2} (A + lambda I)
P^{-1/2}: far fewer iterations when P captures A's spectrum.

The loop is a `tf.while_loop` by default (compiles under XLA); `unroll=True`
writes a fixed number of iterations as straight-line code with no
data-dependent control flow, which is what `tf.distribute` needs when A
all-reduces across replicas (MirroredStrategy refuses `merge_call` inside a
`while_loop`).

Breakdown is detected, not hidden: an iteration whose curvature p^T A p is
not positive, or whose coefficients are not finite, is rejected; the solver
stops and returns the last accepted iterate with a status code.
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Sequence

import tensorflow as tf

from tfgeo import linear_operator
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
    iterations: tf.Tensor  # int32: accepted iterations
    relative_residual: tf.Tensor  # ||b - (A + lambda I) x|| / ||b|| (CG's recursive residual)
    status: tf.Tensor  # int32 status code, see module constants
    products: tf.Tensor  # int32: operator products computed (rejected and masked ones too)


def check_arguments(damping, max_iterations, tolerance) -> None:
    """Raises for arguments no solve can honour (checked before tracing)."""
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, numbers.Integral):
        raise TypeError(f"max_iterations must be an integer, got {max_iterations!r}.")
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations}.")
    if not (isinstance(tolerance, numbers.Real) and 0 <= tolerance < math.inf):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}.")
    value = damping
    if tf.is_tensor(damping) and hasattr(damping, "numpy") and damping.shape.rank == 0:
        value = float(damping.numpy())  # an eager tensor is checked like a number
    if isinstance(value, numbers.Real) and not 0 <= value < math.inf:
        raise ValueError(f"damping must be a finite number >= 0, got {value!r}.")


def conjugate_gradient(
    operator,
    rhs: Sequence[tf.Tensor],
    damping=0.0,
    max_iterations: int = 20,
    tolerance: float = 1e-5,
    initial: Sequence[tf.Tensor] | None = None,
    unroll: bool = False,
    preconditioner: linear_operator.LinearOperator | None = None,
) -> CGResult:
    """Solves (A + damping I) x = rhs by (preconditioned) conjugate gradient.

    Args:
      operator: A, a `LinearOperator` (or a callable v -> A v); symmetric PSD.
      rhs: b, a non-empty list of floating-point tensors.
      damping: lambda >= 0 added to the diagonal.
      max_iterations: at most this many iterations (an integer >= 1).
      tolerance: stop when ||r|| <= tolerance * ||b|| (r: CG's residual).
      initial: x_0 (default 0), e.g. the previous solve's solution; dropped
        for 0 when its residual exceeds ||b|| (it costs one product either way).
      unroll: straight-line loop of `max_iterations` masked iterations
        instead of `tf.while_loop` (for cross-replica reductions in `operator`).
      preconditioner: an operator with `has_inverse` whose `solve` applies
        P^{-1}, P symmetric positive definite (e.g. K-FAC or a diagonal).
    Returns:
      CGResult. For status NON_POSITIVE_CURVATURE or NOT_FINITE the solution
      is the last accepted iterate (finite; 0 if none was accepted). A
      right-hand side with NaN or Inf gives status NOT_FINITE, solution 0 and
      a NaN or Inf relative residual.
    """
    check_arguments(damping, max_iterations, tolerance)
    rhs = list(rhs)
    if not rhs:
        raise ValueError("rhs is empty: a weight-space vector needs at least one tensor.")
    b = [tf.convert_to_tensor(t) for t in rhs]
    if not b[0].dtype.is_floating:
        raise TypeError(f"rhs must be floating point, got {b[0].dtype.name}.")
    operator = linear_operator.as_operator(operator, b)
    b = operator.check(b)
    if preconditioner is not None and not preconditioner.has_inverse:
        raise TypeError(f"preconditioner {type(preconditioner).__name__} has no inverse product.")
    dot = operator.dot
    dtype = b[0].dtype
    damping = vectors.scalar(damping, dtype)
    tol = vectors.scalar(tolerance, dtype)

    def apply(v):
        return vectors.axpy(damping, v, operator.matvec(v))

    def precondition(r):
        return r if preconditioner is None else preconditioner.solve(r)

    products = tf.constant(0, tf.int32)
    if initial is None:
        x = vectors.zeros_like(b)
        r = b
    else:
        x = operator.check(initial)
        r = vectors.subtract(b, apply(x))
        products += 1
        # A warm start worse than none (its residual above ||b||) is dropped.
        worse = dot(r, r) > dot(b, b)
        x = [tf.where(worse, tf.zeros_like(t), t) for t in x]
        r = [tf.where(worse, bt, rt) for bt, rt in zip(b, r)]
    b_norm = tf.sqrt(dot(b, b))
    z = precondition(r)
    rs, rz = dot(r, r), dot(r, z)
    status = tf.where(tf.sqrt(rs) <= tol * b_norm, CONVERGED, RUNNING)
    finite = tf.math.is_finite(rs) & tf.math.is_finite(rz) & tf.math.is_finite(b_norm)
    status = tf.where(finite, status, NOT_FINITE)
    # A non-finite start accepts nothing: x is 0 (or the finite initial guess).
    p = z
    iterations = tf.constant(0, tf.int32)

    def body(x, r, p, rs, rz, status, iterations, products):
        ap = apply(p)
        products += 1
        curvature = dot(p, ap)
        alpha = rz / tf.where(curvature != 0, curvature, tf.ones_like(curvature))
        r_new = vectors.axpy(-alpha, ap, r)
        z_new = precondition(r_new)
        rs_new, rz_new = dot(r_new, r_new), dot(r_new, z_new)
        finite = (tf.math.is_finite(curvature) & tf.math.is_finite(rs_new)
                  & tf.math.is_finite(rz_new))
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
        # (x, r, p, rs, rz) untouched, so no NaN reaches the returned iterate.
        new_status = tf.where(status == RUNNING, new_status, status)
        accept = (status == RUNNING) & (new_status <= CONVERGED)
        step = tf.where(accept, alpha, tf.zeros_like(alpha))
        x = vectors.axpy(step, p, x)
        r = [tf.where(accept, rn, ro) for rn, ro in zip(r_new, r)]
        beta = rz_new / tf.where(rz != 0, rz, tf.ones_like(rz))
        p = [tf.where(accept, zn + beta * po, po) for zn, po in zip(z_new, p)]
        rs = tf.where(accept, rs_new, rs)
        rz = tf.where(accept, rz_new, rz)
        iterations += tf.cast(accept, tf.int32)
        return x, r, p, rs, rz, new_status, iterations, products

    state = (x, r, p, rs, rz, status, iterations, products)
    if unroll:
        for _ in range(max_iterations):
            state = body(*state)
    else:
        state = tf.while_loop(
            lambda *s: (s[5] == RUNNING) & (s[6] < max_iterations),
            body,
            state,
            maximum_iterations=max_iterations,
        )
    x, _, _, rs, _, status, iterations, products = state
    status = tf.where(status == RUNNING, MAX_ITERATIONS, status)
    safe_b_norm = tf.where(b_norm > 0, b_norm, tf.ones_like(b_norm))
    relative_residual = tf.where(
        tf.math.is_finite(b_norm),
        tf.where(b_norm > 0, tf.sqrt(rs) / safe_b_norm, tf.zeros_like(rs)),
        b_norm,  # NaN or Inf in b: say so
    )
    return CGResult(list(x), iterations, relative_residual, status, products)


def true_relative_residual(operator, rhs, solution, damping=0.0) -> tf.Tensor:
    """||b - (A + lambda I) x|| / ||b|| from one more product (CG's recursive
    residual drifts from this one in finite precision)."""
    b = [tf.convert_to_tensor(t) for t in rhs]
    operator = linear_operator.as_operator(operator, b)
    damping = vectors.scalar(damping, b[0].dtype)
    residual = vectors.subtract(b, vectors.axpy(damping, solution, operator.matvec(solution)))
    b_norm = tf.sqrt(operator.dot(b, b))
    return tf.sqrt(operator.dot(residual, residual)) / tf.where(b_norm > 0, b_norm, 1)

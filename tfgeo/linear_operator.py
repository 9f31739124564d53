"""Symmetric linear operators on weight-space vectors.

A weight-space vector is a list of tensors shaped like a model's trainable
variables (`tfgeo.vectors`). An operator implements one method, `_matvec`;
this base class supplies the rest: `matvec` / `@` / call with shape checks,
the inner product and quadratic form (both overridable: a metric computes
<v, A v> from one JVP, a distributed operator reduces across replicas),
composition (`+`, scalar `*`, `damped`, `restricted`) and `to_dense()` for
dense-reference tests on small models.

An operator with a cheap inverse product (a preconditioner: diagonal,
Kronecker-factored) also implements `_solve`, exposed as `solve(v) = A^{-1} v`
and announced by `has_inverse = True`.

Adding a metric is one small class:

    class Diagonal(LinearOperator):
        def __init__(self, diagonal):
            super().__init__([d.shape for d in diagonal], diagonal[0].dtype)
            self.diagonal = diagonal
        def _matvec(self, v):
            return vectors.multiply(self.diagonal, v)
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from tfgeo import vectors


class LinearOperator:
    """A symmetric operator A on lists of tensors of fixed shapes and dtype.

    Args:
      shapes: the shape of each tensor of a vector (e.g. of each trainable
        variable).
      dtype: the vectors' dtype.
    """

    #: Whether `solve` (A^{-1} v) is available.
    has_inverse = False

    def __init__(self, shapes, dtype):
        self.shapes = [tf.TensorShape(s) for s in shapes]
        self.dtype = tf.as_dtype(dtype)
        if not self.shapes:
            raise ValueError("A linear operator needs at least one tensor shape.")

    # -- what subclasses implement ------------------------------------------------------
    def _matvec(self, vector: list[tf.Tensor]) -> Sequence[tf.Tensor]:
        raise NotImplementedError

    def _solve(self, vector: list[tf.Tensor]) -> Sequence[tf.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} has no inverse product.")

    # -- the interface --------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Number of scalar coordinates P (A is P x P)."""
        return int(sum(s.num_elements() for s in self.shapes))

    def check(self, vector) -> list[tf.Tensor]:
        """`vector` as tensors of this operator's dtype, after checking its structure."""
        vector = list(vector)
        if len(vector) != len(self.shapes):
            raise ValueError(f"A vector of {len(vector)} tensors for an operator on "
                             f"{len(self.shapes)} tensors.")
        out = []
        for i, (t, shape) in enumerate(zip(vector, self.shapes)):
            t = tf.convert_to_tensor(t)
            if not t.dtype.is_floating:
                raise TypeError(f"Vector entry {i} has dtype {t.dtype.name}; expected floating "
                                f"point ({self.dtype.name}).")
            if not shape.is_compatible_with(t.shape):
                raise ValueError(f"Vector entry {i} of shape {tuple(t.shape)} does not match "
                                 f"the operator's shape {tuple(shape)}.")
            out.append(tf.cast(t, self.dtype) if t.dtype != self.dtype else t)
        return out

    def matvec(self, vector) -> list[tf.Tensor]:
        """A v."""
        return list(self._matvec(self.check(vector)))

    def __call__(self, vector) -> list[tf.Tensor]:
        return self.matvec(vector)

    def __matmul__(self, vector) -> list[tf.Tensor]:
        return self.matvec(vector)

    def solve(self, vector) -> list[tf.Tensor]:
        """A^{-1} v (operators with `has_inverse` only)."""
        return list(self._solve(self.check(vector)))

    def dot(self, a, b) -> tf.Tensor:
        """The inner product the solvers use (overridable for sharded vectors)."""
        return vectors.dot(a, b)

    def quadratic_form(self, vector) -> tf.Tensor:
        """<v, A v>."""
        v = self.check(vector)
        return self.dot(v, self._matvec(v))

    # -- composition ------------------------------------------------------------------
    def damped(self, damping) -> "LinearOperator":
        """A + damping I."""
        return DampedOperator(self, damping)

    def restricted(self, mask) -> "LinearOperator":
        """m * A (m * v): A restricted to the coordinates where the 0/1 `mask` is 1."""
        return MaskedOperator(self, mask)

    def __add__(self, other: "LinearOperator") -> "LinearOperator":
        return SumOperator([self, other])

    def __mul__(self, scale) -> "LinearOperator":
        return SumOperator([self], [scale])

    __rmul__ = __mul__

    # -- testing ----------------------------------------------------------------------
    def to_dense(self, max_size: int = 4096) -> np.ndarray:
        """A as a dense [P, P] numpy array, column by column (small operators only)."""
        return self._dense(self.matvec, max_size)

    def inverse_to_dense(self, max_size: int = 4096) -> np.ndarray:
        """A^{-1} as a dense [P, P] numpy array (operators with `has_inverse`)."""
        return self._dense(self.solve, max_size)

    def _dense(self, apply, max_size):
        if self.size > max_size:
            raise ValueError(f"A dense form of size {self.size} > max_size {max_size}.")
        columns = []
        for k in range(self.size):
            unit = np.zeros(self.size, self.dtype.as_numpy_dtype)
            unit[k] = 1.0
            columns.append(vectors.flatten(apply(self._unflatten(unit))).numpy())
        return np.stack(columns, axis=1)

    def _unflatten(self, flat):
        sizes = [s.num_elements() for s in self.shapes]
        parts = np.split(np.asarray(flat), np.cumsum(sizes)[:-1])
        return [tf.constant(p.reshape(s.as_list()), self.dtype) for p, s in zip(parts, self.shapes)]


class FunctionOperator(LinearOperator):
    """An operator from a Python function v -> A v (A symmetric)."""

    def __init__(self, function: Callable, shapes, dtype):
        super().__init__(shapes, dtype)
        self.function = function

    def _matvec(self, vector):
        return self.function(vector)


def as_operator(operator, like: Sequence) -> LinearOperator:
    """`operator` if it is a `LinearOperator`, else a `FunctionOperator` on
    vectors shaped like `like` (a callable v -> A v)."""
    if isinstance(operator, LinearOperator):
        return operator
    if not callable(operator):
        raise TypeError(f"operator must be a LinearOperator or a callable, got "
                        f"{type(operator).__name__}.")
    like = [tf.convert_to_tensor(t) for t in like]
    if not like:
        raise ValueError("Cannot build an operator on an empty vector.")
    return FunctionOperator(operator, [t.shape for t in like], like[0].dtype)


class _Wrapper(LinearOperator):
    """An operator built on another: same shapes, dtype and inner product."""

    def __init__(self, operator: LinearOperator):
        super().__init__(operator.shapes, operator.dtype)
        self.operator = operator

    def dot(self, a, b):
        return self.operator.dot(a, b)


class DampedOperator(_Wrapper):
    """A + lambda I, lambda >= 0 (a Python number or a scalar tensor)."""

    def __init__(self, operator: LinearOperator, damping):
        super().__init__(operator)
        if isinstance(damping, (int, float)) and not damping >= 0:
            raise ValueError(f"damping must be >= 0, got {damping}.")
        self.damping = vectors.scalar(damping, operator.dtype)

    def _matvec(self, v):
        return vectors.axpy(self.damping, v, self.operator._matvec(v))

    def quadratic_form(self, vector):
        v = self.check(vector)
        return self.operator.quadratic_form(v) + self.damping * self.dot(v, v)


def _masks(mask, shapes, dtype) -> list[tf.Tensor]:
    """`mask` as tensors of `dtype`, after checking one mask per tensor, shaped like it."""
    mask = list(mask)
    if len(mask) != len(shapes):
        raise ValueError(f"{len(mask)} masks for an operator on {len(shapes)} tensors.")
    out = []
    for i, (m, shape) in enumerate(zip(mask, shapes)):
        m = tf.convert_to_tensor(m)
        if not shape.is_compatible_with(m.shape):
            raise ValueError(f"Mask {i} has shape {tuple(m.shape)}; the operator's tensor {i} "
                             f"has shape {tuple(shape)}.")
        out.append(tf.cast(m, dtype))
    return out


class MaskedOperator(_Wrapper):
    """m * A (m * v) for a 0/1 mask per tensor: A on the free coordinates only."""

    def __init__(self, operator: LinearOperator, mask):
        super().__init__(operator)
        self.mask = _masks(mask, self.shapes, operator.dtype)

    def _matvec(self, v):
        return vectors.multiply(self.mask, self.operator._matvec(vectors.multiply(self.mask, v)))

    def quadratic_form(self, vector):
        return self.operator.quadratic_form(vectors.multiply(self.mask, self.check(vector)))


class SumOperator(_Wrapper):
    """sum_k c_k A_k for operators on the same vectors and weights c_k (default 1)."""

    def __init__(self, operators: Sequence[LinearOperator], weights=None):
        operators = list(operators)
        if not operators:
            raise ValueError("SumOperator needs at least one operator.")
        super().__init__(operators[0])
        for op in operators[1:]:
            if op.shapes != operators[0].shapes or op.dtype != operators[0].dtype:
                raise ValueError("Summed operators must act on vectors of the same shapes and dtype.")
        weights = [1.0] * len(operators) if weights is None else list(weights)
        if len(weights) != len(operators):
            raise ValueError(f"{len(weights)} weights for {len(operators)} operators.")
        self.operators = operators
        self.weights = [vectors.scalar(w, self.dtype) for w in weights]

    def _matvec(self, v):
        parts = [vectors.scale(c, op._matvec(v)) for c, op in zip(self.weights, self.operators)]
        return [tf.add_n(list(ts)) for ts in zip(*parts)]

    def quadratic_form(self, vector):
        v = self.check(vector)
        return tf.add_n([c * op.quadratic_form(v) for c, op in zip(self.weights, self.operators)])


class RestrictedPreconditioner(_Wrapper):
    """A preconditioner for m A m + lambda I (A restricted to the free coordinates,
    mask m = 1) from one for A + lambda I: solve(v) = m P^{-1}(m v) + (1 - m) v / lambda.

    m P^{-1} m is a principal block of an SPD matrix, so the result is SPD; it
    is exact on the fixed coordinates (where the damped restriction is lambda I).
    """

    has_inverse = True

    def __init__(self, preconditioner: LinearOperator, mask, damping):
        super().__init__(preconditioner)
        if not preconditioner.has_inverse:
            raise TypeError(f"{type(preconditioner).__name__} has no inverse product.")
        self.mask = _masks(mask, self.shapes, self.dtype)
        self.damping = vectors.scalar(damping, self.dtype)

    def _matvec(self, v):
        raise NotImplementedError("RestrictedPreconditioner is used through solve().")

    def _solve(self, v):
        inner = vectors.multiply(self.mask, self.operator.solve(vectors.multiply(self.mask, v)))
        return [x + (1.0 - m) * t / self.damping for x, m, t in zip(inner, self.mask, v)]


class IdentityOperator(LinearOperator):
    """I: the Euclidean metric on weights (also the trivial preconditioner)."""

    has_inverse = True

    def _matvec(self, v):
        return list(v)

    def _solve(self, v):
        return list(v)


class DiagonalOperator(LinearOperator):
    """diag(d) for a positive diagonal d (a list shaped like the vectors)."""

    has_inverse = True

    def __init__(self, diagonal):
        diagonal = [tf.convert_to_tensor(d) for d in diagonal]
        super().__init__([d.shape for d in diagonal], diagonal[0].dtype)
        self.diagonal = diagonal

    def _matvec(self, v):
        return vectors.multiply(self.diagonal, v)

    def _solve(self, v):
        return [x / d for x, d in zip(v, self.diagonal)]


class MatrixOperator(LinearOperator):
    """A dense symmetric matrix [P, P] acting on vectors of the given shapes
    (small problems and tests)."""

    has_inverse = True

    def __init__(self, matrix, shapes):
        matrix = tf.convert_to_tensor(matrix)
        super().__init__(shapes, matrix.dtype)
        if tuple(matrix.shape) != (self.size, self.size):
            raise ValueError(f"matrix of shape {tuple(matrix.shape)} for vectors of size {self.size}.")
        self.matrix = matrix

    def _matvec(self, v):
        return self._unflat(tf.linalg.matvec(self.matrix, vectors.flatten(v)))

    def _solve(self, v):
        flat = tf.linalg.solve(self.matrix, vectors.flatten(v)[:, None])[:, 0]
        return self._unflat(flat)

    def _unflat(self, flat):
        sizes = [s.num_elements() for s in self.shapes]
        return [tf.reshape(p, s) for p, s in zip(tf.split(flat, sizes), self.shapes)]

"""Compute accounting by a fixed rule, in gradient-equivalents.

Methods are compared at equal compute. Timings on a shared 2-core machine
swing several-fold between calls, so budgets are not set by measured
ratios: each operation is counted by the passes it makes over a batch, in
the units of a dense layer y = W x, per example:

    forward pass              W x                          1
    JVP (tangent pass)        dW x + W dx                  2
    backward pass (VJP)       W^T g and g x^T              2

so a loss gradient (forward + backward) is 3 units, and per gradient:

    forward                         1/3
    loss gradient                   1
    quadratic form <v, g v>         1    (forward + JVP)
    metric-vector product g v       5/3  (forward + JVP + backward)

Products of the same kind on a batch of another size scale with the batch
(`batch / reference_batch`). Wall-clock ratios measured on these machines
fall on either side of the rule (g v 1.3-2.0 gradients, <v, g v> 1.0-1.3;
benchmarks/RESULTS.md); every result row also records measured wall seconds.
"""
from __future__ import annotations

import time

FORWARD, JVP, BACKWARD = 1.0, 2.0, 2.0
GRADIENT = FORWARD + BACKWARD

#: Cost of one operation on one batch, in loss gradients on the same batch.
COSTS = {
    "forward": FORWARD / GRADIENT,
    "gradient": 1.0,
    "quadratic_form": (FORWARD + JVP) / GRADIENT,
    "metric_vector_product": (FORWARD + JVP + BACKWARD) / GRADIENT,
}


def gradient_equivalents(metric_products=0.0, quadratic_forms=0.0, gradients=0.0, forwards=0.0,
                         batch: int = 1, reference_batch: int = 1) -> float:
    """Total cost of the given counts of operations on batches of `batch`
    examples, in gradients on batches of `reference_batch` examples."""
    counts = {"metric_vector_product": metric_products, "quadratic_form": quadratic_forms,
              "gradient": gradients, "forward": forwards}
    for name, count in counts.items():
        if not count >= 0:
            raise ValueError(f"{name} count must be >= 0, got {count}.")
    if batch < 1 or reference_batch < 1:
        raise ValueError(f"batch sizes must be >= 1, got {batch}, {reference_batch}.")
    units = sum(float(count) * COSTS[name] for name, count in counts.items())
    return units * batch / reference_batch


def min_seconds(fn, args=(), repeats: int = 5) -> float:
    """Fastest wall time of `fn(*args)` over `repeats` calls, after one untimed
    call (tracing, compiling); the minimum is the least noisy estimate on a
    shared machine."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")

    def run():
        out = fn(*args)
        for t in _flatten(out):
            if hasattr(t, "numpy"):
                t.numpy()  # wait for the result

    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _flatten(value):
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _flatten(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _flatten(v)
    elif value is not None:
        yield value

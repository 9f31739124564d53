"""The first-order output-preserving path from A to B: the FIP authors' practice
(Guruprasad93/FlexibleMachineLearning) as a baseline for `tfgeo.connect`.

The paper's FIP walks by solving the metric equation g dw = v with a Krylov
method (`tfgeo.connect.geodesic_walk.geodesic_path`). The authors' code instead takes plain
gradient steps on an output-distance penalty plus a pull toward the goal,
with the Bhattacharyya distance between the networks' predictions

    D(p, q) = mean_i [ -log sum_k sqrt(p_ik q_ik + eps) ],   p = softmax(f(x; w)).

Here, from w_0 = A, outer step k (k = 1..K) takes the previous point w_{k-1},
its predictions q = softmax(f(x; w_{k-1})) on fixed training inputs x, and the
anchor a_k = w_{k-1} + eta (w_B - w_{k-1}) a fraction eta of the way to B,
then runs `inner_steps` gradient steps w <- w - lr grad J(w) from w_{k-1} on

    J(w) = D(f(x; w), q) + beta ||w - a_k||^2,

and w_k is the result. To second order D(f(x; w), q) = (1/8) dw^T F dw
(F the Fisher metric on x, dw = w - w_{k-1}), so J's minimiser is
dw = eta (I + F / (8 beta))^{-1} (w_B - w_{k-1}): a damped natural-gradient
step toward B, which the inner gradient steps approximate instead of a
Krylov solve.

Knobs: `eta` is how far toward B each step aims (each step covers at most a
fraction eta of the remaining distance, so K steps leave at least
(1 - eta)^K of it); `beta` trades the pull toward B against keeping the
outputs (large: nearly the straight line, the confident networks' F being
small; small: outputs kept, slow progress in the directions that change
them); `learning_rate` and `inner_steps` are the inner solve: the pull
alone converges at rate (1 - 2 lr beta) per step, and the steps are stable
only while lr (lambda_max(F) / 4 + 2 beta) < 2 (on the digits MLPs of the
tests, lr = 2 diverges; a growing "output_distance" is the sign). The
defaults are tuned there: max test loss about 0.37 against the straight
line's 0.45.

Once ||w_B - w|| <= tolerance * ||w_B - w_A|| (or after K steps) the walk
stops; the rest to B is a straight segment, sampled with points spaced like
the walk's mean step (at most K of them: `straight_leg_points`), and the
path ends exactly at B.

Compute per outer step, on a batch of len(x) inputs: one forward pass (q)
and `inner_steps` gradients, `inner_steps + 1/3` gradients by the package's
fixed rule (a forward pass is 1/3 of a gradient).
"""
from __future__ import annotations

import math
import time

import keras
import numpy as np
import tensorflow as tf

from tfgeo import model_checks
from tfgeo.connect import paths
from tfgeo import weights as weights_lib


def bhattacharyya(logits, reference_probs, eps: float = 1e-10):
    """mean_i -log sum_k sqrt(p_ik q_ik + eps), p = softmax(logits); logits,
    reference_probs: [N, C]."""
    p = tf.nn.softmax(logits, axis=-1)
    q = tf.cast(reference_probs, p.dtype)
    return tf.reduce_mean(-tf.math.log(tf.reduce_sum(tf.sqrt(p * q + eps), axis=-1)))


def output_path(model: keras.Model, target, inputs, num_steps: int = 50,
                inner_steps: int = 40, learning_rate: float = 0.5, beta: float = 0.03,
                eta: float = 0.1, tolerance: float = 0.01, eps: float = 1e-10,
                jit_compile: bool = True) -> dict:
    """Walks `model` from its trainable weights (A) toward `target` (B) on the
    fixed training inputs `inputs` ([N, ...]); see the module docstring.

    Returns {"points": [A, w_1, ..., w_K', (straight leg), B] (lists of numpy
    arrays; exactly A first and exactly B last), "steps" (outer steps run),
    "reached" (tolerance met), "start_distance", "final_distance" (before the
    last leg), "straight_leg_points", "gradients" (steps * (inner_steps + 1/3),
    on batches of "batch" = N inputs), "output_distance" (D after each step's
    solve), "seconds"}. The model ends at B.
    """
    model_checks.check_network(model)
    for name, value in (("num_steps", num_steps), ("inner_steps", inner_steps)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    for name, value in (("learning_rate", learning_rate), ("beta", beta), ("eps", eps)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    if not 0 < eta <= 1:
        raise ValueError(f"eta must be in (0, 1], got {eta!r}.")
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}.")
    weights_lib.check_vector(model, [np.asarray(w) for w in target])
    variables = weights_lib.backing_variables(model)
    target = [np.asarray(w, dtype=v.dtype.as_numpy_dtype) for w, v in zip(target, variables)]
    goal = [tf.constant(w) for w in target]
    x = tf.convert_to_tensor(inputs)
    inner_steps = int(inner_steps)

    @tf.function(jit_compile=jit_compile)
    def outer_step(x):
        q = tf.stop_gradient(tf.nn.softmax(model(x, training=False), axis=-1))
        anchor = [tf.identity(v) + eta * (g - v) for v, g in zip(variables, goal)]
        for _ in tf.range(inner_steps):
            with tf.GradientTape() as tape:
                d = bhattacharyya(model(x, training=False), q, eps)
                pull = tf.add_n([tf.reduce_sum(tf.square(v - a))
                                 for v, a in zip(variables, anchor)])
                total = d + tf.cast(beta, d.dtype) * tf.cast(pull, d.dtype)
            grads = tape.gradient(total, variables)
            for v, g in zip(variables, grads):
                v.assign_sub(tf.cast(learning_rate, v.dtype) * g)
        return bhattacharyya(model(x, training=False), q, eps)

    began = time.time()
    points = [weights_lib.get_trainable(model)]
    start_distance = paths.distance(points[0], target)
    distance, output_distance, steps = start_distance, [], 0
    while steps < num_steps and distance > tolerance * start_distance:
        output_distance.append(float(outer_step(x)))
        points.append(weights_lib.get_trainable(model))
        distance = paths.distance(points[-1], target)
        steps += 1
    reached = distance <= tolerance * start_distance
    walked = sum(paths.distance(p, q) for p, q in zip(points, points[1:]))
    spacing = walked / steps if steps else distance
    extra = min(num_steps, max(0, math.ceil(distance / spacing) - 1)) if spacing > 0 else 0
    last = points[-1]
    points.extend(paths.interpolate(last, target, k / (extra + 1)) for k in range(1, extra + 1))
    points.append([np.array(w, copy=True) for w in target])
    weights_lib.set_trainable(model, target)
    return {"points": points, "steps": steps, "reached": reached,
            "start_distance": start_distance, "final_distance": distance,
            "straight_leg_points": extra, "gradients": steps * (inner_steps + 1.0 / 3.0),
            "batch": int(x.shape[0]), "output_distance": output_distance,
            "seconds": time.time() - began}

r"""Metrics and solves: every figure a ratio or a count measured in one run.

    python benchmarks/solvers.py --sections=products,kfac,walk,calibration,projection \
        --manual_dir=../shared/data/mnist --output=benchmarks/solvers.json

Sections:
  products     time of a metric-vector product / time of a loss gradient, for the
               logit metric and the hidden-representation metric, on every zoo
               model (batch 32; VGGs at width 1 and at the reduced width), in the
               compile mode a runner picks on this device (--compile=auto).
  kfac         accumulating K-FAC factors over a batch / a gradient on the same
               batch; the per-layer eigendecompositions / a gradient on 256 inputs.
  walk         a walk's solves (LeNet-300-100 on MNIST toward its 90%-magnitude-
               pruned copy; reduced VGG11 on CIFAR-10-shaped inputs toward its
               own): CG iterations and operator products per step to reach a true
               relative residual <= 0.1, with and without preconditioning, for the
               logit and hidden metrics.
  calibration  one solve of the metric over 2,048 MNIST inputs (LeNet-300-100, the
               linearised projection's system at 95% sparsity) to relative
               residual 1e-2: CG iterations plain / diagonal / K-FAC preconditioned.
  projection   test accuracy kept by a one-shot linearised metric projection onto
               magnitude masks at 90/95/98% (LeNet-300-100, 2,048 unlabelled
               calibration inputs) for each metric, beside layer-wise
               reconstruction on the same inputs.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("sections", ["products", "kfac", "walk", "calibration", "projection"],
                  "Sections to run.")
flags.DEFINE_list("models", ["lenet_300_100", "lenet5", "vgg11", "vgg16"], "Zoo models.")
flags.DEFINE_float("reduced_width", 0.25, "Width of the reduced VGGs.")
flags.DEFINE_integer("repeats", 5, "Timed calls per measurement (fastest kept).", lower_bound=1)
flags.DEFINE_string("manual_dir", "../shared/data/mnist", "MNIST originals (tfds manual_dir).")
flags.DEFINE_integer("walk_steps", 20, "Steps of each measured walk.", lower_bound=1)
flags.DEFINE_list("walk_models", ["lenet_300_100", "vgg11"], "Models of the walk section.")
flags.DEFINE_string("output", "", "JSON output path.")

SHAPES = {"lenet_300_100": (28, 28, 1), "lenet5": (28, 28, 1), "vgg11": (32, 32, 3),
          "vgg16": (32, 32, 3)}


def _model(name, width=1.0, seed=0):
    import keras

    from tfgeo import models

    keras.utils.set_random_seed(seed)
    options = {"width": width} if name.startswith("vgg") else {}
    return models.get(name, SHAPES[name], 10, **options)


def _batch(shape, n, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return (rng.uniform(size=(n, *shape)).astype("float32"),
            rng.integers(0, 10, size=n).astype("int32"))


def products():
    import numpy as np
    import tensorflow as tf

    from tfgeo import hidden_metric, losses, metric, weights
    from tfgeo import cost
    from tfgeo.experiments import config

    rows = []
    for name in FLAGS.models:
        widths = [1.0, FLAGS.reduced_width] if name.startswith("vgg") else [1.0]
        for width in widths:
            model = _model(name, width)
            x, y = _batch(SHAPES[name], 32)
            x, y = tf.constant(x), tf.constant(y)
            variables = weights.backing_variables(model)
            rng = np.random.default_rng(1)
            v = [tf.constant(rng.normal(size=w.shape).astype("float32")) for w in variables]
            jit = config.jit_compile("auto", model)
            loss = losses.classification_loss()

            def gradient(x, y):
                with tf.GradientTape() as tape:
                    value = loss(y, model(x, training=False))
                return tape.gradient(value, variables)

            logits_op = metric.MetricOperator(model, x, "fisher")
            hidden_op = hidden_metric.HiddenMetricOperator(model, x, None, "fisher")
            fns = {"gradient": (gradient, (x, y)),
                   "logits_gv": (lambda v: logits_op.matvec(v), (v,)),
                   "hidden_gv": (lambda v: hidden_op.matvec(v), (v,))}
            times = {}
            for key, (fn, args) in fns.items():
                compiled = tf.function(fn, jit_compile=jit)
                times[key] = cost.min_seconds(compiled, args, FLAGS.repeats)
            row = {"model": name, "width": width, "params": int(model.count_params()),
                   "mode": "xla" if jit else "graph", "gradient_ms": 1e3 * times["gradient"],
                   "logits_gv_over_gradient": times["logits_gv"] / times["gradient"],
                   "hidden_gv_over_gradient": times["hidden_gv"] / times["gradient"]}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def kfac_costs():
    import tensorflow as tf

    from tfgeo import kfac, losses, weights
    from tfgeo import cost
    from tfgeo.experiments import config

    rows = []
    for name, width in (("lenet_300_100", 1.0), ("vgg11", FLAGS.reduced_width)):
        model = _model(name, width)
        x, y = _batch(SHAPES[name], 256)
        x, y = tf.constant(x), tf.constant(y)
        jit = config.jit_compile("auto", model)
        variables = weights.backing_variables(model)
        loss = losses.classification_loss()

        def gradient(x, y):
            with tf.GradientTape() as tape:
                value = loss(y, model(x, training=False))
            return tape.gradient(value, variables)

        factors = tf.function(lambda x: kfac.factors_on_batch(
            model, x, "fisher", seed=(0, 1), spatial_samples=16), jit_compile=jit)
        f = factors(x)
        eigen = tf.function(kfac.eigendecompose)
        t_grad = cost.min_seconds(tf.function(gradient, jit_compile=jit), (x, y), FLAGS.repeats)
        t_factors = cost.min_seconds(factors, (x,), FLAGS.repeats)
        t_eigen = cost.min_seconds(eigen, (f,), FLAGS.repeats)
        row = {"model": name, "width": width, "mode": "xla" if jit else "graph",
               "gradient_ms_256": 1e3 * t_grad, "factors_over_gradient": t_factors / t_grad,
               "inverses_over_gradient_256": t_eigen / t_grad,
               "largest_factor": int(max(a.shape[0] for a in f.a + f.g))}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _mnist():
    from tfgeo.experiments import data

    return data.load_tfds("mnist", manual_dir=FLAGS.manual_dir)


def _trained_lenet(ds):
    import keras

    from tfgeo.experiments import training

    keras.utils.set_random_seed(0)
    model = _model("lenet_300_100")
    training.train_classifier(model, ds.train, None, epochs=10, batch_size=128,
                              lr_schedule="cosine", verbose=0)
    return model


def walk_solves(ds, lenet):
    import tfgeo
    from tfgeo import weights
    from tfgeo.sparsify import pruning
    from tfgeo.experiments import data

    rows = []
    cases = []
    if "lenet_300_100" in FLAGS.walk_models:
        cases.append(("lenet_300_100", lenet, ds.train))
    if "vgg11" in FLAGS.walk_models:
        vgg = _model("vgg11", FLAGS.reduced_width)
        x, y = _batch(SHAPES["vgg11"], 2048)
        cases.append(("vgg11", vgg, data.ArraySplit(x, y)))
    for name, model, split in cases:
        start = weights.get_trainable(model)
        keep = pruning.magnitude_masks(start, 0.9)
        target = pruning.apply_masks(start, keep)
        jit = tfgeo_compile(model)
        # (metric, preconditioner, CG budget, tolerance): the GeodesicModel defaults
        # (10 iterations, 1e-4) first, then solves run to a relative residual of 0.1.
        for metric, pre, budget, tol in (("logits", "none", 10, 1e-4),
                                         ("logits", "none", 500, 0.1),
                                         ("logits", "kfac", 500, 0.1),
                                         ("hidden", "none", 500, 0.1),
                                         ("hidden", "kfac", 500, 0.1)):
            weights.set_trainable(model, start)
            walker = tfgeo.GeodesicModel(model, tfgeo.TowardTarget(target, keep=keep),
                                         metric=metric, preconditioner=pre,
                                         cg_max_iterations=budget, cg_tolerance=tol)
            walker.compile(jit_compile=jit)
            batches = data.to_dataset(split, 256, shuffle=True, drop_remainder=True,
                                      repeat=True)
            began = time.time()
            max_residual = _LargestStepValue("cg_residual")
            history = walker.fit(batches, steps_per_epoch=FLAGS.walk_steps, epochs=1, verbose=0,
                                 callbacks=[max_residual])
            seconds = time.time() - began
            steps = FLAGS.walk_steps
            row = {"model": name, "metric": metric, "preconditioner": pre,
                   "cg_max_iterations": budget, "cg_tolerance": tol,
                   "cg_iterations_per_step": history.history["cg_iterations"][-1],
                   "products_per_step": float(walker.metric_products.numpy()) / steps,
                   "mean_true_residual": history.history["cg_residual"][-1],
                   "max_true_residual": max_residual.largest,
                   "failed_steps": history.history["failed_steps"][-1],
                   "seconds_per_step": seconds / steps}
            print(json.dumps(row), flush=True)
            rows.append(row)
        weights.set_trainable(model, start)
    return rows


def _LargestStepValue(key):
    """A callback holding the largest per-step value of an epoch-mean metric `key`
    (recovered from consecutive running means: v_k = k m_k - (k - 1) m_{k-1})."""
    import keras

    class Callback(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.step, self.mean, self.largest = 0, 0.0, float("-inf")

        def on_train_batch_end(self, batch, logs=None):
            mean = float(logs[key])
            self.step += 1
            value = self.step * mean - (self.step - 1) * self.mean
            self.mean, self.largest = mean, max(self.largest, value)

    return Callback()


def tfgeo_compile(model):
    from tfgeo.experiments import config

    return config.jit_compile("auto", model)


def calibration_solve(ds, lenet):
    import numpy as np
    import tensorflow as tf

    from tfgeo import diagonal_metric, kfac, krylov, linear_operator, metric, vectors
    from tfgeo.sparsify import pruning
    from tfgeo import weights

    rows = []
    start = weights.get_trainable(lenet)
    masks = pruning.magnitude_masks(start, 0.95)
    x = ds.train.x[np.random.default_rng(7).permutation(len(ds.train.y))[:2048]]
    m = [tf.constant(k) for k in masks]
    for layers in ("logits", "hidden"):
        from tfgeo import hidden_metric

        op = (metric.MetricOperator(lenet, x, "fisher", chunk_size=512) if layers == "logits"
              else hidden_metric.HiddenMetricOperator(lenet, x, None, "fisher", chunk_size=512))
        restricted = op.restricted(m)
        pruned = [tf.constant(w * (1 - k)) for w, k in zip(start, masks)]
        rhs = vectors.multiply(m, op.matvec(pruned))
        probes = [tf.constant(np.random.default_rng(s).choice([-1.0, 1.0], size=w.shape)
                              .astype("float32")) for s, w in enumerate(start)]
        lam = 1e-3 * float(op.quadratic_form(probes)) / sum(w.size for w in start)
        hidden = None if layers == "logits" else hidden_metric.representation_names(lenet)
        f = kfac.factors(lenet, x, "fisher", chunk_size=512, hidden=hidden)
        kfac_pre = linear_operator.RestrictedPreconditioner(
            kfac.KFACOperator(lenet, f, damping=lam), m, lam)
        diag = [tf.constant(d) for d in diagonal_metric.diagonal(lenet, x[:512], "fisher")]
        diag_pre = linear_operator.RestrictedPreconditioner(
            linear_operator.DiagonalOperator([d + lam for d in diag]), m, lam)
        for pre_name, pre in (("none", None), ("diagonal", diag_pre), ("kfac", kfac_pre)):
            solve = tf.function(lambda b: krylov.conjugate_gradient(
                restricted, b, damping=lam, max_iterations=3000, tolerance=1e-2,
                preconditioner=pre))
            began = time.time()
            res = solve(rhs)
            row = {"metric": layers, "preconditioner": pre_name,
                   "cg_iterations": int(res.iterations), "status": krylov.status_name(res.status),
                   "seconds": time.time() - began}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def projection_table(ds, lenet):
    import numpy as np

    from tfgeo import classification, weights
    from tfgeo.sparsify import layerwise, projection, pruning

    rows = []
    start = weights.get_trainable(lenet)
    x = ds.train.x[np.random.default_rng(7).permutation(len(ds.train.y))[:2048]]
    for sparsity in (0.9, 0.95, 0.98):
        masks = pruning.magnitude_masks(start, sparsity)
        row = {"sparsity": sparsity}
        weights.set_trainable(lenet, pruning.apply_masks(start, masks))
        row["one_shot"] = classification.evaluate_classifier(lenet, ds.test.x, ds.test.y)["accuracy"]
        weights.set_trainable(lenet, start)
        layerwise.reconstruct(lenet, masks, x, apply=True)
        row["layerwise"] = classification.evaluate_classifier(lenet, ds.test.x, ds.test.y)["accuracy"]
        for layers, output_metric in (("logits", "fisher"), ("logits", "tempered_fisher"),
                                      ("logits", "centered"), ("hidden", "fisher")):
            weights.set_trainable(lenet, start)
            projection.linear_projection(
                lenet, masks, x, None if layers == "logits" else "hidden", output_metric,
                projection.Solver(max_iterations=2000, tolerance=1e-3, jit_compile=True))
            row[f"{layers}/{output_metric}"] = classification.evaluate_classifier(
                lenet, ds.test.x, ds.test.y)["accuracy"]
        print(json.dumps(row), flush=True)
        rows.append(row)
    weights.set_trainable(lenet, start)
    return rows


def main(argv):
    del argv
    import keras
    import tensorflow as tf

    out = {"machine": {"machine": platform.machine(), "cpus": os.cpu_count(),
                       "tensorflow": tf.__version__, "keras": keras.__version__}}
    if "products" in FLAGS.sections:
        out["products"] = products()
    if "kfac" in FLAGS.sections:
        out["kfac"] = kfac_costs()
    needs_mnist = {"walk", "calibration", "projection"} & set(FLAGS.sections)
    if needs_mnist:
        ds = _mnist()
        lenet = _trained_lenet(ds)
        if "walk" in FLAGS.sections:
            out["walk"] = walk_solves(ds, lenet)
        if "calibration" in FLAGS.sections:
            out["calibration"] = calibration_solve(ds, lenet)
        if "projection" in FLAGS.sections:
            out["projection"] = projection_table(ds, lenet)
    if FLAGS.output:
        from tfgeo.experiments import results

        results.write_json(FLAGS.output, out)


if __name__ == "__main__":
    app.run(main)

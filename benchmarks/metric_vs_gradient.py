r"""Times a metric-vector product against a gradient on the same model and batch.

Prints, for each model and for eager-graph (tf.function) vs XLA
(jit_compile=True), the fastest time of
  * a loss gradient (one forward + one backward pass),
  * the metric-vector product g v (JVP + VJP, `tfgeo.metric_vector_product`),
  * the quadratic form <v, g v> (JVP only),
and the ratio g v / gradient, measured in the same run. Writes JSON.

    python benchmarks/metric_vs_gradient.py --output=benchmarks/metric_vs_gradient.json
"""
from __future__ import annotations

import json
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 256, "Examples per batch.")
flags.DEFINE_integer("repeats", 30, "Timed calls per measurement (fastest reported).")
flags.DEFINE_string("output", "", "Optional JSON output path.")
flags.DEFINE_list("models", ["mlp", "cnn"], "Which models: mlp (784-300-100-10), cnn (LeNet-5-like).")


def build(name):
    import keras

    if name == "mlp":
        from tfgeo import models

        return models.get("lenet_300_100", (28, 28, 1), 10), (28, 28, 1)
    if name == "cnn":
        return keras.Sequential([
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(6, 5, activation="relu", padding="same"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(16, 5, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(120, activation="relu"),
            keras.layers.Dense(84, activation="relu"),
            keras.layers.Dense(10),
        ]), (28, 28, 1)
    raise ValueError(f"unknown model {name!r}")


def _time(fn, args, repeats):
    from tfgeo import cost

    return cost.min_seconds(fn, args, repeats)


def main(argv):
    del argv
    import keras
    import tensorflow as tf

    from tfgeo import metric
    from tfgeo import weights as weights_lib

    rows = []
    for name in FLAGS.models:
        keras.utils.set_random_seed(0)
        model, shape = build(name)
        x = tf.random.normal([FLAGS.batch_size, *shape])
        y = tf.random.uniform([FLAGS.batch_size], 0, 10, dtype=tf.int32)
        v = [tf.random.normal(w.shape) for w in model.trainable_variables]
        variables = weights_lib.backing_variables(model)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        n_params = sum(int(tf.size(w)) for w in variables)

        def gradient(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=False))
            return tape.gradient(loss, variables)

        def gv(x, v):
            return metric.metric_vector_product(model, x, v, "fisher")

        def quad(x, v):
            return metric.metric_quadratic_form(model, x, v, "fisher")

        for jit in (False, True):
            t_grad = _time(tf.function(gradient, jit_compile=jit), (x, y), FLAGS.repeats)
            t_gv = _time(tf.function(gv, jit_compile=jit), (x, v), FLAGS.repeats)
            t_q = _time(tf.function(quad, jit_compile=jit), (x, v), FLAGS.repeats)
            rows.append({
                "model": name, "params": n_params, "batch": FLAGS.batch_size, "xla": jit,
                "gradient_ms": 1e3 * t_grad, "gv_ms": 1e3 * t_gv, "vgv_ms": 1e3 * t_q,
                "gv_over_gradient": t_gv / t_grad, "vgv_over_gradient": t_q / t_grad,
            })
            r = rows[-1]
            print(f"{name:4s} xla={jit!s:5s} params={n_params:7d} grad={r['gradient_ms']:7.2f}ms "
                  f"gv={r['gv_ms']:7.2f}ms vgv={r['vgv_ms']:7.2f}ms "
                  f"gv/grad={r['gv_over_gradient']:.2f} vgv/grad={r['vgv_over_gradient']:.2f}",
                  flush=True)
    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "tensorflow": tf.__version__, "keras": keras.__version__}
    print(json.dumps(meta))
    if FLAGS.output:
        from tfgeo.experiments import results

        results.write_json(FLAGS.output, {"meta": meta, "rows": rows})


if __name__ == "__main__":
    app.run(main)

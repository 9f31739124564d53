r"""Benchmark suite: every figure a ratio measured side by side in one run.

    python benchmarks/suite.py --sections=products,step,memory,scaling \
        --output=benchmarks/suite.json

Sections:
  products  metric-vector product time / gradient time per zoo model, graph
            and XLA; also the two slower ways the design avoids, on the small
            models: a Jacobian-materialising product (J from
            GradientTape.jacobian, then J^T M J v) and the double-backward
            Gauss-Newton product (J v by differentiating a VJP, no JVP).
  step      one geodesic step with k CG iterations / one SGD step (same model,
            batch, compile mode), k in {5, 10, 20}; XLA vs graph step time.
  memory    peak memory of a metric-vector product / of a gradient: peak
            bytes of TensorFlow's (BFC) CPU allocator during one call above
            what was allocated before it, each in a fresh subprocess.
  scaling   g v time as the MLP parameter count grows (1e4..1e7) and as the
            batch grows; log-log fitted exponents.
Prints a table per section; --output writes all rows and the machine as JSON.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("sections", ["products", "step", "memory", "scaling"], "Sections to run.")
flags.DEFINE_list("models", ["lenet_300_100", "lenet5", "vgg11", "vgg16"], "Zoo models.")
flags.DEFINE_integer("batch_size", 32, "Batch for products, steps and memory.", lower_bound=1)
flags.DEFINE_integer("repeats", 5, "Timed calls per measurement (median).", lower_bound=1)
flags.DEFINE_string("output", "", "JSON output path.")
flags.DEFINE_string("memory_probe", "", "Internal: run one memory probe 'model:kind:jit'.")

SHAPES = {"lenet_300_100": (28, 28, 1), "lenet5": (28, 28, 1), "vgg11": (32, 32, 3),
          "vgg16": (32, 32, 3), "mlp": (28, 28, 1)}
SMALL = ("lenet_300_100", "lenet5")


def _setup(name, batch, hidden=None):
    import keras
    import numpy as np
    import tensorflow as tf

    from tfgeo import models
    from tfgeo import weights as weights_lib

    keras.utils.set_random_seed(0)
    options = {"hidden": hidden} if hidden else {}
    model = models.get(name, SHAPES[name], 10, **options)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(size=(batch, *SHAPES[name])).astype("float32"))
    y = tf.constant(rng.integers(0, 10, size=batch).astype("int32"))
    v = [tf.constant(rng.normal(size=w.shape).astype("float32")) for w in model.trainable_variables]
    return model, x, y, v, weights_lib.backing_variables(model)


def _functions(model, variables):
    import keras
    import tensorflow as tf

    from tfgeo import metric
    from tfgeo import output_metrics

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    fisher = output_metrics.get("fisher")

    def gradient(x, y, v):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=False))
        return tape.gradient(loss, variables)

    def product(x, y, v):
        return metric.metric_vector_product(model, x, v, "fisher")

    def jacobian_product(x, y, v):
        with tf.GradientTape() as tape:
            out = model(x, training=False)
        jac = tape.jacobian(out, variables, experimental_use_pfor=True)  # [N, C, *w]
        n, c = out.shape
        flat = [tf.reshape(j, (n, c, -1)) for j in jac]
        jv = tf.add_n([tf.einsum("ncp,p->nc", j, tf.reshape(t, (-1,))) for j, t in zip(flat, v)])
        mjv = fisher.apply(out, jv) / tf.cast(n, out.dtype)
        return [tf.reshape(tf.einsum("ncp,nc->p", j, mjv), t.shape) for j, t in zip(flat, v)]

    def double_backward_product(x, y, v):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as tape:
                out = model(x, training=False)
            dummy = tf.zeros_like(out)
            outer.watch(dummy)
            with tf.GradientTape() as inner:
                inner.watch(dummy)
                vjp = tape.gradient(out, variables, output_gradients=dummy)
                inner_product = tf.add_n([tf.reduce_sum(a * b) for a, b in zip(vjp, v)])
            jv = inner.gradient(inner_product, dummy)
        mjv = fisher.apply(out, jv) / tf.cast(tf.shape(out)[0], out.dtype)
        with tf.GradientTape() as again:
            out2 = model(x, training=False)
        return again.gradient(out2, variables, output_gradients=mjv)

    return {"gradient": gradient, "gv": product, "gv_jacobian": jacobian_product,
            "gv_double_backward": double_backward_product}


def _time(fn, args, jit):
    import tensorflow as tf

    from tfgeo import cost

    return cost.min_seconds(tf.function(fn, jit_compile=jit), args, FLAGS.repeats)


def products():
    rows = []
    for name in FLAGS.models:
        model, x, y, v, variables = _setup(name, FLAGS.batch_size)
        fns = _functions(model, variables)
        for jit in (False, True):
            t = {k: _time(f, (x, y, v), jit) for k, f in fns.items()
                 if k in ("gradient", "gv") or name in SMALL}
            row = {"model": name, "params": int(sum(int(w.shape.num_elements()) for w in variables)),
                   "xla": jit, "gradient_ms": 1e3 * t["gradient"],
                   "gv_over_gradient": t["gv"] / t["gradient"]}
            for k in ("gv_jacobian", "gv_double_backward"):
                if k in t:
                    row[f"{k}_over_gradient"] = t[k] / t["gradient"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def step():
    import keras
    import tensorflow as tf

    from tfgeo import geodesic_model
    from tfgeo import objectives

    rows = []
    for name in FLAGS.models:
        for jit in (False, True):
            model, x, y, v, variables = _setup(name, FLAGS.batch_size)
            sgd = keras.optimizers.SGD(1e-3)
            loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

            def sgd_step(x, y):
                with tf.GradientTape() as tape:
                    loss = loss_fn(y, model(x, training=True))
                grads = tape.gradient(loss, model.trainable_variables)
                sgd.apply(grads, model.trainable_variables)
                return loss

            t_sgd = _time(sgd_step, (x, y), jit)
            row = {"model": name, "xla": jit, "sgd_step_ms": 1e3 * t_sgd}
            for k in (5, 10, 20):
                # Tolerance 0 with the unrolled loop: exactly k CG iterations.
                walker = geodesic_model.GeodesicModel(
                    model, objectives.TaskLossDescent(), step_size=1e-3, cg_max_iterations=k,
                    cg_tolerance=0.0, unroll_cg=True)
                walker.compile()
                t_geo = _time(lambda x, y: walker.train_step((x, y))["cosine"], (x, y), jit)
                row[f"geodesic_k{k}_ms"] = 1e3 * t_geo
                row[f"geodesic_k{k}_over_sgd"] = t_geo / t_sgd
            rows.append(row)
            print(json.dumps(row), flush=True)
    by = {(r["model"], r["xla"]): r for r in rows}
    for name in FLAGS.models:
        for k in (5, 10, 20):
            by[(name, True)][f"geodesic_k{k}_xla_over_graph"] = (
                by[(name, True)][f"geodesic_k{k}_ms"] / by[(name, False)][f"geodesic_k{k}_ms"])
    return rows


def memory_probe(spec):
    """In a fresh process (BFC allocator on the CPU, so TensorFlow tracks its
    memory): peak allocator bytes of one call above what was allocated before it."""
    name, kind, jit = spec.split(":")
    model, x, y, v, variables = _setup(name, FLAGS.batch_size)
    fn = _functions(model, variables)[kind]
    import tensorflow as tf

    compiled = tf.function(fn, jit_compile=jit == "1")
    for t in tf.nest.flatten(compiled(x, y, v)):  # trace and compile outside the measurement
        t.numpy()
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    for t in tf.nest.flatten(compiled(x, y, v)):
        t.numpy()
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    print(json.dumps({"resident_mb": before / 2 ** 20, "extra_mb": (peak - before) / 2 ** 20}))


def memory():
    rows = []
    for name in FLAGS.models:
        for jit in ("0", "1"):
            extra = {}
            for kind in ("gradient", "gv"):
                out = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), f"--memory_probe={name}:{kind}:{jit}",
                     f"--batch_size={FLAGS.batch_size}"],
                    capture_output=True, text=True,
                    env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CPU_ALLOCATOR_USE_BFC="true"))
                extra[kind] = json.loads(out.stdout.strip().splitlines()[-1])["extra_mb"]
            row = {"model": name, "xla": jit == "1", "gradient_extra_mb": extra["gradient"],
                   "gv_extra_mb": extra["gv"],
                   "gv_over_gradient": extra["gv"] / max(extra["gradient"], 1e-9)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def _slope(xs, ys):
    import numpy as np

    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def scaling():
    import tensorflow as tf

    rows = []
    widths = [12, 120, 1200, 4000]  # 784-w-w-10 MLPs: ~1e4 .. ~1.9e7 parameters
    params, times = [], []
    for w in widths:
        model, x, y, v, variables = _setup("mlp", FLAGS.batch_size, hidden=(w, w))
        fns = _functions(model, variables)
        t = _time(fns["gv"], (x, y, v), True)
        n = int(sum(int(a.shape.num_elements()) for a in variables))
        params.append(n)
        times.append(t)
        rows.append({"vary": "params", "params": n, "batch": FLAGS.batch_size, "gv_ms": 1e3 * t})
        print(json.dumps(rows[-1]), flush=True)
    batches, btimes = [16, 64, 256, 1024], []
    for b in batches:
        model, x, y, v, variables = _setup("lenet_300_100", b)
        t = _time(_functions(model, variables)["gv"], (x, y, v), True)
        btimes.append(t)
        rows.append({"vary": "batch", "params": 266610, "batch": b, "gv_ms": 1e3 * t})
        print(json.dumps(rows[-1]), flush=True)
    rows.append({"vary": "fit", "params_exponent": _slope(params, times),
                 "batch_exponent": _slope(batches, btimes)})
    print(json.dumps(rows[-1]), flush=True)
    del tf
    return rows


def main(argv):
    del argv
    if FLAGS.memory_probe:
        return memory_probe(FLAGS.memory_probe)
    import keras
    import tensorflow as tf

    from tfgeo.experiments import results

    sections = {"products": products, "step": step, "memory": memory, "scaling": scaling}
    out = {"machine": {"processor": platform.processor() or platform.machine(),
                       "cpus": os.cpu_count(), "tensorflow": tf.__version__,
                       "keras": keras.__version__},
           "batch_size": FLAGS.batch_size, "repeats": FLAGS.repeats}
    for name in FLAGS.sections:
        if name not in sections:
            sys.exit(f"FATAL --sections: unknown section {name!r}; expected {sorted(sections)}")
        rows = sections[name]()
        out[name] = rows
        columns = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("model", "xla", "vary"), k))
        print(f"\n== {name} ==")
        print(results.format_table(rows, columns, floatfmt="{:.3f}"))
        if FLAGS.output:
            results.write_json(FLAGS.output, out)


if __name__ == "__main__":
    app.run(main)

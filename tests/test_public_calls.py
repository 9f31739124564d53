"""The three applications' library calls, as a Keras user calls them: a fresh
process imports `tfgeo`, runs `tfgeo.sparsify.prune`, `tfgeo.continual.ContinualLearner`
and `tfgeo.connect.find_path` on a small Keras model of its own (not from the
zoo) on synthetic data, and never imports the experiment harness or its
dependencies (tensorflow_datasets, matplotlib, scikit-learn) beyond what
`import tensorflow, keras` imports by itself."""
import json
import os
import subprocess
import sys

import pytest

from tests.runner_process import ROOT

SCRIPT = r'''
import json, sys
import numpy as np
import keras
import tensorflow
# Keras itself imports matplotlib (keras.src.visualization) and TensorFlow may import
# scikit-learn where they are installed: only what tfgeo adds to these counts.
baseline = set(sys.modules)
import tfgeo

rng = np.random.default_rng(0)
centres = rng.normal(size=(4, 10)) * 2.0
def blobs(n, classes):
    y = rng.integers(0, len(classes), n)
    x = (centres[np.asarray(classes)[y]] + rng.normal(size=(n, 10))).astype("float32")
    return x, y.astype("int32")

def user_model(seed):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((10,))
    h = keras.layers.Dense(24, activation="gelu", name="encode")(inp)
    h = keras.layers.Dropout(0.1)(h)
    out = keras.layers.Dense(4, name="logits")(h)
    return keras.Model(inp, out)

out = {}
x, y = blobs(1024, [0, 1, 2, 3])
xt, yt = blobs(512, [0, 1, 2, 3])

# 1. Sparsification: label-free, in place.
net = user_model(0)
net.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"])
net.fit(x, y, epochs=10, batch_size=64, verbose=0)
out["dense_accuracy"] = float(net.evaluate(xt, yt, verbose=0)[1])
report = tfgeo.sparsify.prune(net, x[:512], sparsity=[0.5, 0.8], steps=4, verbose=0)
out["prune_sparsity"] = [s["measured_sparsity"] for s in report.stages]
out["pruned_accuracy"] = float(net.evaluate(xt, yt, verbose=0)[1])

# 2. Continual learning: two tasks, a memory of 100 rows.
xa, ya = blobs(600, [0, 1]); xb, yb = blobs(600, [2, 3])
learner = tfgeo.continual.ContinualLearner(user_model(1), method="der", memory_size=100,
                                           epochs=3, batch_size=32, learning_rate=3e-3)
learner.learn(xa, ya)
out["task_a_after_a"] = learner.evaluate(xa, ya)
learner.learn(xb, yb)
out["task_a_after_b"] = learner.evaluate(xa, ya)
out["task_b_after_b"] = learner.evaluate(xb, yb)

# 3. Connecting optima: two networks trained from two seeds.
ends = []
for seed in (2, 3):
    m = user_model(seed)
    m.compile(keras.optimizers.Adam(1e-2),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    m.fit(x, y, epochs=8, batch_size=64, verbose=0)
    ends.append(m)
path = tfgeo.connect.find_path(ends[0], ends[1], x, y, method="bezier", budget=60,
                               num_points=9, verbose=0)
scores = path.evaluate(xt, yt)
out["path_points"] = len(path.points)
out["barrier"] = scores["barrier"]
out["path_ge"] = path.gradient_equivalents
out["ends_match"] = bool(np.allclose(path.model_at(0.0)(xt[:32]), ends[0](xt[:32]), atol=1e-5)
                         and np.allclose(path.model_at(1.0)(xt[:32]), ends[1](xt[:32]), atol=1e-5))

out["harness_imported"] = sorted(m for m in set(sys.modules) - baseline if m.startswith((
    "tfgeo.experiments", "tfgeo.models", "tfgeo.runners", "tensorflow_datasets", "matplotlib",
    "sklearn")))
print("RESULT " + json.dumps(out))
'''


@pytest.fixture(scope="module")
def result():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                          text=True, timeout=900,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_the_library_never_imports_the_harness_or_its_dependencies(result):
    assert result["harness_imported"] == []


def test_prune_reaches_each_stage_exactly_and_keeps_the_function(result):
    assert result["prune_sparsity"] == pytest.approx([0.5, 0.8], abs=1e-3)
    assert result["dense_accuracy"] > 0.8
    assert result["pruned_accuracy"] > result["dense_accuracy"] - 0.05


def test_the_continual_learner_learns_both_tasks_and_remembers_the_first(result):
    assert result["task_a_after_a"] > 0.8 and result["task_b_after_b"] > 0.8
    assert result["task_a_after_b"] > 0.6  # DER's memory keeps task A well above chance


def test_find_path_runs_from_a_to_b_within_its_budget(result):
    assert result["path_points"] == 9 and result["ends_match"]
    assert result["barrier"] == result["barrier"] and result["barrier"] < 5.0  # finite
    # 60 gradient-equivalents on batches of 128 = 60 curve steps on batches of 128.
    assert result["path_ge"] == pytest.approx(60.0)

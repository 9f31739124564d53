"""Bad input, tried as a hostile user would: one line naming the culprit, a non-zero
exit, no traceback, and nothing written to the output folder."""
import os
import signal
import subprocess
import sys
import time

import keras
import pytest

from tests.runner_process import ROOT
from tests.runner_process import fails_cleanly
from tests.runner_process import run_module
from tests.runner_process import run_named_cases
from tests.runner_process import runner_env



BAD_VALUES = [
    ("runners.sparsify", ["--seed=-1"], "--seed"),
    ("runners.sparsify", ["--damping=nan"], "--damping"),
    ("runners.sparsify", ["--finetune_learning_rate=inf"], "--finetune_learning_rate"),
    ("runners.sparsify", ["--methods=geodesic,geodesic"], "--methods"),
    ("runners.sparsify", ["--calibration_size=0"], "--calibration_size"),
    ("runners.sparsify", ["--hidden="], "--hidden"),
    ("runners.sparsify", ["--metric=hidden:nope"], "--metric"),
    ("runners.train", ["--learning_rate=1e30"], "--learning_rate"),
    ("runners.train", ["--seed=-1"], "--seed"),
    ("runners.walk", ["--step_size=inf"], "--step_size"),
    ("runners.walk", ["--step_size=1e30"], "--step_size"),
    ("runners.walk", ["--metric_batch=100000000"], "--metric_batch"),
    ("runners.walk", ["--logical_cpus=100000"], "--logical_cpus"),
    ("runners.continual", ["--learning_rate=inf"], "--learning_rate"),
    ("runners.continual", ["--num_tasks=1000000"], "--num_tasks"),
    ("runners.connect", ["--damping=inf"], "--damping"),
    # Seeds numpy cannot take (the studies derive seed * 1000 + offset from them).
    ("runners.train", ["--seed=1180591620717411303424"], "--seed"),
    ("runners.walk", ["--seed=4294967296"], "--seed"),
    ("runners.walk", ["--sparsity=0"], "--sparsity"),
    # A metric naming a layer the walk's network lacks acts, or is refused: never ignored.
    ("runners.walk", ["--metric=hidden:nosuchlayer"], "--metric"),
    ("runners.connect", ["--seed_a=3", "--seed_b=3"], "--seed_a"),
]
START_MODELS = {"text": "cannot be loaded", "truncated": "cannot be loaded",
                "folder": "is not a file", "softmax": "softmax"}


def _bad_models(root):
    text = root / "notes.keras"
    text.write_text("not a model")
    truncated = root / "truncated.keras"
    keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                      keras.layers.Dense(10)]).save(str(root / "good.keras"))
    truncated.write_bytes((root / "good.keras").read_bytes()[:200])
    softmax = root / "softmax.keras"
    keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                      keras.layers.Dense(10, activation="softmax")]).save(str(softmax))
    other = root / "other.keras"
    keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(7),
                      keras.layers.Dense(10)]).save(str(other))
    return {"text": str(text), "truncated": str(truncated), "folder": str(root),
            "softmax": str(softmax), "other": str(other)}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every case of this module that fails before heavy work, run together
    (one process per runner: tests/runner_cases.py), as {name: (outcome, out)}."""
    root = tmp_path_factory.mktemp("bad_input")
    models = _bad_models(tmp_path_factory.mktemp("models"))
    cases, outs = {}, {}

    def add(name, module, *args):
        outs[name] = str(root / name / "out")
        cases[name] = (module, [*args, f"--output_dir={outs[name]}"])

    for i, (module, args, _) in enumerate(BAD_VALUES):
        add(f"value{i}", module, *args)
    for kind in START_MODELS:
        add(f"start_{kind}", "runners.sparsify", f"--start_model={models[kind]}")
    add("architecture", "runners.connect", f"--model_a={models['other']}", "--hidden=64")
    for content in ("empty", "garbage"):
        manual = root / f"manual_{content}"
        manual.mkdir()
        if content == "garbage":
            for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
                (manual / name).write_bytes(b"garbage")
        add(f"manual_{content}", "runners.train", "--dataset=mnist", f"--manual_dir={manual}",
            f"--data_dir={root / f'tfds_{content}'}")
    for i, content in enumerate([b"PK\x03\x04truncated", b"\x93NUMPY random bytes"]):
        os.makedirs(root / f"checkpoint{i}" / "out")
        (root / f"checkpoint{i}" / "out" / "state.npz").write_bytes(content)
        add(f"checkpoint{i}", "runners.train", "--epochs=2")
    got = run_named_cases(cases)
    return {name: (got[name], outs[name]) for name in got}


@pytest.mark.parametrize("case", range(len(BAD_VALUES)),
                         ids=[f"{m.split('.')[1]}{a[0].split('=')[0]}" for m, a, _ in BAD_VALUES])
def test_bad_values_name_the_flag(case, outcomes):
    proc, out = outcomes[f"value{case}"]
    fails_cleanly(proc, BAD_VALUES[case][2], out)


def test_empty_output_dir_is_named(tmp_path):
    # A real process: what the shell sees (exit status, no traceback).
    proc = run_module("runners.train", "--output_dir=")
    assert proc.returncode != 0 and "--output_dir" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("kind", list(START_MODELS))
def test_unusable_start_models_are_named(kind, outcomes):
    proc, out = outcomes[f"start_{kind}"]
    fails_cleanly(proc, "--start_model", out)
    assert START_MODELS[kind] in proc.stderr
    if kind != "folder":  # refused at flag parsing, before any log line
        assert "Sparsity schedule" in proc.stderr  # the log is captured: what is absent is absent


def test_connect_checks_the_architecture_before_training(outcomes):
    proc, out = outcomes["architecture"]
    fails_cleanly(proc, "--model_a", out)
    assert "Training endpoint" not in proc.stderr + proc.stdout  # refused before any work


@pytest.mark.parametrize("content", ["empty", "garbage"])
def test_a_manual_dir_without_the_originals_fails_fast(content, outcomes):
    proc, out = outcomes[f"manual_{content}"]
    fails_cleanly(proc, "--dataset=mnist", out)
    assert ("lacks" if content == "empty" else "bytes") in proc.stderr


@pytest.mark.parametrize("case", [0, 1])
def test_a_broken_checkpoint_is_named(case, outcomes):
    proc, _ = outcomes[f"checkpoint{case}"]
    assert proc.returncode != 0 and "--output_dir" in proc.stderr and "unreadable" in proc.stderr
    assert "Traceback" not in proc.stderr


# The real runner, with one training input set to inf: the loss becomes NaN on any
# CPU (a large learning rate only diverges on some: Adam's steps are bounded).
_POISONED_TRAIN = """
import sys
import numpy as np
from tfgeo.experiments import data
load = data.load_run_splits
def poisoned(*args, **kwargs):
    ds, train, validation = load(*args, **kwargs)
    x = np.array(train.x, copy=True)
    x[0] = np.inf
    return ds, type(train)(x, train.y), validation
data.load_run_splits = poisoned
from tfgeo.runners import train
sys.argv = ["train"] + sys.argv[1:]
train.entry()
"""


def test_a_diverging_run_writes_no_result(tmp_path):
    out = str(tmp_path / "out")
    env = runner_env()
    proc = subprocess.run([sys.executable, "-c", _POISONED_TRAIN, "--epochs=2",
                           f"--output_dir={out}"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    fails_cleanly(proc, "diverged", out)


def test_ctrl_c_ends_with_one_line(tmp_path):
    out = str(tmp_path / "out")
    env = runner_env()
    # The runner gets the SIGINT disposition a terminal's foreground process has,
    # whatever the test process passes on (a process that starts with SIGINT
    # ignored gets no KeyboardInterrupt handler from Python).
    proc = subprocess.Popen([sys.executable, "-m", "runners.train", "--epochs=100000",
                             f"--output_dir={out}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # The first epoch's checkpoint: training is under way (state.json alone is
    # written before the data load).
    checkpoint = os.path.join(out, "state.npz")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not os.path.exists(checkpoint):
        time.sleep(0.2)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # never leave a 100,000-epoch run behind
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    # The whole stderr on failure: it failed once inside the full suite with a
    # traceback that pytest's summary cut (2026-12-04), and never alone.
    assert "Interrupted; rerun with the same flags" in err and "Traceback" not in err, err[-4000:]


_INTERRUPTS = r"""
import dataclasses, signal, sys, time
from runners import common
from tfgeo.experiments import config as config_lib

common.Interrupts.install()


class Finaliser:
    def __del__(self):  # the interrupt lands in a finaliser, which swallows it
        signal.raise_signal(signal.SIGINT)


try:
    Finaliser()
    time.sleep(20)
    print("swallowed", flush=True)
except KeyboardInterrupt:
    print("delivered again", flush=True)


@dataclasses.dataclass
class Config:
    run: config_lib.RunConfig = config_lib.nested(config_lib.RunConfig)


def run(config):
    try:
        signal.raise_signal(signal.SIGINT)
    finally:  # a cleanup that fails on the way out replaces the KeyboardInterrupt
        raise RuntimeError("the cleanup failed")


sys.argv = ["runner", "--output_dir=" + sys.argv[1]]
common.runner(Config, run)()
"""


def test_an_interrupt_swallowed_or_replaced_on_the_way_out_still_ends_in_one_line(tmp_path):
    # The full suite twice printed a traceback on Ctrl-C (test_ctrl_c_ends_with_one_line,
    # 2026-12-02 and 12-04; never alone): these are the two ways it can.
    # A terminal's SIGINT disposition, as above: a suite started in the background
    # (`cmd &`, nohup) passes SIGINT on ignored, and the raised signals were lost.
    proc = subprocess.run([sys.executable, "-c", _INTERRUPTS, str(tmp_path / "out")], cwd=ROOT,
                          env=runner_env(), capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout.split() == ["delivered", "again"], proc.stdout + proc.stderr[-3000:]
    assert proc.returncode != 0
    assert "Interrupted; rerun with the same flags" in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, \
        proc.stderr[-3000:]


@pytest.mark.parametrize("script", ["tfgeo-walk", "tfgeo-sparsify"])
def test_console_scripts_list_their_flags_in_help(script):
    path = os.path.join(os.path.dirname(sys.executable), script)
    if not os.path.exists(path):
        pytest.skip(f"{script} is not installed beside {sys.executable}")
    proc = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=300,
                          env=runner_env())
    text = proc.stdout + proc.stderr
    assert "--output_dir" in text and "--seed" in text, text[-2000:]


@pytest.mark.parametrize("how", ["module", "console script"])
def test_runners_start_without_tensorflow_start_up_noise(how, tmp_path):
    # A bad flag: the runner imports TensorFlow, validates, exits. Without the
    # user's TF_CPP_MIN_LOG_LEVEL, TensorFlow's C++ start-up lines (CPU
    # features here; failed CUDA probes on GPU wheels) must not show.
    env = {k: v for k, v in runner_env().items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if how == "module":
        command = [sys.executable, "-m", "runners.walk"]
    else:
        command = [os.path.join(os.path.dirname(sys.executable), "tfgeo-walk")]
        if not os.path.exists(command[0]):
            pytest.skip(f"tfgeo-walk is not installed beside {sys.executable}")
    proc = subprocess.run([*command, "--steps=0", f"--output_dir={tmp_path}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "--steps" in proc.stderr
    noise = [line for line in proc.stderr.splitlines()
             if line.startswith(("I0000", "W0000", "E0000")) or "cpu_feature_guard" in line]
    assert not noise, noise

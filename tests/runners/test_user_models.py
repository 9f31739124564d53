"""The runners on users' own saved models (tests/user_models.py): each runs a
shortened study from `--start_model` (`--model_a`/`--model_b`) or refuses the
model in one line; nothing is silently wrong (issue: users' own Keras models).
The cases of one runner share one process (tests/runner_cases.py)."""
import os

import keras
import numpy as np
import pytest

import tfgeo
from tests import user_models
from tests.runner_process import fails_cleanly
from tests.runner_process import read_results
from tests.runner_process import run_cases
from tests.runner_process import run_named_cases
from tfgeo.experiments import data

SPARSIFY = ["functional_gelu_dropout", "cnn_batch_norm", "residual_layer_norm", "subclassed",
            "separable_depthwise", "attention", "gru_unrolled", "shared_layer", "frozen_layer"]
CONNECT = ["functional_gelu_dropout", "subclassed", "frozen_layer"]
# Two BatchNorm networks trained apart hold other statistics: refused in one line.
CONNECT_REFUSED = ["cnn_batch_norm"]
REFUSED = [n for n in user_models.REFUSED if n != "dict_outputs"]  # _DictNet is not saved
SHORT_SPARSIFY = ("--sparsities=0.7", "--methods=one_shot,layerwise,geodesic",
                  "--projection_steps=2", "--calibration_size=256")
CONTINUAL = ["functional_gelu_dropout", "subclassed"]  # split digits: 2 heads x 5 classes
SHORT_CONTINUAL = ("--methods=naive,geodesic", "--epochs=1", "--geodesic_steps=20")
# The models whose layers XLA could refuse run the runners' default compile mode
# (auto: XLA for these); the rest run in graph mode, as the library tests run
# every model: an XLA compile costs ~10 s of CPU per model and runner.
XLA = {"functional_gelu_dropout", "attention", "gru_unrolled"}
SHORT_CONNECT = ("--methods=geodesic,straight", "--eval_points=3", "--relax_iterations=10",
                 "--noalign")


def _save(model, path):
    model.save(path)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("user_models")
    digits = data.load_digits(flat=False)
    saved, cases, outs = {}, {}, {}
    for name in sorted(set(SPARSIFY) | set(CONNECT) | set(CONNECT_REFUSED)):
        for seed in ((0, 1, 2) if name == "frozen_layer"
                     else (0, 1) if name in CONNECT + CONNECT_REFUSED else (0,)):
            model = user_models.build(name, seed)
            if name == "frozen_layer" and seed == 1:  # B shares A's frozen layer (seed 2: not)
                model.get_layer("frozen").set_weights(
                    keras.saving.load_model(saved[name, 0]).get_layer("frozen").get_weights())
            model.compile("adam", tfgeo.losses.classification_loss())
            model.fit(digits.train.x, digits.train.y, epochs=2, batch_size=64, verbose=0)
            saved[name, seed] = _save(model, str(root / f"{name}_{seed}.keras"))
    for name in REFUSED:
        saved[name, 0] = _save(user_models.build(name), str(root / f"{name}.keras"))
    for name in SPARSIFY + REFUSED:
        outs["sparsify", name] = str(root / "sparsify" / name)
        cases["sparsify", name] = ("runners.sparsify", [
            f"--start_model={saved[name, 0]}", f"--output_dir={outs['sparsify', name]}",
            *SHORT_SPARSIFY])
    for name in CONNECT + CONNECT_REFUSED:
        outs["connect", name] = str(root / "connect" / name)
        cases["connect", name] = ("runners.connect", [
            f"--model_a={saved[name, 0]}", f"--model_b={saved[name, 1]}",
            f"--output_dir={outs['connect', name]}", *SHORT_CONNECT])
    outs["connect", "frozen_differs"] = str(root / "connect" / "frozen_differs")
    cases["connect", "frozen_differs"] = ("runners.connect", [
        f"--model_a={saved['frozen_layer', 0]}", f"--model_b={saved['frozen_layer', 2]}",
        f"--output_dir={outs['connect', 'frozen_differs']}", *SHORT_CONNECT])
    for name in CONTINUAL:
        outs["continual", name] = str(root / "continual" / name)
        cases["continual", name] = ("runners.continual", [
            f"--start_model={saved[name, 0]}", f"--output_dir={outs['continual', name]}",
            *SHORT_CONTINUAL])
    for (runner, name), (module, args) in cases.items():
        args.append("--imports=tests.user_models")  # the subclassed model's class registers
        if name not in XLA:
            args.append("--compile=graph")
    got = run_named_cases(cases)
    return {key: (got[key], outs[key], saved) for key in cases}


def _fixed(path):
    return [np.array(v) for v in keras.saving.load_model(path).non_trainable_weights]


@pytest.mark.parametrize("name", SPARSIFY)
def test_sparsify_prunes_a_users_model_from_start_model(name, runs):
    proc, out, saved = runs["sparsify", name]
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = read_results(out)
    rows = {r["method"]: r for r in res["rows"] if r["stage"] == 1}
    assert set(rows) == {"one_shot", "layerwise", "geodesic"}
    for row in rows.values():
        assert row["measured_sparsity"] == pytest.approx(0.7, abs=1e-3) and row["mask_respected"]
    assert os.path.basename(saved[name, 0]) in res["title"]  # the user's model, not a zoo name
    # Frozen weights and BatchNorm statistics come through untouched.
    for a, b in zip(_fixed(saved[name, 0]), _fixed(os.path.join(out, "geodesic.keras"))):
        np.testing.assert_array_equal(a, b)
    assert rows["geodesic"]["functional_distance"] < rows["one_shot"]["functional_distance"]


@pytest.mark.parametrize("name", REFUSED)
def test_sparsify_refuses_unsupported_models_in_one_line(name, runs):
    proc, out, _ = runs["sparsify", name]
    fails_cleanly(proc, "--start_model", out)
    assert user_models.REFUSED[name][1] in proc.stderr


@pytest.mark.parametrize("name", CONNECT)
def test_connect_joins_two_users_models(name, runs):
    proc, out, saved = runs["connect", name]
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = read_results(out)
    assert set(res["paths"]) == {"geodesic A->B", "straight A->B"}
    for path in res["paths"].values():
        assert np.isfinite(path["barrier"])
    assert os.path.basename(saved[name, 0]) in res["title"]


def test_connect_refuses_endpoints_whose_frozen_layers_differ(runs):
    proc, out, _ = runs["connect", "frozen_differs"]
    fails_cleanly(proc, "non-trainable weights", out)


def test_a_subclassed_model_needs_its_class_imported(tmp_path, runs):
    _, _, saved = runs["sparsify", "subclassed"]
    proc = run_cases("runners.sparsify", [[f"--start_model={saved['subclassed', 0]}",
                                           f"--output_dir={tmp_path}", *SHORT_SPARSIFY],
                                          ["--imports=no_such_module",
                                           f"--output_dir={tmp_path / 'b'}"]])
    # In the runner process the class is unknown until --imports names its module.
    assert proc[0].returncode != 0 and "--start_model" in proc[0].stderr
    assert "Could not locate class 'SubNet'; name the module" in proc[0].stderr
    assert "--imports" in proc[0].stderr
    assert proc[1].returncode != 0 and "--imports=no_such_module" in proc[1].stderr


@pytest.mark.parametrize("name", CONTINUAL)
def test_continual_learns_from_a_users_start_model(name, runs):
    proc, out, saved = runs["continual", name]
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = read_results(out)
    assert set(res["methods"]) == {"naive", "geodesic"}
    for r in res["methods"].values():
        assert np.array(r["R"]).shape == (2, 2) and 0.0 <= r["average_accuracy"] <= 1.0
    assert os.path.basename(saved[name, 0]) in res["title"]


@pytest.mark.parametrize("name", CONNECT_REFUSED)
def test_connect_refuses_batch_norm_endpoints_trained_apart(name, runs):
    proc, out, _ = runs["connect", name]
    fails_cleanly(proc, "non-trainable weights", out)

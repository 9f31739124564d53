"""Result files: atomic, with the user's umask, and never NaN or Inf."""
import json
import os
import stat

import keras
import numpy as np
import pytest

from tfgeo.experiments import plotting
from tfgeo.experiments import results


def test_json_is_written_atomically_with_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = results.write_json(str(tmp_path / "r.json"), {"a": [1.5, {"b": 2}]})
    finally:
        os.umask(old)
    assert json.load(open(path)) == {"a": [1.5, {"b": 2}]}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


@pytest.mark.parametrize("bad,where", [(float("nan"), "rows[1].loss"), (float("inf"), "rows[1].loss")])
def test_non_finite_results_are_refused_naming_the_entry(tmp_path, bad, where):
    payload = {"rows": [{"loss": 1.0}, {"loss": bad}]}
    with pytest.raises(results.NonFiniteError, match=where.replace("[", r"\[").replace("]", r"\]")):
        results.write_json(str(tmp_path / "r.json"), payload)
    assert not os.listdir(tmp_path)  # nothing written, not even a temporary file
    with pytest.raises(results.NonFiniteError, match="w/0"):
        results.write_arrays(str(tmp_path / "a.npz"), {"w/0": np.array([1.0, np.inf])})


def test_a_model_with_nan_weights_is_not_saved(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    weights = model.get_weights()
    weights[0][0, 0] = np.nan
    model.set_weights(weights)
    with pytest.raises(results.NonFiniteError, match="NaN or Inf"):
        results.save_model(model, str(tmp_path / "m.keras"))
    assert not os.listdir(tmp_path)


def test_table_and_report(tmp_path, capsys):
    drawn = []
    report = results.Report("title", {"x": 1}, [{"a": 0.5, "b": "s"}], ["a", "b"], "caption",
                            plots={"p.png": lambda path: drawn.append(path)})
    results.write_report(str(tmp_path), report, {"seed": 3})
    out = capsys.readouterr().out
    assert "title: caption" in out and "0.5000" in out
    assert json.load(open(tmp_path / "results.json")) == {"title": "title", "config": {"seed": 3},
                                                          "x": 1}
    assert drawn == [str(tmp_path / "p.png")]


def test_models_and_plots_are_written_with_the_umask(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    old = os.umask(0o027)
    try:
        saved = results.save_model(model, str(tmp_path / "m.keras"))
        plot = plotting.line_plot(str(tmp_path / "p.png"), {"a": ([0, 1], [0, 1])}, "x", "y")
    finally:
        os.umask(old)
    for path in (saved, plot):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640, path
    assert keras.saving.load_model(saved).count_params() == model.count_params()


def test_a_run_trained_with_an_infinite_learning_rate_writes_nothing(tmp_path):
    # The guard where results and models are written, fed what an infinite
    # learning rate makes (the runners refuse such flags before this point).
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype("float32"), rng.integers(0, 3, 64)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(keras.optimizers.SGD(learning_rate=float("inf")),
                  "sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=2, verbose=0)
    assert not np.isfinite(history.history["loss"][-1])
    with pytest.raises(results.NonFiniteError):
        results.save_model(model, str(tmp_path / "m.keras"))
    with pytest.raises(results.NonFiniteError, match="loss"):
        results.write_json(str(tmp_path / "r.json"), {"loss": history.history["loss"][-1]})
    assert not os.listdir(tmp_path)


def test_an_infinite_step_size_is_refused_before_any_step():
    import tfgeo

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    target = [np.zeros(w.shape, "float32") for w in model.trainable_variables]
    for bad in (float("inf"), float("nan"), -1.0, 0.0):
        with pytest.raises(ValueError, match="step_size"):
            tfgeo.GeodesicModel(model, tfgeo.TowardTarget(target), step_size=bad)

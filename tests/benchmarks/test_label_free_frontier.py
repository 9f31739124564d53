"""benchmarks/label_free_frontier.py counts compute as the runner does: the same
gradient-equivalents per stage for the same network, calibration inputs and
settings (issue: the label-free frontier)."""
import json
import subprocess
import sys

import pytest

from tests.runner_process import ROOT
from tests.runner_process import runner_env

_BOTH = r"""
import importlib.util, json, sys
import keras
from tfgeo.experiments import config as config_lib
from tfgeo.experiments import data
from tfgeo.experiments import sparsify_experiment as study
from tfgeo.models import registry

out, start_path = sys.argv[1], sys.argv[2]
keras.utils.set_random_seed(0)
digits = data.load_digits(flat=False)
start = registry.get("mlp", digits.input_shape, digits.num_classes, hidden=(32,))
start.compile("adam", "sparse_categorical_crossentropy")
start.fit(digits.train.x, digits.train.y, epochs=3, verbose=0)
start.save(start_path)
config = study.SparsifyConfig(
    run=config_lib.RunConfig(output_dir=out, verbose=0),
    start_model=start_path, sparsities=(0.5, 0.8), methods=("geodesic", "distill"),
    calibration_size=256, projection_steps=2, distill_steps=20, distill_held_out_checks=4,
    distill_schedule="restarts")
runner = study.run(config).payload["rows"]
spec = importlib.util.spec_from_file_location("frontier", "benchmarks/label_free_frontier.py")
frontier = importlib.util.module_from_spec(spec)
spec.loader.exec_module(frontier)
_, train, validation = data.load_run_splits(config.data, 0)
calibration = study.calibration_set(train, 256, 0)
model = keras.saving.load_model(start_path)
points = {}
# distill: the runner's default rate candidates, so both count the rate probes, and
# early stopping with 4 held-out checks (cosine cycles between them), so both count
# the checks; the runner's default quarter of its 20 steps before the last stage is
# the script's "5:20".
for method, kw in (("geodesic", {"steps": 2}),
                   ("distill", {"distill": ((5, 20), (1e-2, 3e-3), 4, "restarts")})):
    points[method] = frontier.run_point(model, model.get_weights(), calibration, [0.5, 0.8],
                                        method, method, kw, {"validation": validation})
print(json.dumps({"runner": runner, "frontier": points}))
"""


def test_the_frontier_counts_gradient_equivalents_as_the_runner_does(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _BOTH, str(tmp_path / "run"),
                           str(tmp_path / "start.keras")], cwd=ROOT, env=runner_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for method in ("geodesic", "distill"):
        runner = sorted((r for r in got["runner"] if r["method"] == method),
                        key=lambda r: r["stage"])
        points = got["frontier"][method]
        assert [r["sparsity"] for r in runner] == [p["sparsity"] for p in points] == [0.5, 0.8]
        for r, p in zip(runner, points):
            assert p["stage_gradient_equivalents"] == pytest.approx(r["gradient_equivalents"],
                                                                     rel=1e-9), method
        assert points[-1]["gradient_equivalents"] == pytest.approx(
            sum(r["gradient_equivalents"] for r in runner), rel=1e-9)
    first, last = (p["stage_gradient_equivalents"] for p in got["frontier"]["distill"])
    assert first < last  # 5 steps, then 20
    # Both chose the distillation's rate by the probes and stopped it early, and record
    # both.
    for key in ("learning_rate", "best_step"):
        assert all(key in p for p in got["frontier"]["distill"])
        assert all(key in r for r in got["runner"] if r["method"] == "distill")
    # The projection has no randomness: the same networks, the same distances.
    for r, p in zip([r for r in got["runner"] if r["method"] == "geodesic"],
                    got["frontier"]["geodesic"]):
        assert p["functional_distance"] == pytest.approx(r["functional_distance"], rel=1e-3)


_CONFIGURATIONS = r"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("frontier", "benchmarks/label_free_frontier.py")
frontier = importlib.util.module_from_spec(spec)
spec.loader.exec_module(frontier)
frontier.FLAGS(["label_free_frontier"] + sys.argv[1:])
print(json.dumps([(name, method, kw.get("distill"), frontier.family(name))
                  for name, method, kw in frontier.configurations()]))
"""


def _configurations(*flags) -> list:
    """[name, method, distill settings or None, family] of every configuration the
    script runs under `flags`. In a subprocess: the script defines absl flags, as
    other benchmark scripts do, and two in one process collide."""
    proc = subprocess.run([sys.executable, "-c", _CONFIGURATIONS, *flags], cwd=ROOT,
                          env=runner_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_early_stopped_distillation_is_its_own_line_on_the_frontier():
    distill = [(name, settings, fam) for name, method, settings, fam in _configurations(
        "--starts=mask", "--geodesic_steps=", "--distill_steps=1000", "--distill_rates=1e-2+3e-3",
        "--held_out_checks=0,4", "--distill_schedules=cosine,restarts") if method == "distill"]
    # The names without early stopping or restarts are those of rows already recorded.
    head, rates = "distill/mask/steps=1000/lr=0.01+0.003/fisher", [1e-2, 3e-3]
    assert distill == [
        (head, [1000, rates, 0, "cosine"], "distill from mask"),
        (f"{head}/restarts", [1000, rates, 0, "restarts"], "distill from mask (restarts)"),
        (f"{head}/stop=4", [1000, rates, 4, "cosine"], "distill from mask, stopped early"),
        (f"{head}/stop=4/restarts", [1000, rates, 4, "restarts"],
         "distill from mask, stopped early (restarts)")]


@pytest.mark.parametrize("flag,baselines", [("--baselines", ["layerwise", "magnitude"]),
                                            ("--nobaselines", [])])
def test_baselines_run_first_unless_left_out(flag, baselines):
    names = [name for name, *_ in _configurations(
        flag, "--starts=mask", "--geodesic_steps=", "--distill_steps=1000",
        "--distill_rates=3e-3")]
    assert names == baselines + ["distill/mask/steps=1000/lr=0.003/fisher"]


def test_per_stage_step_counts_name_their_configuration_stage_by_stage():
    distill = [(name, settings[0]) for name, method, settings, _ in _configurations(
        "--starts=mask", "--geodesic_steps=", "--distill_steps=1000,250:4000",
        "--distill_rates=3e-3", "--nobaselines")]
    assert distill == [("distill/mask/steps=1000/lr=0.003/fisher", 1000),
                       ("distill/mask/steps=250:4000/lr=0.003/fisher", [250, 4000])]

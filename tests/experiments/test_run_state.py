"""Resumable run state: round trip, refusal on other flags or replaced inputs, atomic
files, damaged or non-finite checkpoints."""
import dataclasses
import json
import os

import numpy as np
import pytest

from tfgeo.experiments import config as config_lib
from tfgeo.experiments import run_state


def test_round_trip_and_resume(tmp_path):
    out = str(tmp_path / "run")
    state = run_state.RunState(out, {"seed": 1, "sizes": (1, 2)})
    assert state.completed == 0 and state.payload == {} and state.arrays == {}
    weights = [np.arange(6.0).reshape(2, 3), np.ones(3, np.float32)]
    state.save(2, {"rows": [{"a": 1.5}]}, run_state.pack_weights("m", weights))
    again = run_state.RunState(out, {"seed": 1, "sizes": [1, 2], "resume": False})
    assert again.completed == 2 and again.payload == {"rows": [{"a": 1.5}]}
    back = run_state.unpack_weights("m", again.arrays)
    assert len(back) == 2 and all(np.array_equal(a, b) for a, b in zip(back, weights))
    assert back[1].dtype == np.float32
    assert not [f for f in os.listdir(out) if f.startswith(".tmp-")]


def test_other_flags_are_refused_naming_them(tmp_path):
    out = str(tmp_path)
    run_state.RunState(out, {"seed": 1, "lr": 0.1}).save(1, {}, {})
    with pytest.raises(ValueError, match="--lr"):
        run_state.RunState(out, {"seed": 1, "lr": 0.2})
    fresh = run_state.RunState(out, {"seed": 1, "lr": 0.2}, resume=False)
    assert fresh.completed == 0


@dataclasses.dataclass
class _Inputs:
    start_model: str | None = config_lib.option(None, "A file.", path="file")
    image_folder: str | None = config_lib.option(None, "A folder.", path="exists")
    seed: int = config_lib.option(0, "Seed.")


def test_a_replaced_input_file_or_folder_is_refused_naming_it(tmp_path):
    start, folder = tmp_path / "start.keras", tmp_path / "images"
    start.write_bytes(b"network one")
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "1.png").write_bytes(b"image")
    config = _Inputs(str(start), str(folder))
    out = str(tmp_path / "run")
    run_state.RunState(out, config_lib.identity(config)).save(1, {}, {})
    assert run_state.RunState(out, config_lib.identity(config)).completed == 1
    start.write_bytes(b"network two")  # same name, other network
    with pytest.raises(ValueError, match="the content of --start_model"):
        run_state.RunState(out, config_lib.identity(config))
    start.write_bytes(b"network one")
    (folder / "a" / "1.png").write_bytes(b"other image")
    with pytest.raises(ValueError, match="the content of --image_folder"):
        run_state.RunState(out, config_lib.identity(config))


def test_noresume_that_cannot_delete_an_old_file_says_so_in_one_line(tmp_path, monkeypatch):
    out = str(tmp_path)
    state = run_state.RunState(out, {"seed": 1})
    with open(state.artifact("model.keras"), "w") as f:
        f.write("x")

    def refuse(path):
        raise PermissionError(1, "Operation not permitted", path)

    monkeypatch.setattr(os, "unlink", refuse)
    with pytest.raises(ValueError, match=r"cannot delete .*model.keras.*not permitted"):
        run_state.RunState(out, {"seed": 2}, resume=False)


def test_a_checkpoint_with_non_finite_weights_is_refused_naming_the_file(tmp_path):
    out = str(tmp_path)
    weights = [np.ones((2, 2), np.float32), np.array([1.0, 2.0], np.float32)]
    run_state.RunState(out, {"seed": 1}).save(1, {}, run_state.pack_weights("model", weights))
    # The package never writes NaN (results.write_arrays refuses it): a file
    # damaged or made elsewhere.
    path = os.path.join(out, run_state.STATE_ARRAYS)
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["model/1"][1] = np.nan
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"state.npz holds non-finite values \(model/1\)"):
        run_state.RunState(out, {"seed": 1})


def test_resuming_rewrites_a_damaged_readable_copy(tmp_path):
    out = str(tmp_path)
    run_state.RunState(out, {"seed": 1}).save(3, {"rows": [1]}, {})
    path = os.path.join(out, run_state.STATE_JSON)
    with open(path, "w") as f:
        f.write('{"flags": {"se')
    assert run_state.RunState(out, {"seed": 1}).completed == 3
    with open(path) as f:
        assert json.load(f)["completed"] == 3

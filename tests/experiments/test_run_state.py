"""Resumable run state: round trip, refusal on other flags, atomic files."""
import os

import numpy as np
import pytest

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

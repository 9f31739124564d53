"""Resumable runs: a run's progress checkpointed in its output folder.

A long run is a sequence of units (stages, tasks, path points). After each
unit, `RunState.save` writes the JSON payload and the arrays atomically
(temporary file, then rename), so a run killed at any moment leaves the last
completed unit on disk, never a half-written file. Rerun with the same
flags, `RunState` hands that unit back and the run continues from it; with
different flags it refuses, naming the flags that differ, rather than mixing
two experiments in one folder.
"""
from __future__ import annotations

import json
import os

import numpy as np

from tfgeo import results

STATE_JSON = "state.json"
STATE_ARRAYS = "state.npz"
_META = "__meta__"


class RunState:
    """Progress of one run in `output_dir`.

    Attributes after construction:
      completed: number of completed units (0 for a fresh run).
      payload: the JSON-serialisable dict saved with the last unit.
      arrays: {name: np.ndarray} saved with the last unit.
    """

    def __init__(self, output_dir: str, flags: dict, resume: bool = True):
        self.output_dir = output_dir
        # Through JSON, so tuples and lists (and saved and live flags) compare equal.
        self.flags = json.loads(json.dumps(
            {k: v for k, v in flags.items() if k != "resume"}, sort_keys=True, default=float))
        self.completed, self.payload, self.arrays = 0, {}, {}
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, STATE_ARRAYS)
        if not (resume and os.path.exists(path)):
            return
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files}
        saved = json.loads(str(arrays.pop(_META)))
        differ = sorted(k for k in set(saved["flags"]) | set(self.flags)
                        if saved["flags"].get(k) != self.flags.get(k))
        if differ:
            raise ValueError(
                f"{output_dir} holds a run with other flags ({', '.join('--' + k for k in differ)}); "
                "use another --output_dir, the same flags, or --noresume to start over.")
        self.completed, self.payload, self.arrays = int(saved["completed"]), saved["payload"], arrays

    def save(self, completed: int, payload: dict, arrays: dict) -> None:
        """Records `completed` units in one atomic file (the arrays with the
        JSON inside, so they cannot disagree), plus a readable JSON copy."""
        meta = {"flags": self.flags, "completed": int(completed), "payload": payload}
        text = json.dumps(meta, sort_keys=True, default=float)
        results.write_arrays(os.path.join(self.output_dir, STATE_ARRAYS),
                             {**arrays, _META: np.array(text)})
        results.write_json(os.path.join(self.output_dir, STATE_JSON), json.loads(text))
        self.completed, self.payload, self.arrays = int(completed), payload, dict(arrays)


def pack_weights(prefix: str, weights) -> dict:
    """{f'{prefix}/{i}': w_i} for saving a list of arrays in `RunState.arrays`."""
    return {f"{prefix}/{i}": np.asarray(w) for i, w in enumerate(weights)}


def unpack_weights(prefix: str, arrays: dict) -> list:
    n = sum(1 for k in arrays if k.startswith(prefix + "/"))
    return [arrays[f"{prefix}/{i}"] for i in range(n)]

"""Resumable runs: a run's progress and files, checkpointed in its output folder.

A long run is a sequence of units (stages, tasks, epochs). After each unit,
`RunState.save` writes the JSON payload and the arrays atomically (temporary
file, then rename), so a run killed at any moment leaves the last completed
unit on disk, never a half-written file. Rerun with the same flags,
`RunState` hands that unit back and the run continues from it.

The state is written as soon as a run starts, with its flags, and every file
the run makes that a later run might reuse (a trained start network, a
training backup) is registered with `artifact`. So:
* with other flags and `resume`, the folder is refused, naming the flags that
  differ, rather than mixing two experiments;
* without `resume`, the earlier run's registered files are deleted (and the
  deletion logged) before anything is made, so nothing made under other
  flags is reused;
* `reusable(name)` is true only for a file registered under these flags.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
from absl import logging

from . import config as config_lib
from . import results

STATE_JSON = "state.json"
STATE_ARRAYS = "state.npz"
_META = "__meta__"


def _normalise(flags: dict) -> dict:
    # Through JSON, so tuples and lists (and saved and live flags) compare equal.
    return json.loads(json.dumps({k: v for k, v in flags.items() if k != "resume"},
                                 sort_keys=True, default=str))


def _describe(key: str) -> str:
    if key.endswith(config_lib.CONTENT):
        return f"the content of --{key[:-len(config_lib.CONTENT)]}"
    return "--" + key


class RunState:
    """Progress of one run in `output_dir`.

    Attributes after construction:
      completed: number of completed units (0 for a fresh run).
      payload: the JSON-serialisable dict saved with the last unit.
      arrays: {name: np.ndarray} saved with the last unit.
      discarded: files of an earlier run deleted because `resume` was False.
    """

    def __init__(self, output_dir: str, flags: dict, resume: bool = True):
        self.output_dir = output_dir
        self.flags = _normalise(flags)
        self.completed, self.payload, self.arrays = 0, {}, {}
        self.artifacts: list[str] = []
        self.discarded: list[str] = []
        os.makedirs(output_dir, exist_ok=True)
        saved = self._load()
        if saved is not None and resume:
            differ = sorted(k for k in set(saved["flags"]) | set(self.flags)
                            if saved["flags"].get(k) != self.flags.get(k))
            if differ:
                raise ValueError(
                    f"{output_dir} holds a run with other flags or inputs "
                    f"({', '.join(map(_describe, differ))}); use another --output_dir, the "
                    "same flags and inputs, or --noresume to discard it and start over.")
            self.completed, self.payload = int(saved["completed"]), saved["payload"]
            self.arrays, self.artifacts = saved["arrays"], list(saved.get("artifacts", []))
            self._write_json()  # the readable copy may have been damaged; the arrays were not
            return
        if saved is not None:
            self._discard(saved.get("artifacts", []))
        self._write()

    def _load(self):
        path = os.path.join(self.output_dir, STATE_ARRAYS)
        if not os.path.exists(path):
            return None
        try:
            with np.load(path) as npz:
                arrays = {k: npz[k] for k in npz.files}
            saved = json.loads(str(arrays.pop(_META)))
            saved["flags"], saved["completed"], saved["payload"]  # noqa: B018 - keys must exist
        except Exception as e:  # noqa: BLE001 - any failure means an unusable checkpoint
            first = str(e).splitlines()[0] if str(e) else ""
            raise ValueError(
                f"{path} is unreadable ({type(e).__name__}: {first}); remove it, use another "
                "--output_dir, or --noresume to start over.") from None
        for key, array in arrays.items():
            if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
                raise ValueError(
                    f"{path} holds non-finite values ({key}); remove it, use another "
                    "--output_dir, or --noresume to start over.")
        saved["arrays"] = arrays
        return saved

    def _discard(self, artifacts):
        for name in artifacts:
            path = os.path.join(self.output_dir, name)
            try:
                if os.path.isdir(path):
                    shutil.rmtree(path)
                elif os.path.exists(path):
                    os.unlink(path)
                else:
                    continue
            except OSError as e:
                raise ValueError(f"--noresume cannot delete {path} of the earlier run "
                                 f"({e.strerror or type(e).__name__}); delete it by hand or "
                                 "use another --output_dir.") from None
            self.discarded.append(name)
        if self.discarded:
            logging.warning("--noresume: deleted %s of the earlier run in %s.",
                            ", ".join(self.discarded), self.output_dir)

    def _meta(self) -> str:
        meta = {"flags": self.flags, "completed": self.completed, "payload": self.payload,
                "artifacts": self.artifacts}
        return json.dumps(meta, sort_keys=True, default=float)

    def _write(self):
        text = self._meta()
        results.write_arrays(os.path.join(self.output_dir, STATE_ARRAYS),
                             {**self.arrays, _META: np.array(text)})
        self._write_json(text)

    def _write_json(self, text: str | None = None):
        results.write_json(os.path.join(self.output_dir, STATE_JSON),
                           json.loads(text or self._meta()))

    def save(self, completed: int, payload: dict, arrays: dict) -> None:
        """Records `completed` units in one atomic file (the arrays with the
        JSON inside, so they cannot disagree), plus a readable JSON copy."""
        self.completed, self.payload, self.arrays = int(completed), payload, dict(arrays)
        self._write()

    def artifact(self, name: str) -> str:
        """Registers `name` (a file or folder in the output folder) as made by
        this run, and returns its path."""
        if name not in self.artifacts:
            self.artifacts.append(name)
            self._write()
        return os.path.join(self.output_dir, name)

    def reusable(self, name: str) -> bool:
        """Whether `name` exists and was made by this run (these flags)."""
        return name in self.artifacts and os.path.exists(os.path.join(self.output_dir, name))


def open_run(config) -> RunState:
    """The `RunState` of a run config (its `run.output_dir`, the flags that
    define it, `run.resume`); a folder it cannot use is an input error."""
    try:
        return RunState(config.run.output_dir, config_lib.identity(config), config.run.resume)
    except ValueError as e:
        raise config_lib.InputError(f"--output_dir: {e}") from None


def pack_weights(prefix: str, weights) -> dict:
    """{f'{prefix}/{i}': w_i} for saving a list of arrays in `RunState.arrays`."""
    return {f"{prefix}/{i}": np.asarray(w) for i, w in enumerate(weights)}


def unpack_weights(prefix: str, arrays: dict) -> list:
    n = sum(1 for k in arrays if k.startswith(prefix + "/"))
    return [arrays[f"{prefix}/{i}"] for i in range(n)]

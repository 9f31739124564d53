"""Result files and console tables: written atomically, never with NaN or Inf.

Every file a run writes (JSON results, arrays, models, plots) goes through
`atomic_write`: a temporary file in the destination folder, renamed into
place, so a crash never leaves a half-written file. JSON results, arrays and
models are first checked to be finite (`NonFiniteError` names the first bad
entry), so a diverged run can never leave NaN or Inf behind as a result.
"""
from __future__ import annotations

import json
import math
import os
import tempfile

import numpy as np


class NonFiniteError(ValueError):
    """A result or a model to be written holds NaN or Inf."""


def writable_directory(path: str) -> bool:
    """True if `path` is, or can be created as, a directory we may write to."""
    if not path:
        return False
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str, write, suffix: str = "") -> str:
    """Calls `write(tmp_path)` on a temporary file in `path`'s folder, then
    `os.replace`s it onto `path` with the permissions the user's umask gives a
    new file: a crash never leaves a half-written file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 is for the temporary file only
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def first_non_finite(value, where: str = "") -> str | None:
    """The path (e.g. "rows[3].test_loss") of the first NaN or Inf in a JSON-like value."""
    if isinstance(value, dict):
        for k, v in value.items():
            found = first_non_finite(v, f"{where}.{k}" if where else str(k))
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = first_non_finite(v, f"{where}[{i}]")
            if found is not None:
                return found
    elif isinstance(value, (float, np.floating)) and not math.isfinite(float(value)):
        return where or "(the value)"
    elif isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.isfinite(value).all():
        return where or "(the array)"
    return None


def write_json(path: str, payload: dict) -> str:
    """Writes JSON atomically; refuses NaN or Inf (`NonFiniteError`)."""
    bad = first_non_finite(payload)
    if bad is not None:
        raise NonFiniteError(f"{os.path.basename(path)} would hold NaN or Inf at {bad}: the run "
                             "diverged (e.g. a learning rate or step size too large); not written.")

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=True, default=_json_default, allow_nan=False)
            f.write("\n")

    return atomic_write(path, write, ".json")


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return float(value)


def format_table(rows: list[dict], columns: list[str], floatfmt: str = "{:.4f}") -> str:
    """A fixed-width text table of `columns` from `rows` (dicts)."""

    def cell(v):
        return floatfmt.format(v) if isinstance(v, float) else str(v)

    cells = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.rjust(w) for c, w in zip(columns, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(out)


def write_arrays(path: str, arrays: dict) -> str:
    """`np.savez` atomically; refuses NaN or Inf in floating arrays (`NonFiniteError`)."""
    for name, a in arrays.items():
        a = np.asarray(a)
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise NonFiniteError(f"{os.path.basename(path)} would hold NaN or Inf in {name}: the "
                                 "run diverged; not written.")

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    return atomic_write(path, write, ".npz")


def save_model(model, path: str) -> str:
    """`model.save` atomically; refuses a model with NaN or Inf weights (`NonFiniteError`)."""
    for w in model.weights:
        value = np.asarray(w.numpy() if hasattr(w, "numpy") else w)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise NonFiniteError(f"{os.path.basename(path)}: weight {getattr(w, 'path', w.name)} "
                                 "holds NaN or Inf (the run diverged); not written.")
    return atomic_write(path, model.save, ".keras")


class Report:
    """What a run shows a person: results.json's payload, a table and plots.

    Args:
      title: one line naming the run (model, data).
      payload: the results (JSON-serialisable, finite).
      table: rows (dicts) of the summary table, with `columns` to show.
      caption: printed above the table.
      plots: {file name: draw(path) -> path} for PNGs in the output folder.
    """

    def __init__(self, title: str, payload: dict, table: list, columns: list, caption: str = "",
                 plots: dict | None = None):
        self.title, self.payload = title, payload
        self.table, self.columns, self.caption = table, columns, caption
        self.plots = dict(plots or {})


def write_report(output_dir: str, report: Report, config: dict | None = None,
                 echo: bool = True) -> str:
    """Writes results.json (the config beside the payload) and the plots into
    `output_dir`; prints the caption and table when `echo`. Returns the JSON path."""
    path = write_json(os.path.join(output_dir, "results.json"),
                      {"title": report.title, "config": config or {}, **report.payload})
    for name, draw in report.plots.items():
        draw(os.path.join(output_dir, name))
    if echo and report.table:
        print(f"{report.title}: {report.caption}" if report.caption else report.title)
        print(format_table(report.table, report.columns))
    return path

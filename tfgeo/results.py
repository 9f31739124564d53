"""Result files and console tables: written atomically, with the run's flags."""
from __future__ import annotations

import json
import os
import tempfile


def writable_directory(path: str) -> bool:
    """True if `path` is, or can be created as, a directory we may write to."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def atomic_write(path: str, write, suffix: str = "") -> str:
    """Calls `write(tmp_path)` on a temporary file in `path`'s folder, then
    `os.replace`s it onto `path`: a crash never leaves a half-written file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str, payload: dict) -> str:
    """Writes JSON atomically (`atomic_write`)."""

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=True, default=float)
            f.write("\n")

    return atomic_write(path, write, ".json")


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
    """`np.savez` atomically (`atomic_write`)."""
    import numpy as np

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    return atomic_write(path, write, ".npz")


def save_model(model, path: str) -> str:
    """`model.save` atomically (`atomic_write`)."""
    return atomic_write(path, model.save, ".keras")

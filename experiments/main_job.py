"""The main job (the README's first command) and its recorded table.

The main job prunes a network trained on scikit-learn's bundled digits,
label-free, with the package's methods side by side: one-shot magnitude
pruning, layer-wise reconstruction, label-free distillation (the default,
chosen on the label-free frontier) and the geodesic projection, at three
sparsities (`runners.sparsify` with `FLAGS`). Its table in
docs/install.md is not typed by hand: `record` writes it from the run's
results.json (`python -m tfgeo.experiments.main_job runs/main`), and
tests/experiments/test_main_job.py reruns the job and compares.
"""
from __future__ import annotations

import json
import os
import re

#: The runner and flags of the main job (README, Set-up: the first command).
MODULE = "runners.sparsify"
FLAGS = ("--methods=one_shot,layerwise,distill,geodesic", "--sparsities=0.8,0.9,0.95")
METHODS = ("one_shot", "layerwise", "distill", "geodesic")
_BEGIN, _END = "<!-- main-job:begin -->", "<!-- main-job:end -->"
_NAMES = {"dense": "trained network (dense)", "one_shot": "one-shot magnitude pruning",
          "layerwise": "layer-wise reconstruction", "distill": "label-free distillation",
          "geodesic": "geodesic projection"}


def accuracies(results: dict) -> dict:
    """{(method, sparsity %): test accuracy %} of a sparsify run's results.json
    (the dense network at sparsity 0)."""
    return {(r["method"], round(100 * r["sparsity"], 1)): 100 * r["test_accuracy"]
            for r in results["rows"] if r["method"] in ("dense",) + METHODS}


def table(results: dict) -> str:
    """The markdown table: one row per method, test accuracy (%) per sparsity,
    and the most gradient-equivalents the method spent on one stage."""
    acc = accuracies(results)
    sparsities = sorted({s for m, s in acc if m != "dense"})
    ge = {}
    for r in results["rows"]:
        ge.setdefault(r["method"], []).append(r.get("gradient_equivalents", 0.0))
    head = ["method"] + [f"{s:g}%" for s in sparsities] + ["GE per stage (at most)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    dense = acc[("dense", 0.0)]
    lines.append(f"| {_NAMES['dense']} | " + " | ".join(f"{dense:.2f}" for _ in sparsities)
                 + " | 0 |")
    for m in METHODS:
        cells = [f"{acc[(m, s)]:.2f}" for s in sparsities]
        lines.append(f"| {_NAMES[m]} | " + " | ".join(cells)
                     + f" | {max(ge[m]):,.0f} |")
    return "\n".join(lines)


def recorded(markdown: str) -> dict:
    """{(method, sparsity %): accuracy %} read back from the table in `markdown`."""
    block = markdown.split(_BEGIN, 1)[1].split(_END, 1)[0]
    rows = [line for line in block.splitlines() if line.startswith("|")]
    sparsities = [float(c.rstrip("%")) for c in _cells(rows[0])[1:-1]]
    names = {v: k for k, v in _NAMES.items()}
    out = {}
    for line in rows[2:]:
        cells = _cells(line)
        method = names[cells[0]]
        if method == "dense":
            out[("dense", 0.0)] = float(cells[1])
            continue
        for s, c in zip(sparsities, cells[1:-1]):
            out[(method, s)] = float(c)
    return out


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def record(output_dir: str, docs_path: str) -> str:
    """Writes the table of the run in `output_dir` between the main-job markers
    of `docs_path`; returns the table."""
    with open(os.path.join(output_dir, "results.json")) as f:
        results = json.load(f)
    text = open(docs_path).read()
    if _BEGIN not in text or _END not in text:
        raise ValueError(f"{docs_path} has no {_BEGIN} ... {_END} block.")
    new = table(results)
    text = re.sub(re.escape(_BEGIN) + ".*?" + re.escape(_END),
                  lambda _: f"{_BEGIN}\n{new}\n{_END}", text, flags=re.S)
    with open(docs_path, "w") as f:
        f.write(text)
    return new


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m tfgeo.experiments.main_job OUTPUT_DIR  (the main job's folder)")
    docs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                        "install.md")
    print(record(sys.argv[1], docs))

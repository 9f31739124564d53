r"""The label-free frontier's configurations over seeds: mean and spread.

    python benchmarks/frontier_seeds.py runs/frontier/lenet_300_100.json \
        runs/frontier/lenet_300_100_seed1.json runs/frontier/lenet_300_100_seed2.json

Reads the rows `benchmarks/label_free_frontier.py` wrote for several seeds
(each its own start network, split, calibration draw and stages), keeps the
configurations every file holds, and prints a Markdown table: for each
configuration and sparsity, the mean test accuracy with its range over the
seeds (min-max), the mean validation accuracy and the mean cumulative
gradient-equivalents (the geodesic's vary with its CG iterations). Also
counts, per sparsity, on how many seeds each configuration's validation
accuracy beats each other's.
"""
from __future__ import annotations

import json
import sys


def load(paths):
    runs = []
    for path in paths:
        with open(path) as f:
            rows = [r for r in json.load(f)["rows"] if r["name"] != "dense"]
        runs.append({(r["name"], r["sparsity"]): r for r in rows})
    return runs


def _common(runs) -> set:
    """The (configuration, sparsity) keys every seed's rows hold."""
    return set.intersection(*(set(run) for run in runs))


def table(runs, names=None) -> str:
    common = _common(runs)
    names = names or sorted({n for n, _ in common})
    sparsities = sorted({s for _, s in common})
    lines = ["| configuration | sparsity | test accuracy, mean (min-max) | validation, mean "
             "| GE, mean |", "|---|---|---|---|---|"]
    for name in names:
        for s in sparsities:
            if (name, s) not in common:
                continue
            rows = [run[name, s] for run in runs]
            test = [100 * r["test_accuracy"] for r in rows]
            val = [100 * r["validation_accuracy"] for r in rows]
            ge = sum(r["gradient_equivalents"] for r in rows) / len(rows)
            lines.append(f"| {name} | {100 * s:g}% | {sum(test) / len(test):.2f} "
                         f"({min(test):.2f}-{max(test):.2f}) | {sum(val) / len(val):.2f} "
                         f"| {ge:,.0f} |")
    return "\n".join(lines)


def wins(runs, names=None) -> str:
    """Markdown, one table per sparsity: the cell in row A, column B is on how
    many seeds A's validation accuracy is above B's (ties count for neither)."""
    common = _common(runs)
    names = names or sorted({n for n, _ in common})
    blocks = []
    for s in sorted({s for _, s in common}):
        here = [n for n in names if (n, s) in common]
        lines = [f"| {100 * s:g}%: validation above, of {len(runs)} seeds | "
                 + " | ".join(f"({i + 1})" for i in range(len(here))) + " |",
                 "|---|" + "---|" * len(here)]
        for i, a in enumerate(here):
            cells = ["" if a == b else str(sum(
                run[a, s]["validation_accuracy"] > run[b, s]["validation_accuracy"]
                for run in runs)) for b in here]
            lines.append(f"| ({i + 1}) {a} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def main(paths):
    runs = load(paths)
    print(f"{len(runs)} seeds: {', '.join(paths)}\n")
    print(table(runs))
    print()
    print(wins(runs))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python benchmarks/frontier_seeds.py ROWS.json ROWS.json [...]")
    main(sys.argv[1:])

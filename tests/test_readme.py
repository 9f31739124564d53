"""The README is a runnable front page.

Every python block marked `<!-- example -->` runs as written, in a fresh
process, and prints a property of what it did that is checked here; the
README stays short and links every page of the documentation site.
"""
import math
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LINES = 260


def _read(*parts):
    with open(os.path.join(ROOT, *parts)) as f:
        return f.read()


def _examples():
    return re.findall(r"<!-- example -->\s*```python\n(.*?)```", _read("README.md"), re.S)


def _name(code):
    """Which example a block is, from the call it demonstrates."""
    for call, name in (("GeodesicModel(", "keras_walk"), ("sparsify.prune(", "sparsify"),
                       ("ContinualLearner(", "continual"), ("connect.find_path(", "connect")):
        if call in code:
            return name
    return "unknown"


EXAMPLES = _examples()


def _run(code):
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    return proc.stdout


def _line(pattern, out):
    """The numbers of the last printed line matching `pattern` (floats)."""
    found = re.findall(pattern, out, re.M)
    assert found, f"no line matching {pattern!r} in:\n{out[-3000:]}"
    last = found[-1]
    return [float(v) for v in (last if isinstance(last, tuple) else (last,))]


NUMBER = r"([-+0-9.eE]+|nan|inf)"


def _check_keras_walk(code, out):
    first, last, failed = _line(
        rf"^distance to target: {NUMBER} -> {NUMBER} failed steps: {NUMBER}$", out)
    assert last < first, (first, last)
    assert failed == 0


def _check_sparsify(code, out):
    asked = re.search(r"sparsify\.prune\([^\n]*?\[([0-9., ]+)\]", code)
    requested = float(asked.group(1).split(",")[-1]) if asked else float(
        re.search(r"sparsify\.prune\([^,]+,[^,]+,\s*([0-9.]+)", code).group(1))
    measured, zeros = _line(
        rf"^measured sparsity: {NUMBER} zero kernel weights: {NUMBER}$", out)
    assert abs(measured - requested) <= 1e-3, (measured, requested)
    assert abs(zeros - requested) <= 1e-3, (zeros, requested)  # counted in the model itself
    (accuracy,) = _line(rf"^test accuracy: {NUMBER}$", out)
    assert 0.0 <= accuracy <= 1.0


def _check_continual(code, out):
    rows = [[float(v) for v in line.split()]
            for line in re.findall(r"^test accuracy per task: ([0-9. ]+)$", out, re.M)]
    assert len(rows) >= 2, out[-3000:]
    assert all(0.0 <= a <= 1.0 for row in rows for a in row), rows
    assert rows[0][0] >= 0.8, rows     # the first task was learnt
    assert rows[-1][0] >= 0.5, rows    # and is still known after the last one


def _check_connect(code, out):
    barrier, min_accuracy = _line(rf"^barrier: {NUMBER} min accuracy: {NUMBER}$", out)
    assert math.isfinite(barrier) and math.isfinite(min_accuracy), (barrier, min_accuracy)
    assert 0.0 <= min_accuracy <= 1.0
    (middle,) = _line(rf"^accuracy at t=0.5: {NUMBER}$", out)
    assert 0.0 <= middle <= 1.0


CHECKS = {"keras_walk": _check_keras_walk, "sparsify": _check_sparsify,
          "continual": _check_continual, "connect": _check_connect}


def test_the_readme_has_an_example_per_application():
    assert sorted(_name(code) for code in EXAMPLES) == sorted(CHECKS), \
        [_name(code) for code in EXAMPLES]


@pytest.mark.parametrize("index", range(len(EXAMPLES)),
                         ids=[f"{i}-{_name(code)}" for i, code in enumerate(EXAMPLES)])
def test_readme_example_runs_as_written(index):
    code = EXAMPLES[index]
    name = _name(code)
    assert name in CHECKS, f"example {index} has no check; add one to CHECKS:\n{code}"
    CHECKS[name](code, _run(code))


def test_the_readme_is_a_front_page():
    lines = _read("README.md").splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines (at most {MAX_LINES})"


def _nav_pages():
    """The pages listed under `nav:` in mkdocs.yml (read without a YAML parser)."""
    text = _read("mkdocs.yml")
    nav = text[text.index("\nnav:"):]
    return re.findall(r"^\s+-\s+(?:[^\n]*?:\s+)?([\w./-]+\.md)\s*$", nav, re.M)


def _links(text):
    return set(re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", text))


def test_every_docs_page_is_linked_from_the_readme_or_the_docs_index():
    pages = _nav_pages()
    assert "index.md" in pages and len(pages) >= 10, pages
    readme = {link[len("docs/"):] for link in _links(_read("README.md"))
              if link.startswith("docs/")}
    index = _links(_read("docs", "index.md"))
    unlinked = [p for p in pages if p not in readme | index and p != "index.md"]
    assert not unlinked, f"nav pages linked neither from README.md nor docs/index.md: {unlinked}"
    assert "index.md" in readme, "README.md must link docs/index.md"
    missing = [link for link in readme if not os.path.exists(os.path.join(ROOT, "docs", link))]
    assert not missing, f"README.md links docs pages that do not exist: {missing}"

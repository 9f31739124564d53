"""The documentation site builds with `mkdocs build --strict`, and its pages are consistent.

The build reads the API pages' docstrings statically (mkdocstrings + griffe),
so it imports nothing from tfgeo and needs no TensorFlow.
"""
import glob
import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")


def _read(path):
    with open(path) as f:
        return f.read()


def _pages():
    return sorted(os.path.relpath(p, DOCS)
                  for p in glob.glob(os.path.join(DOCS, "**", "*.md"), recursive=True))


def _example_blocks(text):
    return re.findall(r"<!-- example -->\s*```python\n(.*?)```", text, re.S)


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                    reason="mkdocs is not installed (pip install -e '.[docs]')")
def test_the_site_builds_strictly(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-4000:]}"
    assert os.path.exists(os.path.join(tmp_path, "index.html"))
    assert os.path.exists(os.path.join(tmp_path, "api", "sparsify", "index.html"))


def test_every_page_is_in_the_nav():
    config = _read(os.path.join(ROOT, "mkdocs.yml"))
    nav = config[config.index("\nnav:"):]
    listed = set(re.findall(r"^\s+-\s+(?:[^\n]*?:\s+)?([\w./-]+\.md)\s*$", nav, re.M))
    assert set(_pages()) == listed, (sorted(set(_pages()) - listed), sorted(listed - set(_pages())))


def test_the_docs_examples_are_the_readmes_which_are_run():
    """A docs page may show an example (marked `<!-- example -->`) only if it is
    one of the README's, which tests/test_readme.py runs as written."""
    readme = [block.strip() for block in _example_blocks(_read(os.path.join(ROOT, "README.md")))]
    shown = 0
    for page in _pages():
        for block in _example_blocks(_read(os.path.join(DOCS, page))):
            shown += 1
            assert block.strip() in readme, f"docs/{page} shows an example the README does not run"
    assert shown >= 4


def test_the_api_pages_name_the_public_modules():
    directives = set()
    for page in glob.glob(os.path.join(DOCS, "api", "*.md")):
        directives |= set(re.findall(r"^::: ([\w.]+)\s*$", _read(page), re.M))
    for module in ("tfgeo.sparsify.staged_pruning", "tfgeo.continual.learner",
                   "tfgeo.connect.path_finding", "tfgeo.metric", "tfgeo.geodesic_model"):
        assert module in directives
    for module in directives:
        path = os.path.join(ROOT, *module.split(".")) + ".py"
        assert os.path.exists(path), f"{module}: no file {os.path.relpath(path, ROOT)}"


def test_the_docs_link_no_file_outside_docs_and_no_run_output():
    for page in _pages():
        text = _read(os.path.join(DOCS, page))
        for link in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://|#|mailto:", link):
                continue
            target = os.path.normpath(os.path.join(DOCS, os.path.dirname(page), link.split("#")[0]))
            assert target.startswith(DOCS + os.sep), f"docs/{page} links outside docs/: {link}"
        assert not re.search(r"!\[[^\]]*\]\([^)]*runs/", text), f"docs/{page} embeds a runs/ file"

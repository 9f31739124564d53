"""Tests of the scripts in benchmarks/ (not a package: loaded from their files)."""
import importlib.util
import os

from tests.runner_process import ROOT


def load_script(name: str):
    """The module benchmarks/<name>.py, loaded from its file."""
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

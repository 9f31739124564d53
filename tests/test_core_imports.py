"""The core library imports none of the harness, the zoo or the runners, nor
the harness's optional packages (matplotlib, scikit-learn, tensorflow-datasets)."""
import ast
import os
import subprocess
import sys

from tests.runner_process import ROOT

FORBIDDEN = ("tfgeo.experiments", "tfgeo.models", "tfgeo.runners", "experiments", "models",
             "runners", "matplotlib", "sklearn", "tensorflow_datasets")


def _imports(path):
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _forbidden(name):
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


# Under Bazel the harness, zoo and runners are also laid out under tfgeo/ (their
# import names); they are not the library.
INSTALLED_BESIDE = ("experiments", "models", "runners")


def test_no_library_module_imports_the_harness():
    root = os.path.join(ROOT, "tfgeo")
    for folder, dirs, files in os.walk(root):
        if folder == root:
            dirs[:] = [d for d in dirs if d not in INSTALLED_BESIDE]
        for module in sorted(files):
            if module.endswith(".py"):
                bad = [n for n in _imports(os.path.join(folder, module)) if _forbidden(n)]
                assert not bad, (module, bad)


def test_the_core_imports_no_application():
    # The flat core is what every application shares; it never reaches into one.
    core = os.path.join(ROOT, "tfgeo")
    for module in sorted(os.listdir(core)):
        if module.endswith(".py") and module != "__init__.py":
            bad = [n for n in _imports(os.path.join(core, module))
                   if n.startswith(("tfgeo.sparsify", "tfgeo.continual", "tfgeo.connect"))]
            assert not bad, (module, bad)


def test_importing_tfgeo_loads_no_harness_module():
    # TensorFlow itself may load matplotlib and scikit-learn when they are
    # installed; what counts is what `import tfgeo` adds to that.
    code = ("import sys; import tensorflow, keras, numpy, scipy.optimize, absl.logging; "
            "before = set(sys.modules); import tfgeo; "
            "print(','.join(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in "
            "('matplotlib', 'sklearn', 'tensorflow_datasets', 'experiments', 'models', 'runners') "
            "or m.startswith(('tfgeo.experiments', 'tfgeo.models', 'tfgeo.runners')))))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "", proc.stdout


def test_every_module_is_reachable_and_all_lists_the_applications():
    import tfgeo

    for package in (tfgeo, tfgeo.sparsify, tfgeo.continual, tfgeo.connect):
        folder = os.path.dirname(package.__file__)
        modules = {m[:-3] for m in os.listdir(folder) if m.endswith(".py") and m != "__init__.py"}
        assert all(hasattr(package, m) for m in modules), (package.__name__, modules)
        assert all(hasattr(package, name) for name in package.__all__), package.__name__
    assert {"sparsify", "continual", "connect"} <= set(tfgeo.__all__)
    assert callable(tfgeo.sparsify.prune) and callable(tfgeo.connect.find_path)
    assert isinstance(tfgeo.continual.ContinualLearner, type)

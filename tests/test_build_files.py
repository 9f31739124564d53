"""The Bazel BUILD files cover every Python module of tfgeo, models and runners
exactly once, and every test module has a py_test."""
import ast
import os

from tests.runner_process import ROOT


def _targets(package):
    """{target name: srcs} of the py_* rules in `package`/BUILD (Starlark is Python syntax)."""
    with open(os.path.join(ROOT, package, "BUILD")) as f:
        tree = ast.parse(f.read())
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "").startswith("py_"):
            kw = {k.arg: k.value for k in node.keywords}
            srcs = [e.value for e in kw["srcs"].elts] if "srcs" in kw else []
            out[kw["name"].value] = srcs
    return out


def _modules(package):
    return sorted(f for f in os.listdir(os.path.join(ROOT, package)) if f.endswith(".py"))


def test_every_library_and_runner_module_is_in_exactly_one_target():
    for package in ("tfgeo", "models", "runners"):
        targets = _targets(package)
        owners = {}
        for name, srcs in targets.items():
            for src in srcs:
                owners.setdefault(src, []).append(name)
        for module in _modules(package):
            assert len(owners.get(module, [])) == 1, (package, module, owners.get(module))
        assert set(owners) <= set(_modules(package)), set(owners) - set(_modules(package))


def test_every_runner_has_a_binary_and_every_test_module_a_py_test():
    runners = _targets("runners")
    for module in _modules("runners"):
        if module not in ("__init__.py", "shared_flags.py"):
            assert runners.get(module[:-3]) == [module], module
    tests = _targets("tests")
    test_srcs = {s for srcs in tests.values() for s in srcs}
    for module in _modules("tests") + ["models/" + m for m in _modules("tests/models")]:
        if os.path.basename(module).startswith("test_"):
            assert module in test_srcs, module

"""The Bazel BUILD files follow the layout: every module of tfgeo, experiments,
models and runners is in exactly one target, every runner has a binary,
every test module a pytest_test, and the core library depends on nothing
else in the repository."""
import ast
import os

from tests.runner_process import ROOT

PACKAGES = ("tfgeo", "experiments", "models", "runners")
RULES = ("py_library", "py_binary", "py_test", "py_aliased_library", "pytest_test",
         "runner_binary")


def _calls(package):
    """[(rule, {attribute: value})] of the rules in `package`/BUILD (Starlark is Python syntax)."""
    with open(os.path.join(ROOT, package, "BUILD")) as f:
        tree = ast.parse(f.read())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in RULES:
            attrs = {}
            for k in node.keywords:
                try:
                    attrs[k.arg] = ast.literal_eval(k.value)
                except ValueError:  # e.g. a list + glob(...)
                    attrs[k.arg] = None
            if node.func.id == "runner_binary":  # the macro's implied sources
                attrs["srcs"] = [attrs["name"] + ".py"]
            out.append((node.func.id, attrs))
    return out


def _modules(package):
    return sorted(f for f in os.listdir(os.path.join(ROOT, package)) if f.endswith(".py"))


def test_every_module_is_in_exactly_one_target():
    for package in PACKAGES:
        owners = {}
        for _, attrs in _calls(package):
            for src in attrs.get("srcs") or []:
                owners.setdefault(src, []).append(attrs["name"])
        for module in _modules(package):
            assert len(owners.get(module, [])) == 1, (package, module, owners.get(module))
        assert set(owners) <= set(_modules(package)), set(owners) - set(_modules(package))


def test_the_core_depends_on_no_other_package():
    (rule, attrs), = _calls("tfgeo")
    assert rule == "py_library" and not attrs.get("deps")
    for package in ("experiments", "models", "runners"):
        for _, attrs in _calls(package):
            assert attrs.get("import_as", "tfgeo/" + package).startswith("tfgeo/")
    with open(os.path.join(ROOT, "experiments", "BUILD")) as f:
        visibility = f.read().split("default_visibility", 1)[1].split("]", 1)[0]
    assert "//tfgeo" not in visibility and "public" not in visibility


def test_every_runner_has_a_binary_and_every_test_module_a_test():
    binaries = {attrs["name"]: attrs["srcs"] for rule, attrs in _calls("runners")
                if rule in ("py_binary", "runner_binary")}
    for module in _modules("runners"):
        if module not in ("__init__.py", "common.py"):
            assert binaries.get(module[:-3]) == [module], module
    tested = {attrs["src"] for rule, attrs in _calls("tests") if rule == "pytest_test"}
    for folder, _, files in os.walk(os.path.join(ROOT, "tests")):
        rel = os.path.relpath(folder, os.path.join(ROOT, "tests"))
        for f in files:
            if f.startswith("test_") and f.endswith(".py"):
                assert os.path.normpath(os.path.join(rel, f)) in tested, (rel, f)

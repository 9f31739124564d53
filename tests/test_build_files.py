"""The Bazel BUILD files follow the layout: every module of tfgeo (its
subpackages included), experiments, models and runners is in exactly one
target, every runner has a binary, every test module a pytest_test, and the
core library depends on nothing else in the repository."""
import ast
import fnmatch
import os

from tests.runner_process import ROOT

PACKAGES = ("tfgeo", "experiments", "models", "runners")
RULES = ("py_library", "py_binary", "py_test", "py_aliased_library", "pytest_test",
         "runner_binary")


def _glob(package, patterns, exclude=()):
    """Bazel's glob over `package`'s files (no BUILD in subfolders here), as paths
    relative to the package; `**` matches any depth, `*` never crosses a '/'."""
    root = os.path.join(ROOT, package)
    files = [os.path.relpath(os.path.join(d, f), root)
             for d, _, fs in os.walk(root) for f in fs if "__pycache__" not in d]

    def match(path, pattern):
        if pattern.startswith("**/"):
            return any(match("/".join(path.split("/")[i:]), pattern[3:])
                       for i in range(path.count("/") + 1))
        return path.count("/") == pattern.count("/") and fnmatch.fnmatch(path, pattern)

    return sorted(f for f in files if any(match(f, p) for p in patterns)
                  and not any(match(f, p) for p in exclude))


def _value(package, node):
    """A Starlark expression's value: literals, glob(...) and list concatenation."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "glob":
        exclude = next((ast.literal_eval(k.value) for k in node.keywords if k.arg == "exclude"),
                       ())
        return _glob(package, ast.literal_eval(node.args[0]), exclude)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _value(package, node.left), _value(package, node.right)
        return None if left is None or right is None else left + right
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def _calls(package):
    """[(rule, {attribute: value})] of the rules in `package`/BUILD (Starlark is
    Python syntax); a rule inside a list comprehension over glob(...) appears once
    per element, with `src` that element and the other attributes unevaluated."""
    with open(os.path.join(ROOT, package, "BUILD")) as f:
        tree = ast.parse(f.read())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ListComp) and isinstance(node.elt, ast.Call):
            gen, = node.generators
            rule = getattr(node.elt.func, "id", "")
            for element in _value(package, gen.iter):
                out.append((rule, {"src": element, "name": element[:-3].replace("/", "_")}))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") in RULES:
            if any(isinstance(k.value, ast.Name) or isinstance(k.value, ast.Call) and
                   getattr(k.value.func, "attr", "") == "get" for k in node.keywords
                   if k.arg == "src"):
                continue  # the comprehension's template, counted above
            attrs = {k.arg: _value(package, k.value) for k in node.keywords}
            if node.func.id == "runner_binary":  # the macro's implied sources
                attrs["srcs"] = [attrs["name"] + ".py"]
            out.append((node.func.id, attrs))
    return out


def _modules(package):
    return _glob(package, ["**/*.py"])


def test_every_module_is_in_exactly_one_target():
    for package in PACKAGES:
        owners = {}
        for _, attrs in _calls(package):
            for src in attrs.get("srcs") or []:
                owners.setdefault(src, []).append(attrs["name"])
        for module in _modules(package):
            assert len(owners.get(module, [])) == 1, (package, module, owners.get(module))
        assert set(owners) <= set(_modules(package)), set(owners) - set(_modules(package))


def test_the_subpackages_are_in_the_library_target():
    (rule, attrs), = _calls("tfgeo")
    for sub in ("sparsify", "continual", "connect"):
        assert f"{sub}/__init__.py" in attrs["srcs"], sub


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
    tests = [attrs for rule, attrs in _calls("tests") if rule == "pytest_test"]
    tested = [attrs["src"] for attrs in tests]
    assert len(tested) == len(set(tested))
    assert len({attrs["name"] for attrs in tests}) == len(tests)
    for folder, _, files in os.walk(os.path.join(ROOT, "tests")):
        rel = os.path.relpath(folder, os.path.join(ROOT, "tests"))
        for f in files:
            if f.startswith("test_") and f.endswith(".py"):
                assert os.path.normpath(os.path.join(rel, f)) in tested, (rel, f)


def test_the_glob_reader_matches_bazel_semantics():
    # `*` stays within one folder; `**/` matches any depth, the package itself included.
    assert "test_build_files.py" in _glob("tests", ["test_*.py"])
    assert not any("/" in f for f in _glob("tests", ["test_*.py"]))
    assert "sparsify/test_projection.py" in _glob("tests", ["*/test_*.py"])
    assert "__init__.py" in _glob("tfgeo", ["**/*.py"])
    assert "sparsify/projection.py" in _glob("tfgeo", ["**/*.py"])

"""The layout shows the architecture: no import circles in the library or the
harness (imports inside functions count too), and no module name shared by
the library and the harness."""
import ast
import os

from tests.runner_process import ROOT

# Folder on disk -> the package name it is installed as.
PACKAGES = {"tfgeo": "tfgeo", "experiments": "tfgeo.experiments", "models": "tfgeo.models"}


def _modules():
    """{dotted name: path} of every module of the library, the harness and the zoo."""
    out = {}
    for folder, package in PACKAGES.items():
        for d, dirs, files in os.walk(os.path.join(ROOT, folder)):
            if d == os.path.join(ROOT, "tfgeo"):  # under Bazel the harness is there too
                dirs[:] = [s for s in dirs if s not in ("experiments", "models", "runners")]
            rel = os.path.relpath(d, os.path.join(ROOT, folder))
            prefix = package if rel == "." else package + "." + rel.replace(os.sep, ".")
            for f in files:
                if f.endswith(".py"):
                    out[prefix if f == "__init__.py" else f"{prefix}.{f[:-3]}"] = os.path.join(d, f)
    return out


def _graph():
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        is_package = path.endswith("__init__.py")
        edges = set()
        for node in ast.walk(ast.parse(open(path).read())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".")
                    keep = len(parts) - node.level + (1 if is_package else 0)
                    base = ".".join(parts[:keep] + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                if t in modules and t != name:
                    edges.add(t)
        graph[name] = edges
    return graph


def _cycle(graph):
    """One import cycle among modules (a package's __init__ importing its own
    submodules is not one: that is how a package exposes them), or None."""
    def edges(node):
        return [t for t in graph[node] if not t.startswith(node + ".")]

    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in edges(node):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, stack + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for node in graph:
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def test_no_import_circles():
    graph = _graph()
    # Packages' __init__ files import their submodules; drop the edges from a
    # submodule back to its package's __init__ only when it imports a sibling
    # through it (`from tfgeo.sparsify import layerwise` names the sibling too).
    for name in graph:
        graph[name] = {t for t in graph[name] if t not in PACKAGES.values()
                       and t not in ("tfgeo.sparsify", "tfgeo.continual", "tfgeo.connect")}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_name_is_shared_by_the_library_and_the_harness():
    names = _modules()
    library = {n.rsplit(".", 1)[-1] for n in names if not n.startswith(("tfgeo.experiments",
                                                                          "tfgeo.models"))}
    harness = {n.rsplit(".", 1)[-1] for n in names if n.startswith("tfgeo.experiments.")}
    assert not library & harness, library & harness

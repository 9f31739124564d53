"""Python rules for tfgeo's layout.

The repository's top-level folders models/, experiments/ and runners/ are
installed by pip under tfgeo's own names (tfgeo.models, tfgeo.experiments,
tfgeo.runners; see pyproject.toml), and the code imports them by those
names. `py_aliased_library` gives Bazel targets the same names: it places
each source file in the runfiles tree under `import_as` too (e.g.
models/vgg.py also as tfgeo/models/vgg.py).

`pytest_test` is one test module run by pytest (tests/pytest_main.py).
"""

def _py_aliased_library_impl(ctx):
    prefix = ctx.label.package + "/"
    symlinks = {}
    for f in ctx.files.srcs:
        symlinks[ctx.attr.import_as + "/" + f.short_path[len(prefix):]] = f
    runfiles = ctx.runfiles(files = ctx.files.srcs, symlinks = symlinks)
    for dep in ctx.attr.deps:
        runfiles = runfiles.merge(dep[DefaultInfo].default_runfiles)
    sources = depset(
        ctx.files.srcs,
        transitive = [dep[PyInfo].transitive_sources for dep in ctx.attr.deps],
    )
    return [DefaultInfo(runfiles = runfiles), PyInfo(transitive_sources = sources)]

py_aliased_library = rule(
    implementation = _py_aliased_library_impl,
    attrs = {
        "srcs": attr.label_list(allow_files = [".py"]),
        "deps": attr.label_list(providers = [PyInfo]),
        "import_as": attr.string(mandatory = True),
    },
    doc = "A py_library whose files are also importable under `import_as` (a path).",
)

def pytest_test(name, src, size = "medium", integration = False, data = [], deps = [],
                marker = None):
    """A py_test running pytest on `src`; `integration` tests start runner
    processes or read ../shared/data (CI's Bazel pass filters them out);
    `marker` selects a module's tests that the default run deselects."""
    native.py_test(
        name = name,
        size = size,
        srcs = [src, "//tests:pytest_main.py"],
        args = ["$(location %s)" % src] + (["-m", marker] if marker else []),
        data = data,
        main = "//tests:pytest_main.py",
        python_version = "PY3",
        tags = ["integration"] if integration else [],
        deps = ["//tests:test_support"] + deps,
    )

def runner_binary(name):
    """`bazel run //runners:<name>`: the runner runners/<name>.py."""
    native.py_binary(
        name = name,
        srcs = [name + ".py"],
        main = name + ".py",
        python_version = "PY3",
        deps = [":common"],
    )

"""Runs one runner module on several argument lists in one process.

    python tests/runner_cases.py runners.walk < cases.json > outcomes.json

cases.json is a list of argument lists; the output, one {"returncode",
"stdout", "stderr"} per case, as a process would have given them: absl's flag
errors and `sys.exit` messages land in "stderr", an uncaught exception as its
traceback. Checking dozens of bad flags this way costs one TensorFlow start
instead of one per flag; `tests.runner_process.run_cases` is the caller.
"""
import contextlib
import importlib
import io
import json
import sys
import traceback

from absl import flags
from absl import logging as absl_logging


def _outcome(entry, module: str, args: list, own: list) -> dict:
    out, err = io.StringIO(), io.StringIO()
    handler = absl_logging.get_absl_handler().python_handler
    stream, handler.stream = handler.stream, err
    sys.argv = [module, *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                entry()
            except SystemExit as e:
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)  # what the interpreter prints on exit
                    code = 1
                else:
                    code = e.code or 0
            except BaseException:  # noqa: BLE001 - reported as a process would report it
                traceback.print_exc()
                code = 1
    finally:
        handler.stream = stream
        # Back to the defaults for the next case; absl's own flags (logging
        # verbosity) stay parsed, so the log reaches "stderr" in every case.
        for name in own:
            flags.FLAGS[name].unparse()
    return {"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main() -> None:
    module = sys.argv[1]
    cases = json.load(sys.stdin)
    before = set(flags.FLAGS)
    entry = importlib.import_module(module).entry
    own = sorted(set(flags.FLAGS) - before)
    outcomes = [_outcome(entry, module, args, own) for args in cases]
    json.dump(outcomes, sys.stdout)


if __name__ == "__main__":
    main()

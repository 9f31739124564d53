"""Runs a runner module as a real subprocess, as a user would (or kills it midway)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def runner_env() -> dict:
    """The environment of a runner process: this checkout importable, TF's logs quiet."""
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)


def run_module(module: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=runner_env(),
                          capture_output=True, text=True, timeout=timeout)


def run_cases(module: str, cases: list, timeout: int = 900) -> list:
    """`run_module(module, *args)` for each argument list in `cases`, in one
    process (tests/runner_cases.py): one TensorFlow start for many fast
    checks. Each outcome has .returncode, .stdout and .stderr."""
    proc = subprocess.run([sys.executable, "-m", "tests.runner_cases", module], cwd=ROOT,
                          env=runner_env(), input=json.dumps([list(c) for c in cases]),
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"tests.runner_cases {module} failed:\n{proc.stderr[-3000:]}")
    return [subprocess.CompletedProcess([module, *c], o["returncode"], o["stdout"], o["stderr"])
            for c, o in zip(cases, json.loads(proc.stdout))]


def run_named_cases(cases: dict) -> dict:
    """{name: (module, args)} -> {name: outcome}: `run_cases`, one process per module."""
    by_module: dict = {}
    for name, (module, args) in cases.items():
        by_module.setdefault(module, []).append((name, list(args)))
    outcomes = {}
    for module, named in by_module.items():
        for (name, _), outcome in zip(named, run_cases(module, [a for _, a in named])):
            outcomes[name] = outcome
    return outcomes


def case_outcomes(module: str, cases: list):
    """A module-scoped pytest fixture: `module`'s outcome on each (args, ...)
    of `cases`, each with its own --output_dir, run in one process (the
    README's `--dist loadfile` keeps a test module on one pytest worker)."""
    import pytest

    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory):
        root = tmp_path_factory.mktemp(module.replace(".", "_"))
        return run_cases(module, [[*case[0], f"--output_dir={root / f'case{i}'}"]
                                  for i, case in enumerate(cases)])

    return fixture


#: What a run writes as results; a refused run leaves none of them behind.
RESULTS = ("results.json", "start.keras", "model.keras", "walked.keras", "accuracy.png")


def fails_cleanly(proc, culprit: str, out: str) -> None:
    """Asserts a refused run: non-zero exit, `culprit` named in stderr, no
    traceback, and no result or temporary file in its output folder `out`."""
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert culprit in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    if os.path.isdir(out):
        assert not [f for f in os.listdir(out) if f in RESULTS or f.startswith(".tmp-")]


def read_results(out: str) -> dict:
    """A run's `results.json` in folder `out`."""
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


def kill_after(module, out, args, completed, sig=signal.SIGKILL):
    """Starts the runner, kills it once its state records `completed` units."""
    victim = subprocess.Popen([sys.executable, "-m", module, f"--output_dir={out}", *args],
                              cwd=ROOT, env=runner_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    state = os.path.join(out, "state.json")
    deadline = time.time() + 400
    done = 0
    while time.time() < deadline and victim.poll() is None:
        if os.path.exists(state):
            try:
                with open(state) as f:
                    done = json.load(f)["completed"]
            except (ValueError, OSError):  # being replaced right now
                pass
            if done >= completed:
                break
        time.sleep(0.05)
    assert victim.poll() is None, "the run finished before it could be interrupted"
    victim.send_signal(sig)
    victim.wait(timeout=60)
    return done


def free_ports(n: int) -> list[int]:
    """n loopback ports free now (for a test's cluster of worker processes)."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports

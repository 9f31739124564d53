"""Runs a runner module as a real subprocess, as a user would (or kills it midway)."""
import json
import os
import signal
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

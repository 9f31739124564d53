"""Runs a runner module as a real subprocess, as a user would (or kills it midway)."""
import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(module: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def kill_after(module, out, args, completed, sig=signal.SIGKILL):
    """Starts the runner, kills it once its state records `completed` units."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    victim = subprocess.Popen([sys.executable, "-m", module, f"--output_dir={out}", *args],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
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

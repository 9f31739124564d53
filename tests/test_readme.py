"""The README's Keras example runs as written, and its walk gets closer to the target."""
import os
import re
import subprocess
import sys

from tests.runner_process import ROOT


def _example():
    text = open(os.path.join(ROOT, "README.md")).read()
    return re.search(r"<!-- example -->\s*```python\n(.*?)```", text, re.S).group(1)


def test_readme_keras_example_runs_as_written():
    code = _example() + (
        "\nd = history.history['distance_to_target']\n"
        "assert history.history['failed_steps'][-1] == 0\n"
        "print('distance', d[0], d[-1])\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, last = (float(v) for v in proc.stdout.split("distance")[-1].split())
    assert last < first

"""The project's own contract: CI runs exactly the README's test command."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_commands():
    text = open(os.path.join(ROOT, "README.md")).read()
    block = re.search(r"<!-- setup -->\s*```sh\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_setup_is_two_commands_and_ci_runs_the_test_one():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert commands[1] in ci
    assert "pytest" in commands[1] and "runners.sparsify" in commands[0]

"""runners.train: end to end on digits, reproducibility, and flag validation."""
import json
import os

import pytest

from tests.runner_process import case_outcomes
from tests.runner_process import run_module


def _run(*args):
    return run_module("runners.train", *args)


def test_train_digits_twice_same_numbers(tmp_path):
    summaries = []
    for i in range(2):
        out = str(tmp_path / f"run{i}")
        proc = _run(f"--output_dir={out}", "--epochs=15", "--seed=3")
        assert proc.returncode == 0, proc.stderr[-3000:]
        with open(os.path.join(out, "results.json")) as f:
            res = json.load(f)
        assert os.path.exists(os.path.join(out, "model.keras"))
        assert res["config"]["seed"] == 3 and res["dataset"] == "digits"
        # The test split shown each epoch is named so, not val_* (no validation split here).
        assert "test_accuracy" in res["history"] and "val_accuracy" not in res["history"]
        assert "test_accuracy:" in proc.stdout + proc.stderr
        assert "val_accuracy" not in proc.stdout + proc.stderr
        summaries.append(res["summary"])
    assert summaries[0]["test_accuracy"] > 0.9
    # Same seed, same machine: same numbers (tolerance 1e-6 on losses).
    assert summaries[0]["test_accuracy"] == summaries[1]["test_accuracy"]
    assert abs(summaries[0]["test_loss"] - summaries[1]["test_loss"]) < 1e-6


BAD_FLAGS = [
    (["--model=resnet"], "--model"),
    (["--dataset=imagenet"], "--dataset"),
    (["--epochs=0"], "--epochs"),
    (["--batch_size=-4"], "--batch_size"),
    (["--learning_rate=0"], "--learning_rate"),
    (["--hidden=300,x"], "--hidden"),
    (["--manual_dir=/nonexistent/mnist"], "--manual_dir"),
    (["--model=vgg11", "--dataset=digits"], "--model=vgg11"),
    (["--model=lenet5", "--dataset=digits"], "--model=lenet5 does not fit"),
]
outcomes = case_outcomes("runners.train", BAD_FLAGS)


@pytest.mark.parametrize("case", range(len(BAD_FLAGS)),
                         ids=[args[0].lstrip("-") for args, _ in BAD_FLAGS])
def test_bad_flags_name_the_culprit(case, outcomes):
    proc, (_, culprit) = outcomes[case], BAD_FLAGS[case]
    assert proc.returncode != 0
    assert culprit in proc.stderr
    assert "Epoch 1" not in proc.stdout + proc.stderr
    assert "--helpfull" not in proc.stderr or "Flags parsing error" in proc.stderr  # no help dump

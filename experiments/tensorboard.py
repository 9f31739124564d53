"""TensorBoard logs of a run (--tensorboard_dir): Keras's callback for the stages
driven by `fit`, and scalars for the rest (accuracies per stage, per task, per path).

    tensorboard.configure(config.run)          # once, at the start of a run
    model.fit(..., callbacks=tensorboard.callbacks("stage1/finetune"))
    tensorboard.scalars("test_accuracy", {"geodesic": 0.97}, step=1)

Without --tensorboard_dir every call is a no-op.
"""
from __future__ import annotations

import os

import keras
import tensorflow as tf

_ROOT = {"dir": None}


def configure(run_config) -> None:
    """Uses `run_config.tensorboard_dir` (None or '' turns logging off)."""
    _ROOT["dir"] = getattr(run_config, "tensorboard_dir", None) or None


def callbacks(name: str) -> list:
    """[keras.callbacks.TensorBoard] logging under `<dir>/<name>`, or []."""
    if _ROOT["dir"] is None:
        return []
    return [keras.callbacks.TensorBoard(os.path.join(_ROOT["dir"], name), update_freq="epoch")]


def scalars(group: str, values: dict, step: int) -> None:
    """Writes each {series: value} under `<dir>/<series>` as the scalar `group`."""
    if _ROOT["dir"] is None:
        return
    for series, value in values.items():
        writer = tf.summary.create_file_writer(os.path.join(_ROOT["dir"], series))
        with writer.as_default():
            tf.summary.scalar(group, float(value), step=int(step))
        writer.flush()

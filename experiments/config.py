"""Run configurations: dataclasses whose fields declare each option once.

A field made with `option(...)` carries its help text and its constraints
(bounds, choices, list element type, whether a path must exist); the runners
turn every field into an absl flag and back (`tfgeo.runners.common`), and
`validate` checks a config built in Python the same way, so a bad value is
refused with one line naming it wherever it comes from. Floats must be
finite everywhere.

Groups shared by the applications: `RunConfig` (seed, output folder),
`DataConfig`, `NetworkConfig`, `TrainConfig` (base-network training) and
`GeodesicConfig` (the walk's step, metric and solver).
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Sequence

from tfgeo import metric_specs as metrics_lib
from tfgeo import output_metrics

from . import data as data_lib
from .errors import InputError
from . import results

COMPILE_MODES = ("auto", "xla", "graph")
LR_SCHEDULES = ("constant", "cosine")
#: Largest run seed: studies derive seed * 1000 + offset, which numpy needs below 2**32.
MAX_SEED = 4_000_000
#: Flags that change how a run reports, not what it computes: a resumed run may change them.
PRESENTATION = ("resume", "verbose", "tensorboard_dir")


def option(default, help: str, *, choices: Sequence[str] | None = None, lower=None, upper=None,
           lower_open: bool = False, upper_open: bool = False, element=None,
           unique: bool = False, path: str | None = None, nonempty: bool = False,
           check=None):
    """A config field with its flag help and constraints.

    Args:
      default: the default value (lists as tuples).
      help: the flag's help text.
      choices: allowed values (an enum flag, or each element of a list).
      lower, upper: bounds (inclusive unless `lower_open` / `upper_open`).
      element: the element type of a list option (str, int or float).
      unique: list elements must not repeat.
      path: 'file' (an existing file), 'dir' (an existing folder), 'exists'
        (either) or 'writable_dir' (a folder we can create or write to);
        None values pass.
      nonempty: a list option must not be empty.
      check: a function of the value that raises ValueError if it is bad.
    """
    meta = dict(help=help, choices=tuple(choices) if choices else None, lower=lower, upper=upper,
                lower_open=lower_open, upper_open=upper_open, element=element, unique=unique,
                path=path, nonempty=nonempty, check=check)
    return dataclasses.field(default=default, metadata=meta)


def describe_bounds(meta) -> str:
    lo, hi = meta.get("lower"), meta.get("upper")
    if lo is not None and hi is not None:
        return (f"in {'(' if meta['lower_open'] else '['}{lo:g}, {hi:g}"
                f"{')' if meta['upper_open'] else ']'}")
    if lo is not None:
        return f"{'>' if meta['lower_open'] else '>='} {lo:g}"
    if hi is not None:
        return f"{'<' if meta['upper_open'] else '<='} {hi:g}"
    return ""


def check_value(name: str, value: Any, meta: dict) -> str | None:
    """None if `value` satisfies the option's constraints, else the reason."""
    if meta.get("check") is not None and value is not None:
        try:
            meta["check"](value)
        except ValueError as e:
            return str(e).rstrip(".")
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if meta.get("nonempty") and isinstance(value, (list, tuple)) and not values:
        return "must not be empty"
    if meta.get("unique") and len(set(values)) != len(values):
        repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
        return f"repeats {', '.join(map(str, repeated))}"
    for v in values:
        if v is None:
            continue
        if isinstance(v, float) and not math.isfinite(v):
            return f"must be a finite number, got {v}"
        choices = meta.get("choices")
        if choices and v not in choices:
            return f"{v!r} is not one of {', '.join(choices)}"
        lo, hi = meta.get("lower"), meta.get("upper")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if lo is not None and (v < lo or (meta.get("lower_open") and v == lo)):
                return f"must be {describe_bounds(meta)}, got {v:g}"
            if hi is not None and (v > hi or (meta.get("upper_open") and v == hi)):
                return f"must be {describe_bounds(meta)}, got {v:g}"
        path = meta.get("path")
        if path and isinstance(v, str):
            if path == "file" and not os.path.isfile(v):
                return f"{v} is not a file" if os.path.exists(v) else f"{v} does not exist"
            if path == "dir" and not os.path.isdir(v):
                return f"{v} is not a folder" if os.path.exists(v) else f"{v} does not exist"
            if path == "exists" and not os.path.exists(v):
                return f"{v} does not exist"
            if path == "writable_dir" and not results.writable_directory(v):
                return f"{v!r} is not a folder that can be created or written"
    return None


def validate(config, prefix: str = "") -> None:
    """Raises ValueError naming `--<prefix><field>` for the first value that breaks its option."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            validate(value, prefix + f.metadata.get("prefix", ""))
        elif "help" in f.metadata:
            problem = check_value(f.name, value, f.metadata)
            if problem:
                raise InputError(f"--{prefix}{f.name}: {problem}.")


def flat(config, prefix: str = "") -> dict:
    """{flag name: value} of a (nested) config, as the runners name the flags."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flat(value, prefix + f.metadata.get("prefix", "")))
        else:
            out[prefix + f.name] = list(value) if isinstance(value, tuple) else value
    return out


#: Suffix of the identity entry holding an input file's fingerprint.
CONTENT = "#content"


def identity(config) -> dict:
    """What defines a run's results: its flags (all but `PRESENTATION`) and
    the content of every input file or folder they name (`{flag}#content`, a
    sha256), so a run resumed after an input was replaced is refused."""
    out = {k: v for k, v in flat(config).items() if k not in PRESENTATION}
    for name, value in _inputs(config):
        out[name + CONTENT] = data_lib.fingerprint(value)
    return out


def _inputs(config, prefix: str = ""):
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            yield from _inputs(value, prefix + f.metadata.get("prefix", ""))
        elif f.metadata.get("path") in ("file", "exists") and isinstance(value, str):
            yield prefix + f.name, value


def nested(cls, prefix: str = "", **defaults):
    """A field holding a sub-config (with `defaults` changed) whose flags are
    named `{prefix}{field}`."""
    return dataclasses.field(default_factory=lambda: cls(**defaults), metadata={"prefix": prefix})


@dataclasses.dataclass
class RunConfig:
    seed: int = option(0, "Random seed (data split, initialisation, shuffling); at most "
                       f"{MAX_SEED:,} (the seeds derived from it must stay below 2**32).",
                       lower=0, upper=MAX_SEED)
    output_dir: str = option("runs/run", "Folder for the run's outputs.", path="writable_dir")
    resume: bool = option(True, "Continue from the output folder's last checkpoint (same flags "
                          "only); --noresume discards what the folder holds and starts over.")
    compile: str = option("auto", "Compile mode of the training and walking steps: xla, graph, "
                          "or auto (graph for conv nets on CPU, where XLA's convolutions are "
                          "slower; XLA otherwise).", choices=COMPILE_MODES)
    verbose: int = option(2, "Keras progress output: 0 silent, 1 bar, 2 one line per epoch.",
                          lower=0, upper=2)
    tensorboard_dir: str | None = option(None, "Write TensorBoard logs here (Keras's callback "
                                         "for training and walks, scalars per stage).",
                                         path="writable_dir")


@dataclasses.dataclass
class DataConfig:
    dataset: str = option("digits", "Dataset.", choices=data_lib.NAMES)
    image_folder: str | None = option(None, "Folder or .tar.gz for --dataset=image_folder.",
                                      path="exists")
    data_dir: str | None = option(None, f"tfds cache folder (default ${data_lib.DATA_DIR_ENV}).")
    manual_dir: str | None = option(None, "Folder of original dataset files for offline tfds "
                                    f"(default ${data_lib.MANUAL_DIR_ENV}).", path="dir")
    validation_fraction: float = option(0.0, "Hold out this fraction of the training split for "
                                        "validation (tuning without the test set).", lower=0.0,
                                        upper=1.0, upper_open=True)
    train_examples: int = option(0, "Use a seeded random subset of this many training examples "
                                 "(after the validation split); 0 uses all.", lower=0)


@dataclasses.dataclass
class NetworkConfig:
    model: str = option("mlp", "Zoo model.", choices=("lenet5", "lenet_300_100", "mlp", "vgg11",
                                                      "vgg16"))
    hidden: tuple = option((300, 100), "Hidden widths for --model=mlp.", element=int, lower=1,
                           nonempty=True)
    batch_norm: bool = option(False, "Batch normalization for VGG models.")
    width: float = option(1.0, "Channel-width multiplier for VGG models.", lower=0.0,
                          lower_open=True, upper=16.0)
    vgg_init: str = option("glorot_uniform", "Kernel initialisation of VGG models: "
                           "glorot_uniform (Keras's default) or he_fan_out (normal, variance "
                           "2 / (9 * out channels); VGG16 without batch norm needs it to "
                           "train).", choices=("glorot_uniform", "he_fan_out"))


@dataclasses.dataclass
class TrainConfig:
    epochs: int = option(20, "Training epochs.", lower=1, upper=100_000)
    batch_size: int = option(128, "Training batch size.", lower=1, upper=1_000_000)
    learning_rate: float = option(1e-3, "Adam learning rate.", lower=0.0, lower_open=True,
                                  upper=10.0)
    lr_schedule: str = option("constant", "Learning-rate schedule over all training steps.",
                              choices=LR_SCHEDULES)
    augment: str = option("auto", "Training augmentation: crop_flip (random 4-pixel-padded "
                          "crops and horizontal flips, the CIFAR standard), none, or auto "
                          "(crop_flip for 32x32 colour images, none otherwise).",
                          choices=("auto", "none", "crop_flip"))


@dataclasses.dataclass
class GeodesicConfig:
    step_size: float = option(0.05, "Euclidean length eps of each geodesic step.", lower=0.0,
                              lower_open=True, upper=1e6)
    damping: float = option(1e-3, "lambda in (g + lambda I).", lower=0.0, upper=1e12)
    output_metric: str = option("fisher", "Output-space metric M pulled back to the weights.",
                                choices=output_metrics.NAMES)
    cg_iterations: int = option(10, "Most conjugate-gradient iterations per step.", lower=1,
                                upper=100_000)
    cg_tolerance: float = option(1e-4, "CG stops at this relative residual.", lower=0.0,
                                 upper=1.0)
    metric: str = option("logits", "The metric g: logits (pulled back from the outputs), "
                         "hidden (every layer's pre-activations and the outputs), "
                         "hidden:<layer>,...,logits, kfac or diagonal.",
                         check=metrics_lib.parse_metric)
    preconditioner: str = option("none", "CG preconditioner for the walk's solves.",
                                 choices=metrics_lib.PRECONDITIONERS)


def jit_compile(mode: str, model) -> bool:
    """XLA or not for `mode`; 'auto' chooses graph mode for conv nets on a
    CPU-only machine (XLA's CPU convolutions run 8-10x slower than the
    default kernels) and XLA otherwise, and logs the choice."""
    import keras
    import tensorflow as tf
    from absl import logging

    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {mode!r}.")
    if mode != "auto":
        return mode == "xla"
    convolutional = any(isinstance(layer, keras.layers.Conv2D) for layer in _layers(model))
    accelerator = bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))
    chosen = accelerator or not convolutional
    logging.info("--compile=auto: %s (%s).", "XLA" if chosen else "graph mode",
                 "an accelerator is present" if accelerator else
                 "a conv net on CPU, where XLA's convolutions are slower" if convolutional else
                 "no convolutions")
    return chosen


def _layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _layers(layer)

"""What every runner shares: flags from a run's config, one `main`, the report.

A runner is its application's config dataclass (`tfgeo.experiments.config`)
turned into absl flags, and the application's `run(config)`:

    entry = common.runner(sparsify_experiment.SparsifyConfig, sparsify_experiment.run)
    if __name__ == "__main__":
        entry()

Every field becomes one flag with the field's help, default and checks
(bounds, choices, finite floats, existing paths), so a bad value stops the
run at flag parsing with one line naming the flag. `main` then builds the
config, runs it under the --strategy, writes results.json and the plots,
and prints the summary table. Input errors, diverged results and Ctrl-C end
with one line, not a traceback.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading

from absl import app
from absl import flags
from absl import logging

from tfgeo.experiments import config as config_lib
from tfgeo.experiments import results

FLAGS = flags.FLAGS
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
# More logical devices than this on one CPU only slows TensorFlow's start to a crawl.
MAX_LOGICAL_CPUS = 64


def _define(name: str, default, meta: dict) -> None:
    help_text = meta["help"]
    bounds = config_lib.describe_bounds(meta)
    if bounds:
        help_text += f" ({bounds})"
    choices, element = meta.get("choices"), meta.get("element")
    if isinstance(default, bool):
        flags.DEFINE_bool(name, default, help_text)
    elif isinstance(default, tuple) or element is not None:
        if choices:
            help_text += f" Some of: {', '.join(choices)}."
        flags.DEFINE_list(name, [str(v) for v in default], help_text)
    elif choices:
        flags.DEFINE_enum(name, default, list(choices), help_text)
    elif isinstance(default, int):
        flags.DEFINE_integer(name, default, help_text)
    elif isinstance(default, float) or (default is None and bounds):
        flags.DEFINE_float(name, default, help_text)
    else:
        flags.DEFINE_string(name, default, help_text)
    flags.register_validator(name, lambda value, n=name, m=meta: _valid(n, value, m),
                             message=f"--{name} is not valid")


def _valid(name: str, value, meta: dict) -> bool:
    try:
        parsed = _parse(value, meta)
    except ValueError as e:
        raise flags.ValidationError(f"--{name}: {e}.") from None
    problem = config_lib.check_value(name, parsed, meta)
    if problem:
        raise flags.ValidationError(f"--{name}: {problem}.")
    return True


def _parse(value, meta: dict):
    element = meta.get("element")
    if element is None or value is None:
        return value
    try:
        return tuple(element(v) for v in value)
    except ValueError:
        raise ValueError(f"{','.join(value)} is not a list of {element.__name__} values") from None


def define_flags(config_cls) -> None:
    """Defines one flag per field of `config_cls` (sub-configs' fields with
    their prefixes), with the application's defaults."""
    _define_from(config_cls(), "")


def _define_from(config, prefix: str) -> None:
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            _define_from(value, prefix + field.metadata.get("prefix", ""))
        elif prefix + field.name not in FLAGS:
            _define(prefix + field.name, value, dict(field.metadata))


def config_from_flags(config_cls):
    """An instance of `config_cls` holding the parsed flags' values."""
    return _from_flags(config_cls(), "")


def _from_flags(defaults, prefix: str):
    kwargs = {}
    for field in dataclasses.fields(defaults):
        value = getattr(defaults, field.name)
        if dataclasses.is_dataclass(value):
            kwargs[field.name] = _from_flags(value, prefix + field.metadata.get("prefix", ""))
        else:
            kwargs[field.name] = _parse(FLAGS[prefix + field.name].value, field.metadata)
    return type(defaults)(**kwargs)


def define_strategy() -> None:
    flags.DEFINE_enum("strategy", "default", list(STRATEGIES),
                      "tf.distribute strategy: default (one device), mirrored (all local GPUs), "
                      "multi_worker (TF_CONFIG cluster), tpu (see --tpu).")
    flags.DEFINE_string("tpu", None, "TPU name or grpc:// address for --strategy=tpu.")
    flags.DEFINE_float("worker_timeout", 300.0, "--strategy=multi_worker: seconds to wait for "
                       "every worker of TF_CONFIG to join before ending with one line.",
                       lower_bound=1.0)
    flags.DEFINE_integer("logical_cpus", 0, "Split the CPU into this many logical devices (for "
                         "--strategy=mirrored without GPUs, e.g. to test it); 0 leaves it whole.",
                         lower_bound=0, upper_bound=MAX_LOGICAL_CPUS)


def define_imports() -> None:
    flags.DEFINE_list("imports", [], "Python modules to import before any network is loaded, "
                      "so the Keras classes they register (a subclassed model's, custom "
                      "layers') can be deserialised from --start_model, --model_a, --model_b.")


def import_modules() -> None:
    """Imports the --imports modules (exits with one line naming one that fails)."""
    import importlib

    for name in FLAGS.imports:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - any failure: the module is unusable
            sys.exit(f"FATAL --imports={name}: cannot be imported ({type(e).__name__}: {e}).")


def strategy(obstacle=None, config=None):
    """The --strategy, built before any model (exits with one line if it cannot be).

    obstacle: a function of the config returning why this run cannot run over
    several replicas (None if it can), or None: checked before a multi-worker
    cluster is joined, and after any other strategy is built, if it has
    several replicas."""
    import tensorflow as tf

    from tfgeo import distribute

    why = obstacle(config) if obstacle is not None else None
    if FLAGS.strategy == "multi_worker" and why:
        sys.exit(f"FATAL --strategy=multi_worker: {why}.")
    if FLAGS.logical_cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.logical_cpus)
    try:
        if (FLAGS.strategy == "mirrored" and FLAGS.logical_cpus > 1
                and not tf.config.list_physical_devices("GPU")):
            chosen = tf.distribute.MirroredStrategy(
                [f"/cpu:{i}" for i in range(FLAGS.logical_cpus)])
        else:
            chosen = distribute.make_strategy(FLAGS.strategy, FLAGS.tpu, FLAGS.worker_timeout)
    except ValueError as e:
        sys.exit(f"FATAL --strategy={FLAGS.strategy}: {e}")
    if why and chosen.num_replicas_in_sync > 1:
        sys.exit(f"FATAL --strategy={FLAGS.strategy}: {why}.")
    logging.info("Strategy %s: %d replica(s)", FLAGS.strategy, chosen.num_replicas_in_sync)
    return chosen


def run_and_report(config, run, obstacle=None) -> results.Report:
    """`run(config)` under the --strategy, then results.json, plots and the table."""
    chosen = strategy(obstacle, config)
    if chosen.num_replicas_in_sync > 1 and config.run.compile != "graph":
        # XLA cannot compile a step that reads mirrored variables held on other
        # devices (tensorflow.org/xla/known_issues, "tf.Variable on a different device").
        logging.warning("--compile=%s turned to graph mode: XLA does not compile "
                        "MirroredStrategy steps across %d devices.", config.run.compile,
                        chosen.num_replicas_in_sync)
        config = dataclasses.replace(config, run=dataclasses.replace(config.run, compile="graph"))
    with chosen.scope():
        report = run(config)
    results.write_report(config.run.output_dir, report, config_lib.flat(config))
    return report


class Interrupts:
    """Ctrl-C as Python's default handler treats it (KeyboardInterrupt in the
    main thread), made to end a run in one line wherever it lands.

    Two ways a bare KeyboardInterrupt can end in a traceback instead: code on
    the way out (a cleanup, a TensorFlow call reporting it as its own error)
    replaces it with another exception, or it lands in a finaliser, where
    Python prints "Exception ignored in ..." and runs on. `requested` records
    the first, so `main` still prints one line; a swallowed interrupt is not
    printed and is delivered again a moment later.
    """

    requested = False

    @classmethod
    def install(cls) -> None:
        # A process started with SIGINT ignored (nohup, `cmd &`) keeps ignoring it.
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, cls._on_sigint)
            cls._previous_hook = sys.unraisablehook
            sys.unraisablehook = cls._unraisable

    @classmethod
    def _on_sigint(cls, signum, frame):
        cls.requested = True
        raise KeyboardInterrupt

    @classmethod
    def _unraisable(cls, unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
        else:
            cls._previous_hook(unraisable)


def main(config_cls, run, obstacle=None) -> None:
    """absl `app.run` of `run(config)`; see the module docstring."""

    def _main(argv):
        if len(argv) > 1:
            sys.exit(f"FATAL unexpected arguments {' '.join(argv[1:])} (flags start with --).")
        config = config_from_flags(config_cls)
        import_modules()
        interrupted = (f"Interrupted; rerun with the same flags to resume from "
                       f"{config.run.output_dir}.")
        Interrupts.install()
        try:
            run_and_report(config, run, obstacle)
        except config_lib.InputError as e:
            sys.exit(f"FATAL {e}")
        except results.NonFiniteError as e:
            sys.exit(f"FATAL {e}")
        except KeyboardInterrupt:
            sys.exit(interrupted)
        except Exception:
            if Interrupts.requested:  # raised on the way out of an interrupted step
                sys.exit(interrupted)
            raise

    app.run(_main)


def runner(config_cls, run, obstacle=None):
    """Defines the flags of `config_cls` and --strategy for the calling runner
    module (as its key flags, so `--help` lists them) and returns its entry
    point, `main(config_cls, run)`, for `__main__` and the console scripts."""
    import inspect

    define_flags(config_cls)
    if "strategy" not in FLAGS:
        define_strategy()
    if "imports" not in FLAGS:
        define_imports()
    caller = inspect.stack()[1].frame.f_globals["__name__"]
    # absl's --help lists the key flags of the module it takes for the main one,
    # named by its path: sys.argv[0], the runner under `python -m`, or the
    # console script (tfgeo-walk) that imports the runner by name.
    for module in {caller, sys.argv[0]} - {"__main__"}:
        for flag in FLAGS.get_key_flags_for_module(__name__):
            FLAGS.register_key_flag_for_module(module, flag)
    return lambda: main(config_cls, run, obstacle)

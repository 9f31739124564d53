"""Configs: one declaration per option, checked the same way from flags or Python."""
import dataclasses

import pytest

from tfgeo.experiments import config
from tfgeo.experiments import connect_experiment as connect
from tfgeo.experiments import continual_experiment as continual
from tfgeo.experiments import sparsify_experiment as sparsification
from tfgeo.experiments import training
from tfgeo.experiments import walk

APPS = [sparsification.SparsifyConfig, continual.ContinualConfig, connect.ConnectConfig,
        training.BaseTrainingConfig, walk.WalkConfig]


@pytest.mark.parametrize("cls", APPS)
def test_defaults_are_valid_and_flat_names_unique(cls):
    cfg = cls()
    config.validate(cfg)
    names = list(config.flat(cfg))
    assert len(names) == len(set(names))
    assert "resume" not in config.identity(cfg) and "seed" in config.identity(cfg)


@pytest.mark.parametrize("field,value,message", [
    ("step_size", float("nan"), "--step_size: must be a finite number"),
    ("step_size", 0.0, r"--step_size: must be in \(0, "),
    ("damping", -1.0, r"--damping: must be in \[0, "),
    ("cg_iterations", 0, r"--cg_iterations: must be in \[1, "),
    ("output_metric", "kl", "--output_metric: 'kl' is not one of"),
])
def test_geodesic_options_are_checked(field, value, message):
    cfg = sparsification.SparsifyConfig()
    bad = dataclasses.replace(cfg, geodesic=dataclasses.replace(cfg.geodesic, **{field: value}))
    with pytest.raises(config.InputError, match=message):
        config.validate(bad)


def test_prefixed_groups_and_lists():
    cfg = dataclasses.replace(sparsification.SparsifyConfig(), methods=("geodesic", "geodesic"))
    with pytest.raises(config.InputError, match="--methods: repeats geodesic"):
        config.validate(cfg)
    cfg = sparsification.SparsifyConfig()
    bad = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=0))
    with pytest.raises(config.InputError, match="--train_epochs"):
        config.validate(bad)
    assert config.flat(cfg)["train_epochs"] == cfg.train.epochs
    assert sparsification.SparsifyConfig().data.validation_fraction == 0.1  # the app's default


def test_paths_must_exist(tmp_path):
    cfg = dataclasses.replace(sparsification.SparsifyConfig(), start_model=str(tmp_path / "x"))
    with pytest.raises(config.InputError, match="--start_model: .* does not exist"):
        config.validate(cfg)
    cfg = dataclasses.replace(sparsification.SparsifyConfig(), start_model=str(tmp_path))
    with pytest.raises(config.InputError, match="is not a file"):
        config.validate(cfg)


def test_auto_compile_picks_graph_mode_for_conv_nets_on_cpu(caplog):
    import keras
    import tensorflow as tf
    from absl import logging as absl_logging

    conv = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3),
                             keras.layers.Flatten(), keras.layers.Dense(3)])
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    on_accelerator = bool(tf.config.list_logical_devices("GPU")
                          or tf.config.list_logical_devices("TPU"))
    absl_logging.set_verbosity(absl_logging.INFO)
    with caplog.at_level("INFO"):
        assert config.jit_compile("auto", conv) is on_accelerator
        assert config.jit_compile("auto", dense) is True
    if not on_accelerator:
        assert "graph mode" in caplog.text and "conv net on CPU" in caplog.text
    # The flag overrides the choice either way.
    assert config.jit_compile("xla", conv) is True
    assert config.jit_compile("graph", dense) is False
    with pytest.raises(ValueError, match="compile mode"):
        config.jit_compile("fast", dense)

"""The networks of a run: built from the zoo by name, trained, or loaded and checked."""
from __future__ import annotations

import os

import keras
import numpy as np

from tfgeo import model_checks
from tfgeo.models import registry

from . import config as config_lib


def options(network: config_lib.NetworkConfig) -> dict:
    """The zoo builder's keyword options for `network.model`."""
    if network.model == "mlp":
        return {"hidden": tuple(int(h) for h in network.hidden)}
    if network.model.startswith("vgg"):
        return {"batch_norm": network.batch_norm, "width": network.width,
                "init": network.vgg_init}
    return {}


def check_fits(network: config_lib.NetworkConfig, dataset: str) -> None:
    """Raises ValueError (naming --model) when the model cannot take the dataset's images."""
    if network.model.startswith("vgg") and dataset in ("digits", "mnist"):
        raise config_lib.InputError(f"--model={network.model} needs 32x32 inputs; --dataset={dataset} has "
                         "8x8 or 28x28 images.")


def check_metric(metric: str, network: config_lib.NetworkConfig, input_shape,
                 num_classes: int) -> None:
    """Raises InputError naming --metric if it names layers the network lacks
    (checked on the architecture, before any training)."""
    from tfgeo import hidden_metric
    from tfgeo import metric_specs as metrics

    kind, layers = metrics.parse_metric(metric)
    if kind == "hidden" and layers:
        try:
            hidden_metric.representation_names(build(network, input_shape, num_classes), layers)
        except ValueError as e:
            raise config_lib.InputError(f"--metric={metric}: {e}") from None


def build(network: config_lib.NetworkConfig, input_shape, num_classes: int) -> keras.Model:
    """A fresh zoo network (raises ValueError naming --model if it cannot fit the inputs)."""
    try:
        return registry.get(network.model, input_shape, num_classes, **options(network))
    except ValueError as e:  # e.g. a conv net on inputs too small for its pooling
        raise config_lib.InputError(f"--model={network.model} does not fit inputs {tuple(input_shape)}: "
                         f"{e}") from None


def load(path: str, input_shape, num_classes: int, argument: str = "--start_model") -> keras.Model:
    """A saved `.keras` network, checked to take `input_shape`, output
    `num_classes` logits and hold finite weights; ValueError names `argument`."""
    if os.path.isdir(path):
        raise config_lib.InputError(f"{argument}={path} is a folder, not a .keras file.")
    if not os.path.isfile(path):
        raise config_lib.InputError(f"{argument}={path} does not exist.")
    try:
        model = keras.saving.load_model(path)
    except Exception as e:  # noqa: BLE001 - any failure means an unusable file
        first = str(e).splitlines()[0] if str(e) else ""
        if "Could not locate class" in first:  # a subclassed model or custom layer
            first = (first.split(". Make sure")[0] + "; name the module that defines it in "
                     "--imports")
        raise config_lib.InputError(f"{argument}={path} cannot be loaded (not a valid .keras file: "
                         f"{type(e).__name__}: {first})") from None
    try:
        model_checks.check_network(model, f"{argument}={path}")
    except (TypeError, ValueError) as e:
        raise config_lib.InputError(str(e)) from None
    expected = (None, *input_shape)
    # A subclassed model states no input or output shape: it is called instead.
    got = tuple(model.input_shape) if _has(model, "input_shape") else None
    try:
        outputs = model(np.zeros((2, *input_shape), np.float32), training=False)
    except Exception as e:  # noqa: BLE001 - any failure: these inputs do not fit
        first = str(e).splitlines()[0] if str(e) else ""
        raise config_lib.InputError(f"{argument}={path} takes inputs {got or '?'}; the data has "
                                    f"inputs {expected} ({type(e).__name__}: {first})") from None
    try:
        model_checks.check_outputs(outputs, f"{argument}={path}")
    except ValueError as e:
        raise config_lib.InputError(str(e)) from None
    classes = int(outputs.shape[-1])
    if (got is not None and got != expected) or classes != num_classes:
        raise config_lib.InputError(f"{argument}={path} takes inputs {got or expected} with "
                                    f"{classes} outputs; the data has inputs {expected} and "
                                    f"{num_classes} classes.")
    if not all(np.isfinite(w).all() for w in model.get_weights()):
        raise config_lib.InputError(f"{argument}={path} has NaN or Inf weights.")
    return model


def _has(model, attribute: str) -> bool:
    try:  # Keras raises AttributeError for a model never called on symbolic inputs
        getattr(model, attribute)
    except (AttributeError, ValueError):
        return False
    return True

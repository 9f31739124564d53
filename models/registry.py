"""One registry for the zoo: `get(name, input_shape, num_classes, **options)`."""
from __future__ import annotations

from . import lenet5 as lenet5_lib
from . import mlp as mlp_lib
from . import vgg as vgg_lib

_BUILDERS = {
    "mlp": mlp_lib.mlp,
    "lenet_300_100": mlp_lib.lenet_300_100,
    "lenet5": lenet5_lib.lenet5,
    "vgg11": vgg_lib.vgg11,
    "vgg16": vgg_lib.vgg16,
}


def names():
    return tuple(sorted(_BUILDERS))


def get(name: str, input_shape, num_classes: int, **options):
    """Builds model `name` for inputs of `input_shape` and `num_classes` logits."""
    if name not in _BUILDERS:
        raise ValueError(f"Unknown model {name!r}; expected one of {names()}.")
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
    return _BUILDERS[name](input_shape=tuple(input_shape), num_classes=int(num_classes), **options)

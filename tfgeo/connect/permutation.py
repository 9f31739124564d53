"""Hidden-unit permutations of feed-forward networks, and weight matching.

Permuting the units of a hidden layer (columns of its kernel and entries of
its bias, and the matching input rows of the next kernel) leaves the
network's function unchanged. Weight matching (Ainsworth et al. 2023, "Git
Re-Basin") picks, for network B, the permutations that bring its weights
closest to network A's: coordinate ascent over layers, each step a linear
assignment problem max_P <W_A, P W_B> over that layer's units.

Supported: chains of Dense and Conv2D layers with element-wise activations,
pooling and Flatten in between (the zoo's MLPs, LeNet-5 and VGG without batch
normalisation). Weights are lists shaped like `model.trainable_variables`.
"""
from __future__ import annotations

from typing import NamedTuple

import keras
import numpy as np

_WEIGHTED = (keras.layers.Dense, keras.layers.Conv2D)
_NEUTRAL = (keras.layers.Flatten, keras.layers.MaxPooling2D, keras.layers.AveragePooling2D,
            keras.layers.Activation, keras.layers.ReLU, keras.layers.Dropout,
            keras.layers.InputLayer)


class Unit(NamedTuple):
    kernel: int  # index of the kernel in the weight list
    bias: int | None  # index of the bias, or None
    width: int  # output units (channels)
    spatial_in: int  # for a Dense after Flatten of a conv map: H*W (else 1)


def spec(model: keras.Model) -> list[Unit]:
    """The weighted layers of `model` in order, with where their weights sit."""
    layers = _flat_layers(model)
    index = {id(v): i for i, v in enumerate(model.trainable_variables)}
    units, previous_channels = [], None
    for layer in layers:
        if isinstance(layer, _WEIGHTED):
            kernel = index[id(layer.kernel)]
            bias = index[id(layer.bias)] if layer.use_bias else None
            in_size = int(layer.kernel.shape[-2]) if isinstance(layer, keras.layers.Conv2D) else int(
                layer.kernel.shape[0])
            spatial = 1
            if isinstance(layer, keras.layers.Dense) and previous_channels:
                spatial = in_size // previous_channels
                if spatial * previous_channels != in_size:
                    raise ValueError(f"{layer.name}: input {in_size} is not a multiple of "
                                     f"{previous_channels} channels.")
            units.append(Unit(kernel, bias, int(layer.kernel.shape[-1]), spatial))
            previous_channels = int(layer.kernel.shape[-1])
        elif not isinstance(layer, _NEUTRAL) and layer.trainable_weights:
            raise ValueError(f"Layer {layer.name} ({type(layer).__name__}) is not supported by "
                             "weight matching (supported: Dense/Conv2D chains).")
    if len(units) < 2:
        raise ValueError("Weight matching needs at least two weighted layers.")
    return units


def _flat_layers(model):
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(_flat_layers(layer))
        else:
            out.append(layer)
    return out


def permute(weights, units: list[Unit], perms) -> list[np.ndarray]:
    """Applies unit permutations `perms[l]` (one per hidden layer, i.e. every
    weighted layer but the last) to `weights`; the function is unchanged."""
    if len(perms) != len(units) - 1:
        raise ValueError(f"{len(perms)} permutations for {len(units) - 1} hidden layers.")
    out = [np.array(w, copy=True) for w in weights]
    for layer, perm in enumerate(perms):
        u, nxt = units[layer], units[layer + 1]
        out[u.kernel] = out[u.kernel][..., perm]
        if u.bias is not None:
            out[u.bias] = out[u.bias][perm]
        out[nxt.kernel] = _permute_inputs(out[nxt.kernel], nxt, perm)
    return out


def _permute_inputs(kernel, unit: Unit, perm):
    if kernel.ndim == 4:  # conv: [kh, kw, in, out]
        return kernel[:, :, perm, :]
    if unit.spatial_in > 1:  # dense after flatten of [H, W, C]: rows are (h, w, c)
        k = kernel.reshape(unit.spatial_in, len(perm), -1)
        return k[:, perm, :].reshape(kernel.shape)
    return kernel[perm, :]


def _unit_features(weights, units, layer, perms, side, outgoing_too=True):
    """Rows describing each unit of `layer`: its incoming weights (inputs already
    permuted) and bias, and its outgoing weights (outputs already permuted)."""
    u, nxt = units[layer], units[layer + 1]
    w_in = weights[u.kernel]
    if layer > 0 and side == "b":
        w_in = _permute_inputs(w_in, u, perms[layer - 1])
    incoming = np.moveaxis(w_in, -1, 0).reshape(u.width, -1)
    parts = [incoming]
    if u.bias is not None:
        parts.append(weights[u.bias][:, None])
    if not outgoing_too:
        return np.concatenate(parts, axis=1)
    w_out = weights[nxt.kernel]
    if side == "b" and layer + 1 < len(perms):
        w_out = w_out[..., perms[layer + 1]]
    if w_out.ndim == 4:
        outgoing = np.moveaxis(w_out, 2, 0).reshape(u.width, -1)
    elif nxt.spatial_in > 1:
        outgoing = np.moveaxis(w_out.reshape(nxt.spatial_in, u.width, -1), 1, 0).reshape(u.width, -1)
    else:
        outgoing = w_out.reshape(u.width, -1)
    parts.append(outgoing)
    return np.concatenate(parts, axis=1)


def weight_matching(units: list[Unit], weights_a, weights_b, max_iterations: int = 100,
                    seed: int = 0):
    """Permutations of B's hidden units maximising sum_l <W_A,l, P W_B,l>.

    Returns (perms, permuted weights of B). Initialised by one forward pass
    matching units on their incoming weights only (each layer's inputs are
    already aligned by then, so an exactly permuted copy is recovered), then
    coordinate ascent on incoming and outgoing weights in random layer order
    until no layer's assignment changes.
    """
    from scipy.optimize import linear_sum_assignment

    perms = [np.arange(u.width) for u in units[:-1]]
    for layer in range(len(perms)):
        fa = _unit_features(weights_a, units, layer, perms, "a", outgoing_too=False)
        fb = _unit_features(weights_b, units, layer, perms, "b", outgoing_too=False)
        perms[layer] = linear_sum_assignment(fa @ fb.T, maximize=True)[1]
    rng = np.random.default_rng(seed)
    for _ in range(max_iterations):
        changed = False
        for layer in rng.permutation(len(perms)):
            fa = _unit_features(weights_a, units, layer, perms, "a")
            fb = _unit_features(weights_b, units, layer, perms, "b")
            _, cols = linear_sum_assignment(fa @ fb.T, maximize=True)
            if not np.array_equal(cols, perms[layer]):
                perms[layer], changed = cols, True
        if not changed:
            break
    return perms, permute(weights_b, units, perms)

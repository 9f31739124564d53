"""VGG in its CIFAR form (Simonyan & Zisserman 2015, as adapted for 32x32 inputs).

3x3 convolutions with 'same' padding, 2x2 max-pooling after each block, a
1x1x512 feature map for 32x32 inputs, and one Dense layer to the logits
(the CIFAR classifier head used by e.g. kuangliu/pytorch-cifar).

Batch normalization is optional and off by default: with batch statistics the
metric would depend on the batch. When it is on, tfgeo always evaluates the
metric with `training=False` (inference mode, moving statistics).

Without batch normalization a deep VGG needs a variance-preserving
initialisation: under Keras's default Glorot-uniform kernels the ReLU halves
the signal's second moment at every layer, so VGG16's 13 convolutions start
with logits ~1e-4 of their inputs' scale and Adam does not leave chance.
`init="he_fan_out"` draws kernels from N(0, 2 / (3 * 3 * out_channels)),
the initialisation of Garipov et al.'s VGG16 (dnn-mode-connectivity).
"""
from __future__ import annotations

import keras

INITS = ("glorot_uniform", "he_fan_out")

CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
}


def vgg(config, input_shape=(32, 32, 3), num_classes=10, batch_norm=False, width=1.0,
        init="glorot_uniform", dtype=None, name="vgg"):
    """Builds a VGG from a config list (channel counts, 'M' for pooling).

    `width` scales every channel count (e.g. 0.25 for a quick CPU run);
    `init` is one of `INITS` (the convolutions' kernels; biases start at 0).
    """
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}.")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}.")
    kernel_init = ("glorot_uniform" if init == "glorot_uniform" else
                   keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal"))
    layers = [keras.Input(tuple(input_shape), dtype=dtype)]
    convs = pools = 0
    for item in config:  # layers named conv1.., bn1.., relu1.., pool1..: stable names
        if item == "M":
            pools += 1
            layers.append(keras.layers.MaxPooling2D(2, dtype=dtype, name=f"pool{pools}"))
            continue
        convs += 1
        channels = max(1, int(round(item * width)))
        layers.append(keras.layers.Conv2D(channels, 3, padding="same", use_bias=True, dtype=dtype,
                                          kernel_initializer=kernel_init, name=f"conv{convs}"))
        if batch_norm:
            layers.append(keras.layers.BatchNormalization(dtype=dtype, name=f"bn{convs}"))
        layers.append(keras.layers.ReLU(dtype=dtype, name=f"relu{convs}"))
    layers += [keras.layers.Flatten(dtype=dtype),
               keras.layers.Dense(int(num_classes), dtype=dtype, name="logits")]
    return keras.Sequential(layers, name=name)


def vgg11(input_shape=(32, 32, 3), num_classes=10, **options):
    return vgg(CONFIGS["vgg11"], input_shape, num_classes, name="vgg11", **options)


def vgg16(input_shape=(32, 32, 3), num_classes=10, **options):
    return vgg(CONFIGS["vgg16"], input_shape, num_classes, name="vgg16", **options)

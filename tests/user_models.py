"""Keras models of the kinds users bring (not the zoo), on digits' 8x8x1 inputs
with 10 logits, a few thousand weights each; and kinds tfgeo refuses.

`SUPPORTED` and `REFUSED` map a name to a builder (seeded); `REFUSED` also
names what the one-line refusal must say. `SubNet` is importable from here so
a saved one loads in a runner process.
"""
import keras

INPUT_SHAPE = (8, 8, 1)
CLASSES = 10


def _input():
    return keras.Input(INPUT_SHAPE)


def functional_gelu_dropout():
    x = _input()
    h = keras.layers.Flatten()(x)
    h = keras.layers.Dense(40, activation="gelu")(h)
    h = keras.layers.Dropout(0.2)(h)
    return keras.Model(x, keras.layers.Dense(CLASSES)(h), name="gelu_dropout")


def cnn_batch_norm():
    x = _input()
    h = keras.layers.Conv2D(8, 3, use_bias=False)(x)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(x, keras.layers.Dense(CLASSES)(h), name="cnn_batch_norm")


def residual_layer_norm():
    x = _input()
    h = keras.layers.Dense(24)(keras.layers.Flatten()(x))
    r = keras.layers.LayerNormalization()(h)
    r = keras.layers.Dense(24, activation="relu")(r)
    h = keras.layers.Add()([h, r])
    return keras.Model(x, keras.layers.Dense(CLASSES)(h), name="residual_layer_norm")


@keras.saving.register_keras_serializable(package="tfgeo_tests")
class SubNet(keras.Model):
    """A subclassed model with a skip connection."""

    def __init__(self, width=32, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.flatten = keras.layers.Flatten()
        self.hidden = keras.layers.Dense(width, activation="relu")
        self.skip = keras.layers.Dense(width)
        self.head = keras.layers.Dense(CLASSES)

    def call(self, x, training=False):
        h = self.flatten(x)
        return self.head(self.hidden(h) + self.skip(h))

    def get_config(self):
        return {**super().get_config(), "width": self.width}


def subclassed():
    model = SubNet(name="subclassed")
    model(keras.ops.zeros((1, *INPUT_SHAPE)))
    return model


def separable_depthwise():
    x = _input()
    h = keras.layers.SeparableConv2D(8, 3, activation="relu")(x)
    h = keras.layers.DepthwiseConv2D(3, activation="relu")(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(x, keras.layers.Dense(CLASSES)(h), name="separable_depthwise")


def attention():
    x = _input()
    tokens = keras.layers.Dense(16)(keras.layers.Reshape((8, 8))(x))  # rows as 8 tokens
    h = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)(tokens, tokens)
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(x, keras.layers.Dense(CLASSES)(h), name="attention")


def gru_unrolled():
    x = _input()
    h = keras.layers.GRU(16, unroll=True)(keras.layers.Reshape((8, 8))(x))
    return keras.Model(x, keras.layers.Dense(CLASSES)(h), name="gru_unrolled")


def shared_layer():
    x = _input()
    h = keras.layers.Dense(32, activation="tanh")(keras.layers.Flatten()(x))
    shared = keras.layers.Dense(32, activation="tanh", name="shared")
    h = shared(shared(h))
    return keras.Model(x, keras.layers.Dense(CLASSES)(h), name="shared_layer")


def frozen_layer():
    x = _input()
    h = keras.layers.Dense(32, activation="relu", trainable=False,
                           name="frozen")(keras.layers.Flatten()(x))
    return keras.Model(x, keras.layers.Dense(CLASSES)(h), name="frozen_layer")


SUPPORTED = {f.__name__: f for f in (
    functional_gelu_dropout, cnn_batch_norm, residual_layer_norm, subclassed,
    separable_depthwise, attention, gru_unrolled, shared_layer, frozen_layer)}


def _softmax_head():
    x = _input()
    h = keras.layers.Flatten()(x)
    return keras.Model(x, keras.layers.Dense(CLASSES, activation="softmax")(h))


def _two_outputs():
    x = _input()
    h = keras.layers.Flatten()(x)
    return keras.Model(x, [keras.layers.Dense(CLASSES)(h), keras.layers.Dense(2)(h)])


class _DictNet(keras.Model):
    def __init__(self):
        super().__init__()
        self.flatten, self.head = keras.layers.Flatten(), keras.layers.Dense(CLASSES)

    def call(self, x):
        return {"logits": self.head(self.flatten(x))}


def _dict_outputs():
    model = _DictNet()
    model(keras.ops.zeros((1, *INPUT_SHAPE)))
    return model


def _mixed_precision():
    x = _input()
    h = keras.layers.Dense(16, dtype="mixed_float16")(keras.layers.Flatten()(x))
    return keras.Model(x, keras.layers.Dense(CLASSES, dtype="float32")(h))


def _gru_rolled():
    x = _input()
    h = keras.layers.GRU(16)(keras.layers.Reshape((8, 8))(x))
    return keras.Model(x, keras.layers.Dense(CLASSES)(h))


#: name -> (builder, what the refusal says)
REFUSED = {
    "softmax_head": (_softmax_head, "softmax"),
    "two_outputs": (_two_outputs, "2 outputs"),
    "dict_outputs": (_dict_outputs, "dict of outputs"),
    "mixed_precision": (_mixed_precision, "float16"),
    "gru_rolled": (_gru_rolled, "unroll=True"),
}


def build(name: str, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return (SUPPORTED[name] if name in SUPPORTED else REFUSED[name][0])()

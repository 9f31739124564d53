"""Zoo: parameter counts against independently computed and published figures."""
import keras
import numpy as np
import pytest

from tfgeo import models


def dense(n_in, n_out):
    return n_in * n_out + n_out


def conv(k, c_in, c_out):
    return k * k * c_in * c_out + c_out


def vgg_count(config, in_channels, classes, batch_norm):
    total, c = 0, in_channels
    for item in config:
        if item == "M":
            continue
        total += conv(3, c, item) + (4 * item if batch_norm else 0)  # BN: gamma, beta, mean, var
        c = item
    return total + dense(c, classes)


VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def test_lenet_300_100_count():
    m = models.get("lenet_300_100", (28, 28, 1), 10)
    assert m.count_params() == dense(784, 300) + dense(300, 100) + dense(100, 10) == 266_610


def test_configurable_mlp_count():
    m = models.get("mlp", (8, 8, 1), 10, hidden=(32, 16, 8))
    assert m.count_params() == dense(64, 32) + dense(32, 16) + dense(16, 8) + dense(8, 10)


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 1)])
def test_lenet5_count(shape):
    m = models.get("lenet5", shape, 10)
    want = conv(5, 1, 6) + conv(5, 6, 16) + dense(400, 120) + dense(120, 84) + dense(84, 10)
    assert m.count_params() == want == 61_706


@pytest.mark.parametrize("name,config", [("vgg11", VGG11), ("vgg16", VGG16)])
@pytest.mark.parametrize("classes", [10, 100])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_vgg_counts(name, config, classes, batch_norm):
    m = models.get(name, (32, 32, 3), classes, batch_norm=batch_norm)
    assert m.count_params() == vgg_count(config, 3, classes, batch_norm)
    if batch_norm and classes == 10:
        # Published CIFAR-10 figures count BN's trainable gamma/beta only
        # (kuangliu/pytorch-cifar: VGG11 9.23M, VGG16 14.73M).
        trainable = sum(int(np.prod(w.shape)) for w in m.trainable_weights)
        assert trainable == {"vgg11": 9_231_114, "vgg16": 14_728_266}[name]


@pytest.mark.parametrize("name,shape,options", [
    ("mlp", (8, 8, 1), {"hidden": (16,)}),
    ("lenet_300_100", (28, 28, 1), {}),
    ("lenet5", (28, 28, 1), {}),
    ("vgg11", (32, 32, 3), {"width": 0.125}),
    ("vgg16", (32, 32, 3), {"width": 0.125, "batch_norm": True}),
])
def test_trains_a_few_steps_on_random_data(name, shape, options):
    m = models.get(name, shape, 10, **options)
    rng = np.random.default_rng(0)
    x = rng.random((32, *shape), dtype=np.float32)
    y = rng.integers(0, 10, 32)
    m.compile(keras.optimizers.SGD(0.05),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.copy() for w in m.get_weights()]
    history = m.fit(x, y, epochs=3, batch_size=16, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, m.get_weights()))
    assert m.output_shape == (None, 10)


def test_unknown_model_and_bad_sizes():
    with pytest.raises(ValueError, match="'resnet'.*lenet5"):
        models.get("resnet", (28, 28, 1), 10)
    with pytest.raises(ValueError, match="num_classes"):
        models.get("mlp", (28, 28, 1), 1)
    with pytest.raises(ValueError, match="hidden"):
        models.get("mlp", (28, 28, 1), 10, hidden=(0,))


def test_vgg_he_fan_out_init_keeps_the_signal_through_vgg16():
    """he_fan_out kernels have variance 2 / (9 * out channels); through VGG16's
    13 ReLU convolutions (and 4 poolings) the last features keep a tenth
    of the input's scale; Keras's default Glorot kernels leave ~40x less."""
    x = np.random.default_rng(0).normal(size=(32, 32, 32, 3)).astype(np.float32)
    features = {}
    for init in models.vgg.INITS:
        keras.utils.set_random_seed(0)
        m = models.get("vgg16", (32, 32, 3), 10, width=0.25, init=init)
        kernel = m.get_layer("conv7").kernel.numpy()
        if init == "he_fan_out":
            expected = np.sqrt(2.0 / (9 * kernel.shape[-1]))
            assert kernel.std() == pytest.approx(expected, rel=0.05)
            assert np.all(m.get_layer("conv7").bias.numpy() == 0)
        cut = keras.Model(m.inputs, m.get_layer("relu13").output)
        features[init] = float(np.sqrt(np.mean(cut(x).numpy() ** 2)))
    # measured: 0.083 and 0.0018 of the input's scale (1.0)
    assert features["he_fan_out"] > 0.02 * np.sqrt(np.mean(x ** 2))
    assert features["glorot_uniform"] < 0.1 * features["he_fan_out"]
    with pytest.raises(ValueError, match="init"):
        models.get("vgg11", (32, 32, 3), 10, width=0.125, init="zeros")

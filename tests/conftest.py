import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture(scope="session")
def digits_endpoints():
    """(digits dataset, [net_a, net_b]): two 64-unit MLPs trained from seeds 1 and 2,
    the endpoints every path test connects. Tests read them and never write them."""
    from tfgeo import models
    from tfgeo.experiments import data

    ds = data.load_digits(seed=0)
    nets = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        net = models.get("mlp", ds.input_shape, 10, hidden=(64,))
        net.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        net.fit(ds.train.x, ds.train.y, epochs=40, batch_size=64, verbose=0)
        nets.append(net)
    return ds, nets

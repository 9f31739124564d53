"""experiments.networks: the zoo options a run's flags choose."""
import numpy as np
import pytest

from tfgeo.experiments import config as config_lib
from tfgeo.experiments import networks


@pytest.mark.parametrize("init", ["glorot_uniform", "he_fan_out"])
def test_vgg_init_flag_reaches_the_built_network(init):
    network = config_lib.NetworkConfig(model="vgg16", width=0.25, vgg_init=init)
    assert networks.options(network) == {"batch_norm": False, "width": 0.25, "init": init}
    kernel = networks.build(network, (32, 32, 3), 10).get_layer("conv10").kernel.numpy()
    he_std = np.sqrt(2.0 / (9 * kernel.shape[-1]))
    glorot_std = np.sqrt(2.0 / (9 * (kernel.shape[-2] + kernel.shape[-1])))
    expected = he_std if init == "he_fan_out" else glorot_std
    assert kernel.std() == pytest.approx(expected, rel=0.05)


def test_non_vgg_models_take_no_vgg_options():
    assert networks.options(config_lib.NetworkConfig(model="lenet5", vgg_init="he_fan_out")) == {}

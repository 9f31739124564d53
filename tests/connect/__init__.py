"""Tests of tfgeo.connect; `trained_pair` gives them two small endpoints."""
import keras

from tfgeo.models import registry


def trained_pair(ds, seeds=(1, 2)):
    """Two MLPs (one hidden layer of 16) trained for 2 epochs on `ds.train`
    from different seeds: endpoints for a path."""
    nets = []
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        m = registry.get("mlp", ds.input_shape, ds.num_classes, hidden=(16,))
        m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        m.fit(ds.train.x, ds.train.y, epochs=2, batch_size=64, verbose=0)
        nets.append(m)
    return nets

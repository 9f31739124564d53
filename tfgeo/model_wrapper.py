"""The base of tfgeo's Keras models: an inner network trained by a custom `train_step`.

`GeodesicModel`, `MaskedModel` and `EWCModel` wrap a built network: calling
the wrapper calls the network, `fit` runs the subclass's `train_step`, and
`.keras` files save the network and the subclass's settings. Everything here
uses Keras's public API (`compute_loss`, `metrics`, `get_config`).
"""
from __future__ import annotations

import keras
import tensorflow as tf

from tfgeo import distribute
from tfgeo import model_checks


class ModelWrapper(keras.Model):
    """Wraps `model`; subclasses implement `train_step`.

    Serialisation: `get_config` saves the network, every attribute named in
    `config_keys` (plain values) and in `object_keys` (Keras objects, e.g. an
    objective), under the constructor argument of the same name.
    """

    config_keys: tuple = ()
    object_keys: tuple = ()

    def __init__(self, model: keras.Model, **kwargs):
        super().__init__(**kwargs)
        model_checks.check_network(model)
        self.model = model

    def call(self, inputs, training=False):
        return self.model(inputs, training=training)

    def loss_and_gradients(self, data, penalty=None):
        """The compiled loss on a batch (`training=True`) and the gradient of
        loss + penalty() with respect to the network's trainable variables.

        Returns (x, y, sample_weight, y_pred, loss, gradients).
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self.model(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                     training=True)
            total = loss
            if penalty is not None:
                # Keras computes the compiled loss in floatx; a float64 network's
                # penalty is float64: add them in the wider type.
                extra = penalty()
                wide = loss.dtype if loss.dtype.size >= extra.dtype.size else extra.dtype
                total = tf.cast(loss, wide) + tf.cast(extra, wide)
        gradients = tape.gradient(total, self.model.trainable_variables)
        return x, y, sample_weight, y_pred, loss, gradients

    def record_loss(self, loss, batch_size) -> None:
        """Updates compile's loss tracker, reported as `loss`, with the mean loss.

        `compute_loss` divides by the replica count (so summed gradients are
        right under tf.distribute); the tracker wants the mean, as in Keras's
        own `train_step`.
        """
        loss = loss * tf.cast(distribute.num_replicas(), loss.dtype)
        for tracker in self.metrics:
            if tracker.name == "loss":
                tracker.update_state(loss, sample_weight=batch_size)

    def has_compiled_metrics(self) -> bool:
        """Whether `compile` was given metrics (they need labels)."""
        return any(m.name == "compile_metrics" for m in self.metrics)

    def save(self, filepath, *args, **kwargs):
        if str(filepath).endswith((".h5", ".hdf5")):
            raise ValueError(f"{type(self).__name__} saves only as .keras (the legacy HDF5 "
                             f"format cannot restore its custom state): {filepath}")
        return super().save(filepath, *args, **kwargs)

    def get_config(self):
        config = {"name": self.name, "model": keras.saving.serialize_keras_object(self.model)}
        for key in self.object_keys:
            config[key] = keras.saving.serialize_keras_object(getattr(self, key))
        for key in self.config_keys:
            config[key] = getattr(self, key)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("model", *cls.object_keys):
            config[key] = keras.saving.deserialize_keras_object(config[key],
                                                                custom_objects=custom_objects)
        return cls(**config)

"""The default task loss: cross-entropy of integer labels against logits."""
from __future__ import annotations

import keras


def classification_loss() -> keras.losses.Loss:
    """Sparse categorical cross-entropy from logits (tfgeo's networks output logits)."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

"""Model zoo: Keras 3 builders behind one registry, `models.get(name, ...)`.

All models output logits (no final softmax), as the Fisher output metric and
`from_logits=True` losses expect.
"""
from .registry import get
from .registry import names

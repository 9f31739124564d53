"""The runners: thin absl binaries, one per application (`python -m runners.sparsify`)."""
import os

# TensorFlow's C++ start-up lines (CPU features; failed CUDA probes on GPU
# wheels without a GPU) read like failures. Quieten them unless the user chose
# a level; this must run before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tfgeo  # noqa: E402,F401 - imports TensorFlow at that level (tfgeo/__init__.py)

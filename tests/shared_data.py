"""Where the shared data beside the checkout lives (never copied into the repository)."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
MNIST = os.path.join(SHARED, "mnist")
CIFAR10_ARCHIVE = os.path.join(SHARED, "cifar10_jpg.tar.gz")

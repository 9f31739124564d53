"""Entry point of the Bazel py_test targets: runs pytest on the module given as argv[1]."""
import sys

import pytest

if __name__ == "__main__":
    sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[1:]]))

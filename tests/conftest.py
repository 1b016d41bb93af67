"""Shared fixtures: a tiny real Fashion-MNIST dataset made with dataset_maker.py."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST = "/usr/share/datasets/fashion-mnist"
needs_fmnist = pytest.mark.skipif(not os.path.isdir(FMNIST),
                                  reason="needs Debian's dataset-fashion-mnist (setup.sh)")


@pytest.fixture(scope="session")
def tiny_fmnist(tmp_path_factory):
    """A dataset folder: real Fashion-MNIST, 30 images per class in 10 chunks, 100 test."""
    if not os.path.isdir(FMNIST):
        pytest.skip("needs Debian's dataset-fashion-mnist (setup.sh)")
    out = str(tmp_path_factory.mktemp("data") / "fm")
    r = subprocess.run([sys.executable, "dataset_maker.py", "--source=fashion_mnist",
                        "--output", out, "--images_per_class=30", "--test_per_class=10"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return out

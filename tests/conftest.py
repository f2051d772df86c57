"""Shared test settings, markers and fixtures.

Markers (setup.cfg): ``slow`` for end-to-end runs (quickstart, study, DDP, resume, the golden run;
deselect with ``-m "not slow"``); ``fashion_mnist`` for tests that read the installed Fashion-MNIST
(Debian's dataset-fashion-mnist): skipped, with the reason, where it is absent, as
scripts/test.sh promises.
"""
import os

import pytest
import torch
from helpers import ARCH, DATA_CFG, train_on_fashion_mnist

import slimnet
from slimnet.checkpoint import save_checkpoint

# One intra-op thread: the tests use tiny tensors, and several pytest processes often share a
# few cores; more threads than free cores makes OpenMP spin-wait and slows everything down.
torch.set_num_threads(1)

FASHION_MNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def pytest_collection_modifyitems(config, items):
    if os.path.exists(FASHION_MNIST):
        return
    skip = pytest.mark.skip(reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    for item in items:
        if "fashion_mnist" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def supernet_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("exp")
    net = train_on_fashion_mnist(slimnet.build("resnet20", **ARCH, max_width=0.5))
    save_checkpoint(d / "best.pt", net, config={"data": DATA_CFG, "experiment": {"name": "t", "output_dir": str(d)}},
                    epoch=1)
    return d / "best.pt"


@pytest.fixture(scope="session")
def switchable_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("snet")
    net = train_on_fashion_mnist(slimnet.build("resnet20", **ARCH, max_width=0.5, bn="switchable", switchable=[0.5, 0.25]), steps=3)
    save_checkpoint(d / "best.pt", net, config={"data": DATA_CFG})
    return d / "best.pt"


@pytest.fixture(scope="module")     # one per test module, as each module had before
def search_data():
    """Installed Fashion-MNIST at 16 px: 256 training and 160 held-out images (tests/search_common.py)."""
    from search_common import fashion

    torch.manual_seed(0)
    return fashion()


@pytest.fixture(scope="module")
def search_net(search_data):
    """A ResNet-20 supernet trained a few sandwich steps on ``search_data`` (the search tests')."""
    from search_common import trained_resnet20

    return trained_resnet20(search_data)

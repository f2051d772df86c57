"""Data and a small trained supernet shared by the search tests (tests/test_search*.py)."""
import torch
import torch.nn.functional as F
from helpers import sandwich_train

import slimnet
from slimnet.data import build_data

ARCH = dict(num_classes=10, in_channels=1, input_size=16)  # Fashion-MNIST shrunk to 16x16: fast tests


def fashion(n_train=256, n_heldout=160, seed=0):
    b = build_data("fashion_mnist", heldout_size=n_heldout, heldout_seed=seed, augment="none", subset=n_train)
    x = torch.stack([b.train[i][0] for i in range(len(b.train))])
    hx = torch.stack([b.heldout[i][0] for i in range(len(b.heldout))])
    shrink = lambda t: F.interpolate(t, size=16, mode="bilinear", antialias=True)  # noqa: E731
    return shrink(x), b.train.targets, shrink(hx), b.heldout.targets


def trained_resnet20(data):
    torch.manual_seed(0)
    x, y, _, _ = data
    return sandwich_train(slimnet.build("resnet20", **ARCH, max_width=0.5), x, y)


def macs(net, cfg):
    return slimnet.profile(net.space, cfg).macs

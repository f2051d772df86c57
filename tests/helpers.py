"""Helpers shared by several test files (tests/ is on sys.path under pytest and for scripts)."""
import os
import random
import struct

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCH = dict(num_classes=10, in_channels=1, input_size=16)   # Fashion-MNIST resized to 16x16: fast
DATA_CFG = {"name": "fashion_mnist", "root": None, "heldout_size": 120, "heldout_seed": 0, "input_size": 16}


def write_noise_fashion(directory: str, n_train: int = 32, n_test: int = 16, seed: int = 0) -> str:
    """Random uint8 images and labels in the four Fashion-MNIST IDX files."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)

    def write(name, array):
        header = bytes([0, 0, 8, array.ndim]) + struct.pack(">" + "i" * array.ndim, *array.shape)
        with open(os.path.join(directory, name), "wb") as f:
            f.write(header + array.astype(np.uint8).tobytes())

    write("train-images-idx3-ubyte", rng.integers(0, 256, (n_train, 28, 28)))
    write("train-labels-idx1-ubyte", rng.integers(0, 10, n_train))
    write("t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 28, 28)))
    write("t10k-labels-idx1-ubyte", rng.integers(0, 10, n_test))
    return directory


def sandwich_train(net, x, y, steps=40, batch=64, seed=0):
    """A few SGD steps with per-layer random configs (max, min, 2 random; a switchable net's own
    configs): not a random net."""
    rng, g = random.Random(seed), torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (batch,), generator=g)
        opt.zero_grad()
        cfgs = [net.space.max(), net.space.min(), net.space.random(rng), net.space.random(rng)]
        for cfg in net.switchable_configs or cfgs:
            net.set_channels(cfg)
            F.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
    net.set_channels(net.space.max())
    return net


def channel_places(ref, small, large, max_cfg):
    """Where ``small``'s channels of ``ref`` sit in ``large``'s active tensor, in small's order."""
    from slimnet.nn import channel_index, resolve

    def index(cfg):
        i = channel_index(ref, cfg, max_cfg)
        return list(range(resolve(ref, cfg))) if i is None else list(i)
    where = {p: k for k, p in enumerate(index(large))}
    return [where[p] for p in index(small)]


def train_on_fashion_mnist(net, steps=30, seed=0):
    """A few sandwich steps on 512 installed Fashion-MNIST images at 16 px (the command tests' supernets)."""
    from slimnet.data import build_data

    b = build_data("fashion_mnist", heldout_size=120, heldout_seed=0, exclude_heldout=True, augment="none",
                   subset=512, input_size=16)
    x = torch.stack([b.train[i][0] for i in range(len(b.train))])
    return sandwich_train(net, x, b.train.targets, steps=steps, batch=64, seed=seed)


def tiny_cnn(num_classes: int = 10, in_channels: int = 3, width: int = 16):
    """A small residual CNN named as ``helpers:tiny_cnn`` in traced-model tests (module:function)."""
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                                      nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))

        def forward(self, x):
            return F.relu(x + self.body(x))

    class TinyCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                      nn.ReLU())
            self.blocks = nn.Sequential(Block(width), nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
                                        nn.BatchNorm2d(2 * width), nn.ReLU(), Block(2 * width))
            self.fc = nn.Linear(2 * width, num_classes)

        def forward(self, x):
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))

    return TinyCNN()


def seven_classes(in_channels: int = 3):
    """A model that ignores the dataset's classes (for the error test)."""
    return tiny_cnn(num_classes=7, in_channels=in_channels)


def not_a_model(num_classes: int = 10):
    """Returns something that is not an nn.Module (for the error test)."""
    return {"num_classes": num_classes}

"""Helpers shared by several test files (tests/ is on sys.path under pytest and for scripts)."""
import os
import struct

import numpy as np


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

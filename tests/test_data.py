import gzip
import os
import pickle
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DistributedSampler

import slimnet.data as data_mod
from slimnet.data import DATASETS, DataBundle, build_data, make_loader, read_idx

FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530


# --------------------------------------------------------------------------- #
# helpers writing real on-disk formats
# --------------------------------------------------------------------------- #
def write_idx(path: Path, array: np.ndarray, gz: bool, magic_override: bytes | None = None) -> Path:
    """IDX: 0x00 0x00, type code 0x08 (uint8), ndim, big-endian int32 dims, raw bytes."""
    header = magic_override or bytes([0, 0, 0x08, array.ndim])
    header += struct.pack(">" + "i" * array.ndim, *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def make_fashion(directory: Path, n_train=50, n_test=12, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    for name, arr in arrays.items():
        write_idx(directory / name, arr, gz)
    return arrays


@pytest.fixture
def no_system_fashion(monkeypatch, tmp_path):
    """Hide /usr/share/datasets/fashion-mnist so only the test's files can be found."""
    monkeypatch.setattr(data_mod, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "no-system-dir"))


@pytest.fixture
def fashion(tmp_path, no_system_fashion):
    arrays = make_fashion(tmp_path)
    return tmp_path, arrays


# --------------------------------------------------------------------------- #
# Fashion-MNIST / IDX
# --------------------------------------------------------------------------- #
def test_fashion_gz_shapes_values_targets(fashion):
    root, arrays = fashion
    b = build_data("fashion_mnist", str(root), augment="none")
    assert isinstance(b, DataBundle)
    assert (b.num_classes, b.in_channels, b.input_size) == (10, 1, 28)
    assert len(b.train) == 50 and len(b.test) == 12 and b.heldout is None
    assert b.train.base.images.shape == (50, 1, 28, 28) and b.train.base.images.dtype == torch.uint8
    for ds, key in ((b.train, "train"), (b.test, "t10k")):
        assert ds.targets.dtype == torch.long
        assert ds.targets.tolist() == arrays[f"{key}-labels-idx1-ubyte"].tolist()
    x, y = b.test[3]
    assert type(x) is torch.Tensor and x.shape == (1, 28, 28) and x.dtype == torch.float32
    expected = (torch.from_numpy(arrays["t10k-images-idx3-ubyte"][3]).float() / 255 - FMNIST_MEAN) / FMNIST_STD
    torch.testing.assert_close(x[0], expected)
    assert y == int(arrays["t10k-labels-idx1-ubyte"][3])


def test_fashion_raw_files_in_torchvision_layout(tmp_path, no_system_fashion):
    arrays = make_fashion(tmp_path / "FashionMNIST" / "raw", gz=False)
    b = build_data("fashion_mnist", str(tmp_path))
    assert b.train.targets.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert torch.equal(b.train.base.images[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))


def test_fashion_search_order_prefers_root(tmp_path, no_system_fashion):
    make_fashion(tmp_path / "fashion-mnist", n_train=20)
    make_fashion(tmp_path, n_train=30)
    assert len(build_data("fashion_mnist", str(tmp_path)).train) == 30


def test_fashion_train_transform_and_resize(fashion):
    root, _ = fashion
    b = build_data("fashion_mnist", str(root), input_size=32)
    assert b.input_size == 32
    assert b.train[0][0].shape == (1, 32, 32) and b.test[0][0].shape == (1, 32, 32)
    # augmentation is random: repeated reads of one training image differ at some point
    torch.manual_seed(0)
    first = b.train[0][0]
    assert any(not torch.equal(first, b.train[0][0]) for _ in range(10))


def test_idx_bad_magic_number(tmp_path, no_system_fashion):
    make_fashion(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(50, np.uint8), gz=True,
              magic_override=bytes([0, 0, 0x0D, 1]))  # 0x0D = float32 type code
    with pytest.raises(ValueError, match="magic"):
        build_data("fashion_mnist", str(tmp_path))


def test_idx_wrong_ndim_and_truncated(tmp_path):
    labels = write_idx(tmp_path / "labels", np.zeros(5, np.uint8), gz=False)
    with pytest.raises(ValueError, match="expected 3"):
        read_idx(labels, expected_ndim=3)
    labels.write_bytes(labels.read_bytes()[:-2])
    with pytest.raises(ValueError, match="5 bytes"):
        read_idx(labels)


def test_fashion_label_count_mismatch(tmp_path, no_system_fashion):
    make_fashion(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(5, np.uint8), gz=True)
    with pytest.raises(ValueError, match="12 images but .* 5 labels"):
        build_data("fashion_mnist", str(tmp_path))


def test_fashion_missing_lists_searched_dirs(tmp_path, no_system_fashion):
    with pytest.raises(FileNotFoundError) as err:
        build_data("fashion_mnist", str(tmp_path))
    msg = str(err.value)
    for d in (tmp_path, tmp_path / "FashionMNIST" / "raw", tmp_path / "fashion-mnist",
              tmp_path / "no-system-dir"):
        assert str(d) in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "download" in msg


@pytest.mark.fashion_mnist
def test_real_fashion_mnist():
    b = build_data("fashion_mnist")
    assert (len(b.train), len(b.test), b.num_classes) == (60000, 10000, 10)
    assert sorted(b.train.targets.unique().tolist()) == list(range(10))
    assert torch.bincount(b.test.targets).tolist() == [1000] * 10


# --------------------------------------------------------------------------- #
# CIFAR (python-pickle layout)
# --------------------------------------------------------------------------- #
# The real CIFAR pickles were written by Python 2 with `str` keys; torchvision reads
# them with pickle.load(..., encoding="latin1"), which turns those keys into Python 3
# `str` ('data', 'labels', ...).  Pickling dicts with `str` keys from Python 3 gives
# exactly what torchvision sees after decoding.
def write_cifar(root: Path, hundred: bool, per_file=4, n_test=6, seed=0):
    rng = np.random.default_rng(seed)
    n_classes = 100 if hundred else 10
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    label_key = "fine_labels" if hundred else "labels"

    def batch(name, n):
        entry = {"batch_label": name, "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 label_key: rng.integers(0, n_classes, n).tolist(), "filenames": [f"{i}.png" for i in range(n)]}
        if hundred:
            entry["coarse_labels"] = [c // 5 for c in entry[label_key]]
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
        return entry

    if hundred:
        train = [batch("train", per_file * 5)]
        test = batch("test", n_test)
        meta = {"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": [f"s{i}" for i in range(20)]}
        meta_name = "meta"
    else:
        train = [batch(f"data_batch_{i}", per_file) for i in range(1, 6)]
        test = batch("test_batch", n_test)
        meta = {"num_cases_per_batch": per_file, "label_names": [f"c{i}" for i in range(10)], "num_vis": 3072}
        meta_name = "batches.meta"
    with open(folder / meta_name, "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return train, test, label_key


@pytest.fixture
def skip_cifar_md5(monkeypatch):
    """torchvision verifies the md5 of every CIFAR file against the official archive,
    which tiny synthetic files cannot pass.  Only the test relaxes that check (to
    "file exists"); slimnet itself uses the unmodified torchvision classes."""
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_loads(tmp_path, skip_cifar_md5, hundred):
    train, test, label_key = write_cifar(tmp_path, hundred)
    name = "cifar100" if hundred else "cifar10"
    b = build_data(name, str(tmp_path), augment="none")
    assert (b.num_classes, b.in_channels, b.input_size) == (100 if hundred else 10, 3, 32)
    assert len(b.train) == 20 and len(b.test) == 6
    assert b.train.targets.tolist() == sum((e[label_key] for e in train), [])
    assert b.test.targets.tolist() == test[label_key]
    # pixels: row-major R, G, B planes of 32x32, stored CHW
    assert torch.equal(b.test.base.images[2], torch.from_numpy(test["data"][2].reshape(3, 32, 32)))
    x, _ = b.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    b2 = build_data(name, str(tmp_path), input_size=40)
    assert b2.train[0][0].shape == (3, 40, 40) and b2.test[0][0].shape == (3, 40, 40)


def test_cifar_missing_names_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.*data_batch_1"):
        build_data("cifar10", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        build_data("cifar100", str(tmp_path))


def test_cifar_md5_mismatch_is_reported(tmp_path):
    write_cifar(tmp_path, hundred=False)
    with pytest.raises(RuntimeError, match="md5"):
        build_data("cifar10", str(tmp_path))


# --------------------------------------------------------------------------- #
# ImageFolder
# --------------------------------------------------------------------------- #
def write_folder(root: Path, train_classes=("ant", "bee", "cat"), val_classes=None, per_class=2):
    val_classes = train_classes if val_classes is None else val_classes
    rng = np.random.default_rng(0)
    for split, classes in (("train", train_classes), ("val", val_classes)):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")


@pytest.mark.parametrize("name", ["imagefolder", "imagenet"])
def test_imagefolder(tmp_path, name):
    write_folder(tmp_path)
    b = build_data(name, str(tmp_path), input_size=16)
    assert (b.num_classes, b.in_channels, b.input_size) == (3, 3, 16)
    assert len(b.train) == 6 and len(b.test) == 6
    assert b.train.targets.tolist() == [0, 0, 1, 1, 2, 2]
    for ds in (b.train, b.test):
        x, y = ds[5]
        assert type(x) is torch.Tensor and x.shape == (3, 16, 16) and x.dtype == torch.float32 and y == 2
    torch.testing.assert_close(b.test[0][0], b.test[0][0])  # eval transform is deterministic
    bm = build_data(name, str(tmp_path), input_size=16, augment="mobile")
    assert bm.train.transform.transforms[0].scale == (0.25, 1.0)
    assert b.train.transform.transforms[0].scale == (0.08, 1.0)


def test_imagefolder_class_mismatch(tmp_path):
    write_folder(tmp_path, val_classes=("ant", "bee", "dog"))
    with pytest.raises(ValueError, match=r"only in train: \['cat'\], only in val: \['dog'\]"):
        build_data("imagefolder", str(tmp_path))


def test_imagefolder_missing_or_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="train"):
        build_data("imagefolder", str(tmp_path))
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(FileNotFoundError, match="no class sub-directories"):
        build_data("imagefolder", str(tmp_path))


# --------------------------------------------------------------------------- #
# held-out split, subsets, argument errors
# --------------------------------------------------------------------------- #
def test_heldout_excluded_is_disjoint_and_calib(fashion):
    root, _ = fashion
    b = build_data("fashion_mnist", str(root), heldout_size=10, exclude_heldout=True)
    held, train = set(b.heldout.indices.tolist()), set(b.train.indices.tolist())
    assert len(held) == 10 and len(train) == 40 and not held & train and held | train == set(range(50))
    assert b.heldout.targets.tolist() == b.train.base.targets[b.heldout.indices].tolist()
    # calibration = held-out images with the *training* transform
    assert b.calib.indices.tolist() == b.heldout.indices.tolist()
    assert b.calib.transform is b.train.transform and b.heldout.transform is b.test.transform
    # images are shared, not loaded twice
    assert b.heldout.base is b.train.base is b.calib.base


def test_heldout_not_excluded_and_no_heldout(fashion):
    root, _ = fashion
    b = build_data("fashion_mnist", str(root), heldout_size=10)
    assert len(b.train) == 50 and len(b.heldout) == 10
    b0 = build_data("fashion_mnist", str(root))
    assert b0.heldout is None and b0.calib.indices.tolist() == b0.train.indices.tolist()
    assert b0.calib.transform is b0.train.transform


def test_heldout_seeded(fashion):
    root, _ = fashion
    a = build_data("fashion_mnist", str(root), heldout_size=10, heldout_seed=1).heldout.indices
    b = build_data("fashion_mnist", str(root), heldout_size=10, heldout_seed=1).heldout.indices
    c = build_data("fashion_mnist", str(root), heldout_size=10, heldout_seed=2).heldout.indices
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_heldout_uses_eval_transform(fashion):
    root, arrays = fashion
    b = build_data("fashion_mnist", str(root), heldout_size=10)
    i = int(b.heldout.indices[0])
    first, second = b.heldout[0][0], b.heldout[0][0]
    assert torch.equal(first, second)
    expected = (torch.from_numpy(arrays["train-images-idx3-ubyte"][i]).float() / 255 - FMNIST_MEAN) / FMNIST_STD
    torch.testing.assert_close(first[0], expected)


def test_heldout_size_errors(fashion):
    root, _ = fashion
    with pytest.raises(ValueError, match=r"heldout_size \(50\).*50 images"):
        build_data("fashion_mnist", str(root), heldout_size=50)
    with pytest.raises(ValueError, match=">= 0"):
        build_data("fashion_mnist", str(root), heldout_size=-1)


def test_subsets(fashion):
    root, _ = fashion
    a = build_data("fashion_mnist", str(root), subset=7, test_subset=3)
    b = build_data("fashion_mnist", str(root), subset=7, test_subset=3)
    assert len(a.train) == 7 and len(a.test) == 3 and len(a.calib) == 7
    assert torch.equal(a.train.indices, b.train.indices) and torch.equal(a.test.indices, b.test.indices)
    assert a.train.indices.tolist() != list(range(7))  # shuffled, not just the head
    excl = build_data("fashion_mnist", str(root), heldout_size=10, exclude_heldout=True, subset=30)
    assert not set(excl.train.indices.tolist()) & set(excl.heldout.indices.tolist())
    assert len(build_data("fashion_mnist", str(root), subset=1000).train) == 50
    # a view of a view indexes the same shared base
    v = a.train.view(torch.tensor([1, 3]), transform=a.test.transform)
    assert v.indices.tolist() == a.train.indices[[1, 3]].tolist() and v.base is a.train.base
    assert v.targets.tolist() == a.train.targets[[1, 3]].tolist() and v.transform is a.test.transform


def test_bad_names(fashion):
    root, _ = fashion
    with pytest.raises(ValueError) as err:
        build_data("mnist", str(root))
    for valid in DATASETS:
        assert valid in str(err.value)
    with pytest.raises(ValueError, match="default, mobile, none"):
        build_data("fashion_mnist", str(root), augment="heavy")


# --------------------------------------------------------------------------- #
# make_loader
# --------------------------------------------------------------------------- #
def test_loader_batches_and_drop_last(fashion):
    root, _ = fashion
    b = build_data("fashion_mnist", str(root))
    train = make_loader(b.train, 16, train=True, workers=0)
    batches = list(train)
    assert len(batches) == 3  # 50 // 16, last partial batch dropped
    x, y = batches[0]
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (16,) and y.dtype == torch.long
    test = make_loader(b.test, 5, train=False, workers=0)
    assert [len(y) for _, y in test] == [5, 5, 2]
    assert torch.cat([y for _, y in test]).tolist() == b.test.targets.tolist()  # eval keeps order
    assert not train.pin_memory and not train.persistent_workers
    loader = make_loader(b.test, 4, train=False, workers=1, device="cuda")
    assert loader.pin_memory and loader.persistent_workers and loader.num_workers == 1


def test_loader_seeded_shuffle(fashion):
    root, _ = fashion
    b = build_data("fashion_mnist", str(root), augment="none")

    def order(seed):
        return torch.cat([x.flatten(1)[:, :5] for x, _ in make_loader(b.train, 10, train=True, workers=0, seed=seed)])

    assert torch.equal(order(3), order(3)) and not torch.equal(order(3), order(4))


def test_loader_too_large_batch(fashion):
    root, _ = fashion
    b = build_data("fashion_mnist", str(root))
    with pytest.raises(ValueError, match=r"batch_size 64 .* 50 samples"):
        make_loader(b.train, 64, train=True, workers=0)
    assert len(make_loader(b.train, 64, train=False, workers=0)) == 1  # eval: no drop_last, one batch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_loader_distributed(fashion):
    root, _ = fashion
    b = build_data("fashion_mnist", str(root))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        loader = make_loader(b.train, 8, train=True, workers=0, distributed=True, seed=5)
        assert isinstance(loader.sampler, DistributedSampler)
        assert loader.sampler.shuffle and loader.sampler.seed == 5 and loader.sampler.drop_last
        assert len(list(loader)) == 6
        evl = make_loader(b.test, 8, train=False, workers=0, distributed=True)
        assert not evl.sampler.shuffle and [len(y) for _, y in evl] == [8, 4]
        with pytest.raises(ValueError, match="batch_size 64"):
            make_loader(b.train, 64, train=True, workers=0, distributed=True)
    finally:
        dist.destroy_process_group()

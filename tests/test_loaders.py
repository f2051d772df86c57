"""In-memory batches: the same transforms as torchvision's per-sample v2 pipeline, seeded order and
augmentation per (seed, epoch, index), exact resume, and the engine's choice of path."""
from __future__ import annotations

import pytest
import torch
from helpers import write_noise_fashion
from torchvision.transforms.v2 import functional as TF

from slimnet.batch_transforms import BatchTransform, CropFlip
from slimnet.config import ConfigError, load_config
from slimnet.data import build_batch_transforms, build_data
from slimnet.loaders import EpochSampler, MemoryBatches, MemoryEpochs, build_loaders


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_noise_fashion(str(tmp_path_factory.mktemp("fm")), n_train=40, n_test=12, seed=3)


def per_sample(image_u8, top, left, flip, padding, mean, std):
    """torchvision's v2 functional ops, one image: RandomCrop(padding) at (top, left), flip, to float."""
    x = TF.crop(TF.pad(image_u8, [padding]), top, left, image_u8.shape[-2], image_u8.shape[-1])
    if flip:
        x = TF.horizontal_flip(x)
    return TF.normalize(TF.to_dtype(x, torch.float32, scale=True), mean, std)


@pytest.mark.parametrize("channels,padding", [(1, 2), (3, 4)])
def test_crop_flip_equals_torchvision_per_sample(channels, padding):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, channels, 10, 10), dtype=torch.uint8, generator=g)
    mean, std = tuple([0.3] * channels), tuple([0.25] * channels)
    params = CropFlip.draw(len(images), padding, g)
    got = BatchTransform(mean, std, size=10, padding=padding, flip=True)(images, params)
    assert got.shape == (16, channels, 10, 10) and got.dtype == torch.float32
    for i in range(len(images)):
        want = per_sample(images[i], int(params.top[i]), int(params.left[i]), bool(params.flip[i]), padding, mean, std)
        torch.testing.assert_close(got[i], want, rtol=0, atol=1e-6)


def test_resize_equals_torchvision_per_sample():
    """A batch resized on the device (28 -> 16, as data.input_size=16) equals v2.Resize(antialias)
    per image on the uint8 tensor, before conversion to float, as the per-sample path does."""
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8, generator=g)
    params = CropFlip.draw(len(images), 2, g)
    got = BatchTransform((0.3,), (0.25,), size=16, padding=2, flip=True)(images, params)
    for i in range(len(images)):
        x = TF.crop(TF.pad(images[i], [2]), int(params.top[i]), int(params.left[i]), 28, 28)
        x = TF.horizontal_flip(x) if bool(params.flip[i]) else x
        x = TF.resize(x, [16, 16], antialias=True)
        want = TF.normalize(TF.to_dtype(x, torch.float32, scale=True), (0.3,), (0.25,))
        torch.testing.assert_close(got[i], want, rtol=0, atol=1e-6)


def test_crop_flip_draws_the_torchvision_distributions():
    p = CropFlip.draw(20000, 2, torch.Generator().manual_seed(1))
    for offsets in (p.top, p.left):    # uniform over the 2 * padding + 1 positions, as v2.RandomCrop
        counts = torch.bincount(offsets, minlength=5).float() / len(offsets)
        assert len(counts) == 5 and torch.allclose(counts, torch.full((5,), 0.2), atol=0.015)
    assert abs(p.flip.float().mean().item() - 0.5) < 0.015     # v2.RandomHorizontalFlip(p=0.5)


def test_eval_transforms_equal_the_per_sample_pipeline(root):
    b = build_data("fashion_mnist", root)
    train_tf, eval_tf = b.batch_transforms
    assert (train_tf.padding, train_tf.flip) == (2, True) and not eval_tf.random
    images = b.test.base.images[b.test.indices]
    want = torch.stack([b.test[i][0] for i in range(len(b.test))])
    torch.testing.assert_close(eval_tf(images), want, rtol=0, atol=1e-6)
    # a resized input (32 px from 28): bilinear with antialias on float, torchvision on uint8
    b32 = build_data("fashion_mnist", root, input_size=32)
    want32 = torch.stack([b32.test[i][0] for i in range(len(b32.test))])
    got32 = b32.batch_transforms[1](images)
    assert got32.shape == want32.shape == (12, 1, 32, 32)
    assert (got32 - want32).abs().max() < 1.0 / 255 / 0.353 + 1e-5     # uint8 rounding, in normalized units
    assert build_batch_transforms("cifar10", 32, "none")[0] == build_batch_transforms("cifar10", 32)[1]
    with pytest.raises(ValueError, match="image folders"):
        build_batch_transforms("imagefolder", 224)


def test_memory_epochs_are_seeded_and_resume_mid_epoch(root):
    b = build_data("fashion_mnist", root)
    train_tf = b.batch_transforms[0]

    def epoch(seed, e, start=0):
        s = EpochSampler(len(b.train), 8, seed=seed)
        s.set_epoch(e, start)
        return list(MemoryEpochs(b.train, train_tf, s, "cpu"))

    full = epoch(0, 1)
    assert len(full) == 5 and all(x.shape == (8, 1, 28, 28) for x, _ in full)
    again, resumed = epoch(0, 1), epoch(0, 1, start=2)
    assert all(torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]) for a, c in zip(full, again))
    assert len(resumed) == 3
    assert all(torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]) for a, c in zip(full[2:], resumed))
    assert not torch.equal(full[0][0], epoch(0, 2)[0][0])        # a new epoch: new order and crops
    assert not torch.equal(full[0][0], epoch(1, 1)[0][0])        # another seed
    # the labels travel with their images: every position once per epoch, as the sampler says
    s = EpochSampler(len(b.train), 8, seed=0)
    s.set_epoch(1)
    assert torch.equal(torch.cat([y for _, y in full]), b.train.targets[s.positions()])


def test_memory_batches_fixed_draw_for_calibration(root):
    b = build_data("fashion_mnist", root)
    train_tf, eval_tf = b.batch_transforms
    pos = torch.tensor([3, 1, 7, 5, 0])
    ev = MemoryBatches(b.test, eval_tf, 2, "cpu", positions=pos)
    assert len(ev) == 3 and ev.num_images == 5
    x = torch.cat([x for x, _ in ev])
    torch.testing.assert_close(x, torch.stack([b.test[i][0] for i in pos.tolist()]), rtol=0, atol=1e-6)
    calib = [MemoryBatches(b.calib, train_tf, 4, "cpu", positions=pos, seed=s) for s in (0, 0, 1)]
    first, same, other = (torch.cat([x for x, _ in c]) for c in calib)
    assert torch.equal(first, same) and not torch.equal(first, other)
    with pytest.raises(ValueError, match="seed"):
        MemoryBatches(b.calib, train_tf, 4, "cpu")


def test_engine_picks_the_path(root, tmp_path):
    base = [f"data.root={root}", "data.batch_size=8", "model.name=resnet20", f"experiment.output_dir={tmp_path}"]
    b = build_data("fashion_mnist", root)
    auto = build_loaders(load_config(None, base), b, torch.device("cpu"), need_calib=True)
    off = build_loaders(load_config(None, base + ["data.in_memory=false", "data.workers=0"]), b,
                        torch.device("cpu"), need_calib=True)
    assert isinstance(auto.train, MemoryEpochs) and isinstance(auto.calib, MemoryBatches)
    assert isinstance(off.train, torch.utils.data.DataLoader)
    assert auto.eval_images == off.eval_images == auto.eval_images_rank == 12
    # both paths evaluate the same images, and draw the same calibration images
    assert torch.equal(torch.cat([y for _, y in auto.eval]), torch.cat([y for _, y in off.eval]))
    assert torch.equal(torch.cat([y for _, y in auto.calib]), torch.cat([y for _, y in off.calib]))
    shard = build_loaders(load_config(None, base + ["eval.max_images=7"]), b, torch.device("cpu"), False, rank=1,
                          world=2)
    assert (shard.eval_images, shard.eval_images_rank, shard.calib) == (7, 3, None)
    folder = build_data("fashion_mnist", root)
    folder.batch_transforms = None        # as an image folder's bundle
    with pytest.raises(ConfigError, match="data.in_memory"):
        build_loaders(load_config(None, base + ["data.in_memory=true"]), folder, torch.device("cpu"), False)

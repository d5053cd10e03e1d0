"""DeviceLoader: torchvision-equal augmentation, determinism, sharding, eval mode, exact resume."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from pruning_runner.data import DeviceLoader, crop_flip, normalize_resize, pad_images

MEAN = (0.49, 0.48, 0.45)
STD = (0.25, 0.24, 0.26)


def _images(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)


def _loader(x, *, train=True, batch_size=4, img_size=32, seed=0, drop_last=True, **kw):
    return DeviceLoader(x, torch.arange(len(x)), batch_size=batch_size, device="cpu", train=train,
                        img_size=img_size, mean=MEAN, std=STD, seed=seed, drop_last=drop_last, **kw)


def _torchvision_reference(img, top, left, flip, img_size, *, pil):
    """torchvision's own transforms, with RandomCrop's offsets and the flip decision injected."""
    crop = T.RandomCrop(32, padding=4)  # zero fill, as in the research pipeline
    steps = [crop, T.RandomHorizontalFlip(p=1.0 if flip else 0.0)]
    if pil:
        steps += [T.ToTensor()]
    else:
        steps += [T.ConvertImageDtype(torch.float32)]
    if img_size != 32:
        steps += [T.Resize(img_size, antialias=True)]
    steps += [T.Normalize(MEAN, STD)]
    pipeline = T.Compose(steps)
    original = T.RandomCrop.get_params
    T.RandomCrop.get_params = staticmethod(lambda *_: (top, left, 32, 32))
    try:
        source = Image.fromarray(img.permute(1, 2, 0).numpy()) if pil else img
        return pipeline(source)
    finally:
        T.RandomCrop.get_params = staticmethod(original)


@pytest.mark.parametrize("img_size, pil", [(32, True), (32, False), (48, False), (224, False), (24, False)])
def test_batched_ops_equal_torchvision_transforms(img_size, pil):
    x = _images(6)
    top = torch.tensor([0, 8, 4, 1, 7, 3])
    left = torch.tensor([8, 0, 4, 6, 2, 5])
    flip = torch.tensor([False, True, False, True, True, False])
    index = torch.tensor([5, 0, 3, 3, 1, 2])
    mean, std = torch.tensor(MEAN), torch.tensor(STD)
    ours = normalize_resize(crop_flip(pad_images(x), index, top, left, flip), mean, std, img_size)
    assert ours.shape == (6, 3, img_size, img_size) and ours.dtype == torch.float32
    for i in range(6):
        ref = _torchvision_reference(x[index[i]], int(top[i]), int(left[i]), bool(flip[i]), img_size, pil=pil)
        torch.testing.assert_close(ours[i], ref, atol=2e-5, rtol=1e-5)


def test_loader_batches_equal_torchvision_for_its_plan():
    x = _images(10)
    loader = _loader(x, batch_size=4, img_size=40, seed=7)
    plan = loader.plan(0)
    batches = list(loader)
    assert len(batches) == 2
    for b, (images, labels) in enumerate(batches):
        for j in range(4):
            p = 4 * b + j
            i = int(plan.order[p])
            assert int(labels[j]) == i
            ref = _torchvision_reference(x[i], int(plan.top[p]), int(plan.left[p]), bool(plan.flip[p]), 40,
                                         pil=False)
            torch.testing.assert_close(images[j], ref, atol=2e-5, rtol=1e-5)


def test_plan_matches_random_crop_and_flip_distributions():
    plan = _loader(_images(4000)).plan(0)
    assert sorted(plan.order.tolist()) == list(range(4000))
    for offsets in (plan.top, plan.left):  # RandomCrop(32, padding=4): 0..8 inclusive, uniform
        counts = torch.bincount(offsets, minlength=9)
        assert len(counts) == 9 and int(counts.min()) > 4000 / 9 * 0.7
    assert 0.45 < plan.flip.float().mean().item() < 0.55


def test_hflip_off_never_mirrors_and_keeps_the_crops():
    x = _images(400)
    with_flip, without = _loader(x).plan(0), _loader(x, hflip=False).plan(0)
    assert not without.flip.any()
    assert torch.equal(with_flip.order, without.order) and torch.equal(with_flip.top, without.top)


def test_digits_and_synthetic_are_not_mirrored_cifar_is():
    from pruning_runner.data import load_image_splits

    assert not load_image_splits("digits", root=None, val_size=None, seed=0).hflip
    assert not load_image_splits("synthetic", root=None, val_size=None, seed=0, synthetic_size=200).hflip


def test_deterministic_by_seed_and_epoch():
    x = _images(12)
    first = [b for b, _ in _loader(x, seed=1)]
    second = [b for b, _ in _loader(x, seed=1)]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    loader = _loader(x, seed=1)
    list(loader)  # epoch 0
    assert loader.state_dict()["epoch"] == 1
    epoch1 = [b for b, _ in loader]
    assert not all(torch.equal(a, b) for a, b in zip(first, epoch1, strict=True))
    other_seed = [b for b, _ in _loader(x, seed=2)]
    assert not all(torch.equal(a, b) for a, b in zip(first, other_seed, strict=True))
    jumped = _loader(x, seed=1)
    jumped.set_epoch(1)
    assert all(torch.equal(a, b) for (a, _), b in zip(jumped, epoch1, strict=True))


def test_two_ranks_partition_the_epoch_in_step():
    x = _images(23)
    ranks = [_loader(x, batch_size=3, rank=r, world_size=2, seed=5) for r in range(2)]
    seen = [torch.cat([y for _, y in loader]) for loader in ranks]
    assert len(ranks[0]) == len(ranks[1]) == 3  # 11 images each, 3 full batches
    assert not set(seen[0].tolist()) & set(seen[1].tolist())
    order = ranks[0].plan(0).order
    assert torch.equal(ranks[1].plan(0).order, order)  # one global order
    assert torch.equal(seen[0], order[0:18:2]) and torch.equal(seen[1], order[1:18:2])
    no_drop = [torch.cat([y for _, y in _loader(x, batch_size=3, rank=r, world_size=2, seed=5, drop_last=False)])
               for r in range(2)]
    assert sorted(torch.cat(no_drop).tolist()) == sorted(order[:22].tolist())  # 23 // 2 * 2 images


def test_eval_loader_is_plain_and_ordered():
    x = _images(10)
    loader = _loader(x, train=False, batch_size=4, drop_last=False, img_size=32)
    batches = list(loader)
    assert [len(y) for _, y in batches] == [4, 4, 2] and len(loader) == 3
    images = torch.cat([b for b, _ in batches])
    expected = (x.float() / 255 - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(torch.cat([y for _, y in batches]), torch.arange(10))
    again = torch.cat([b for b, _ in loader])  # next epoch: identical
    assert torch.equal(again, images)
    shards = [torch.cat([y for _, y in _loader(x, train=False, rank=r, world_size=3, drop_last=False)])
              for r in range(3)]
    assert sorted(torch.cat(shards).tolist()) == list(range(10))


def test_resume_mid_epoch_is_exact():
    x = _images(20)
    reference = _loader(x, seed=3)
    uninterrupted = [b for b, _ in reference] + [b for b, _ in reference]  # epochs 0 and 1

    first = _loader(x, seed=3)
    it = iter(first)
    got = [next(it)[0], next(it)[0]]
    state = first.state_dict()
    assert state["epoch"] == 0 and state["position"] == 2

    resumed = _loader(x, seed=3)
    resumed.load_state_dict(state)
    got += [b for b, _ in resumed] + [b for b, _ in resumed]
    assert len(got) == len(uninterrupted) == 10
    assert all(torch.equal(a, b) for a, b in zip(got, uninterrupted, strict=True))


def test_len_and_drop_last():
    x = _images(10)
    assert len(_loader(x, batch_size=4, drop_last=True)) == 2
    assert len(_loader(x, batch_size=4, drop_last=False)) == 3
    assert [len(y) for _, y in _loader(x, batch_size=4, drop_last=False)] == [4, 4, 2]


def test_state_of_another_loader_is_refused():
    state = _loader(_images(10), seed=1).state_dict()
    with pytest.raises(ValueError, match="loader state was saved with seed=1, this loader has 2"):
        _loader(_images(10), seed=2).load_state_dict(state)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match=r"x must be uint8 \[N, C, H, W\], got torch.float32"):
        _loader(_images(4).float())
    with pytest.raises(ValueError, match=r"rank 2 is outside \[0, 2\)"):
        _loader(_images(4), rank=2, world_size=2)


def test_bfloat16_output():
    images, _ = next(iter(_loader(_images(8), dtype=torch.bfloat16, img_size=64)))
    assert images.dtype == torch.bfloat16 and images.shape == (4, 3, 64, 64)


def test_channels_last_output_has_the_same_values():
    x = _images(8)
    plain = [b for b, _ in _loader(x, img_size=48)]
    last = [b for b, _ in _loader(x, img_size=48, channels_last=True)]
    assert all(b.is_contiguous(memory_format=torch.channels_last) for b in last)
    assert all(torch.equal(a, b) for a, b in zip(plain, last, strict=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_loader_is_deterministic_and_matches_cpu_ops():
    x = _images(64)

    def cuda_loader():
        return DeviceLoader(x, torch.arange(64), batch_size=16, device="cuda", train=True, img_size=64,
                            mean=MEAN, std=STD, seed=0, drop_last=True)

    a, b = cuda_loader(), cuda_loader()
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    plan = {k: v[:16].cpu() for k, v in vars(cuda_loader().plan(0)).items()}
    assert sorted(cuda_loader().plan(0).order.cpu().tolist()) == list(range(64))
    expected = normalize_resize(crop_flip(pad_images(x), plan["order"], plan["top"], plan["left"], plan["flip"]),
                                torch.tensor(MEAN), torch.tensor(STD), 64)
    first, _ = next(iter(cuda_loader()))
    torch.testing.assert_close(first.cpu(), expected, atol=1e-4, rtol=1e-4)

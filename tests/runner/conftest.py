"""Fixtures for the runner tests: tiny ViTs (embed 32, depth 2, 4 heads, 16x16 input, patch 4) and
init files. The "pretrained-looking" init is a tiny ViT trained on scikit-learn's digits for a few
seconds, saved with metadata the runner reads (timm_name, img_size, patch_size, num_classes, ...)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

ARCH = "vit_tiny_patch16_224"
TINY = dict(embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0)
IMG, PATCH = 16, 4
REPO = Path(__file__).resolve().parents[2]


def tiny_metadata(num_classes: int = 10) -> dict:
    return {"timm_name": ARCH, "img_size": IMG, "patch_size": PATCH, "num_classes": num_classes, **TINY}


def create_tiny_vit(num_classes: int = 10, seed: int = 0):
    import timm

    torch.manual_seed(seed)
    return timm.create_model(ARCH, pretrained=False, num_classes=num_classes, img_size=IMG, patch_size=PATCH, **TINY)


def base_options(init: Path, out: Path, **extra) -> dict:
    """RunConfig values for a quick digits run (override with ``extra``)."""
    opts = dict(init=str(init), dataset="digits", method="refill", target="both", rate=0.5, states=2, epochs=1,
                allow_random=True, out=str(out), batch_size=128, seed=0, device="cpu", lr=3e-3)
    opts.update(extra)
    return opts


def cli_args(opts: dict) -> list[str]:
    """RunConfig values -> run-prune flags."""
    args = []
    for k, v in opts.items():
        flag = "--" + k.replace("_", "-")
        if v is True:
            args.append(flag)
        elif v is False or v is None:
            continue
        else:
            args += [flag, str(v)]
    return args


def subprocess_env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return env


@contextmanager
def one_torch_thread():
    """One torch thread: on a shared 2-core machine more threads only contend (module fixtures too)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def random_init(tmp_path_factory) -> Path:
    from ckpttool.saving import save_checkpoint

    path = tmp_path_factory.mktemp("inits") / "tiny_random_init.safetensors"
    save_checkpoint(path, create_tiny_vit().state_dict(), metadata=tiny_metadata())
    return path


@pytest.fixture(scope="session")
def trained_init(tmp_path_factory) -> Path:
    """A tiny ViT trained on digits (~10 epochs, a few seconds): the 'pretrained' init of the tests."""
    from ckpttool.saving import save_checkpoint
    from pruning_runner.data import DeviceLoader, load_image_splits

    torch.set_num_threads(1)
    s = load_image_splits("digits", root=None, val_size=None, seed=0)
    model = create_tiny_vit()
    # un-augmented batches (train=False): flips and 4-pixel crops slow a tiny ViT on 8x8 digits down a lot
    loader = DeviceLoader(s.train_x, s.train_y, batch_size=64, device="cpu", train=False, img_size=IMG,
                          mean=s.mean, std=s.std, seed=1, drop_last=True)
    # the patch embedding sees grey digits (3 equal channels): a higher lr gives it visible structure
    embed = [p for n, p in model.named_parameters() if n.startswith("patch_embed")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("patch_embed")]
    opt = torch.optim.AdamW([{"params": rest}, {"params": embed, "lr": 3e-2}], lr=3e-3, weight_decay=0.05)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    for _ in range(20):
        for x, y in loader:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
    path = tmp_path_factory.mktemp("inits") / "tiny_digits_pretrained_init.safetensors"
    save_checkpoint(path, model.state_dict(), metadata={**tiny_metadata(), "provenance": "tests: digits 20 epochs"})
    return path


@pytest.fixture(scope="session")
def partial_init(tmp_path_factory, trained_init) -> Path:
    """The trained init with block 1 put back to a fresh random init."""
    from ckpttool.saving import save_checkpoint
    from ckpttool.torch_state import load_state_dict

    sd = load_state_dict(trained_init)
    fresh = create_tiny_vit(seed=5).state_dict()
    sd.update({k: v for k, v in fresh.items() if k.startswith("blocks.1.")})
    path = tmp_path_factory.mktemp("inits") / "tiny_partial_init.safetensors"
    save_checkpoint(path, sd, metadata=tiny_metadata())
    return path


@pytest.fixture(scope="session")
def corrupt_init(tmp_path_factory, trained_init) -> Path:
    from ckpttool.saving import save_checkpoint
    from ckpttool.torch_state import load_state_dict

    sd = load_state_dict(trained_init)
    sd["blocks.0.attn.qkv.weight"][0, :4] = float("nan")
    path = tmp_path_factory.mktemp("inits") / "tiny_corrupt_init.safetensors"
    save_checkpoint(path, sd, metadata=tiny_metadata())
    return path

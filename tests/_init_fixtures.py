"""Fixtures shared by the generate/backup/manifest tests: genuinely trained tiny ViT weights and an
offline Hugging Face cache that holds them.

Real ImageNet weights cannot be downloaded here, so the "pretrained" weights are a tiny ViT
(depth 2, width 64) trained on scikit-learn's digits at 32 px with patch 8 (a 4x4 grid, like
224/16 has 14x14): `generate --img-size 32 --patch-size 4` must then resample both the patch and
the position embedding, exactly as for the real ImageNet -> CIFAR case. The trained weights are
cached in pytest's cache folder (keyed by library versions) so that only the first run trains.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

TINY_KWARGS = {"depth": 2, "embed_dim": 64, "num_heads": 2}
TINY_KWARGS_JSON = json.dumps(TINY_KWARGS)
ARCH = "vit_tiny_patch16_224"
TAG = "augreg_in21k_ft_in1k"
REPO_ID = f"timm/{ARCH}.{TAG}"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
SOURCE_GEOMETRY = {"img_size": 32, "patch_size": 8}


def _train_tiny_vit():
    import timm
    import torch

    from ckpttool.verdict import _calibration as cal

    torch.manual_seed(0)
    model = timm.create_model(ARCH, num_classes=10, **SOURCE_GEOMETRY, **TINY_KWARGS)
    data = cal.load_digits_data(img_size=32, channels=3)
    # fixed epochs (no time limit) so the result is the same on every machine
    result = cal.train_on_digits(model, data, epochs=5, lr=5e-3, batch=32)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, result


@pytest.fixture(scope="session")
def trained_weights(request) -> Path:
    """A .safetensors file of a tiny ViT trained on digits (32 px, patch 8, 10 classes)."""
    import safetensors
    import timm
    import torch
    from safetensors.torch import save_file

    key = f"torch{torch.__version__}-timm{timm.__version__}-st{safetensors.__version__}-v2".replace("+", "_")
    folder = Path(request.config.cache.mkdir("ckpttool-trained-vit")) / key
    path = folder / "vit_mini_digits.safetensors"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        sd, result = _train_tiny_vit()
        tmp = folder / ".partial.safetensors"
        save_file(sd, str(tmp), metadata={"digits_acc": f"{result['acc']:.3f}"})
        os.replace(tmp, path)
    return path


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory) -> Path:
    """The same architecture and geometry as `trained_weights`, freshly initialised (seed 0)."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(ARCH, num_classes=10, **SOURCE_GEOMETRY, **TINY_KWARGS)
    path = tmp_path_factory.mktemp("random") / "random_vit.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def lay_out_hub_cache(cache: Path, weights: Path, *, repo_id: str = REPO_ID, commit: str = COMMIT,
                      filename: str = "model.safetensors") -> Path:
    """Write the layout huggingface_hub reads offline: models--org--name/{refs/main,snapshots/<commit>/}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    (snap / filename).write_bytes(weights.read_bytes())
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snap / filename


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Tests never touch the network: without a prepared cache the hub path must fail fast."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch, trained_weights) -> Path:
    """HF_HUB_OFFLINE=1 and HF_HUB_CACHE pointing at a cache holding the trained weights."""
    cache = tmp_path / "hf-cache"
    lay_out_hub_cache(cache, trained_weights)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def tiny_request(**overrides):
    """A GenerateRequest for the tiny ViT at native CIFAR geometry."""
    from ckpttool.generate import GenerateRequest, parse_model_kwargs

    base = dict(arch=f"{ARCH}.{TAG}", dataset="cifar10", init="pretrained", img_size=32, patch_size=4,
                model_kwargs=parse_model_kwargs(TINY_KWARGS_JSON))
    base.update(overrides)
    return GenerateRequest(**base)

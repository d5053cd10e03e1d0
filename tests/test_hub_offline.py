"""The hub path, offline and for real: huggingface_hub reads a cache the test lays out
(models--timm--.../snapshots/<commit>/model.safetensors + refs/main) holding genuinely trained
weights; HF_HUB_OFFLINE=1. Nothing is mocked."""

from __future__ import annotations

from pathlib import Path

import _init_fixtures as fx
import pytest
from _init_fixtures import COMMIT, REPO_ID, lay_out_hub_cache, tiny_request

from ckpttool import _hub
from ckpttool.errors import VerdictMismatchError, WeightsUnavailableError
from ckpttool.generate import generate_init

# shared fixtures (pytest finds them as module attributes)
_no_network = fx._no_network
offline_hub = fx.offline_hub
random_weights = fx.random_weights
trained_weights = fx.trained_weights


def test_download_weights_reads_the_offline_cache(offline_hub, trained_weights):
    from ckpttool.hashing import file_sha256

    got = _hub.download_weights(REPO_ID)
    assert got.filename == "model.safetensors"
    assert got.commit == COMMIT
    assert got.path.is_relative_to(offline_hub)
    assert file_sha256(got.path) == file_sha256(trained_weights)
    assert _hub.download_weights(REPO_ID, revision=COMMIT).commit == COMMIT


def test_generate_pretrained_from_cache_resamples_and_only_head_is_fresh(offline_hub, trained_weights, tmp_path):
    from ckpttool.hashing import file_sha256

    out = tmp_path / "init" / "tiny_cifar100_pretrained_init.pth.tar"
    result = generate_init(tiny_request(dataset="cifar100", out=out))
    built = result.built
    assert {o.name: o.origin for o in built.not_pretrained()} == {
        "patch_embed.proj.weight": "resampled", "pos_embed": "resampled", "head.weight": "fresh", "head.bias": "fresh"}
    assert built.verdict.verdict == "pretrained"
    src = result.metadata["source"]
    assert src["kind"] == "hub" and src["repo_id"] == REPO_ID and src["commit"] == COMMIT
    assert src["filename"] == "model.safetensors" and src["sha256"] == file_sha256(trained_weights)
    assert out.is_file() and file_sha256(out) == result.sha256


def test_pinned_revision_that_is_not_cached_is_unavailable_and_nothing_written(offline_hub, tmp_path):
    out = tmp_path / "x.pth.tar"
    with pytest.raises(WeightsUnavailableError) as info:
        generate_init(tiny_request(out=out, revision="f" * 40))
    assert info.value.exit_code == 2
    assert not out.exists() and not (tmp_path / "MANIFEST.json").exists()


def test_missing_cache_entry_offline_names_repo_file_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    out = tmp_path / "init" / "x.pth.tar"
    with pytest.raises(WeightsUnavailableError) as info:
        generate_init(tiny_request(out=out))
    msg = str(info.value)
    assert msg == (
        f"pretrained weights {REPO_ID}/model.safetensors unavailable: HF_HUB_OFFLINE is set and the file is not "
        f"in {tmp_path / 'empty-cache'}; run once with network access to fill the cache, or pass --weights-file PATH")
    assert not out.exists()
    assert not (tmp_path / "init").exists()


def test_pytorch_bin_in_cache_is_loaded_by_the_safe_loader(tmp_path, monkeypatch, trained_weights):
    import torch
    from safetensors.torch import load_file

    bin_file = tmp_path / "pytorch_model.bin"
    torch.save(load_file(str(trained_weights)), bin_file)
    cache = tmp_path / "cache"
    lay_out_hub_cache(cache, bin_file, filename="pytorch_model.bin")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    result = generate_init(tiny_request(dataset="cifar100", out=tmp_path / "o" / "x.pth.tar"))
    assert result.metadata["source"]["filename"] == "pytorch_model.bin"
    assert result.built.verdict.verdict == "pretrained"


def test_random_weights_in_the_hub_cache_are_refused(tmp_path, monkeypatch, random_weights):
    cache = tmp_path / "cache"
    lay_out_hub_cache(cache, random_weights)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    out = tmp_path / "o" / "x.pth.tar"
    with pytest.raises(VerdictMismatchError, match=r"--init pretrained built weights whose verdict is (random|partial)"):
        generate_init(tiny_request(dataset="cifar100", out=out))
    assert not out.exists()


def test_model_without_hub_weights_needs_weights_file():
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg("vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    assert _hub.resolve_hub_source(cfg) == (REPO_ID, None, _hub.DEFAULT_FILENAMES)

    class NoHub:
        hf_hub_id = None
        architecture = "foo"
        tag = "bar"

    with pytest.raises(WeightsUnavailableError, match="no Hugging Face hub weights for foo.bar; pass --weights-file"):
        _hub.resolve_hub_source(NoHub())


def test_only_hub_module_imports_huggingface_hub():
    root = Path(__file__).resolve().parents[1] / "ckpttool"
    importers = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py")
                       if "huggingface_hub" in p.read_text() and p.name != "_hub.py")
    assert [p for p in importers if "import huggingface_hub" in (root / p).read_text()
            or "from huggingface_hub" in (root / p).read_text()] == []

"""`verify hf://ORG/REPO --remote`: a hub model judged in place by HTTP range requests through
huggingface_hub, against the local hub (tests/_local_hub.py). A >= 100 MB sharded model must get
the verdict the full download gets while reading at most 10% of its bytes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _forked_cli import ForkedCli
from _local_hub import LocalHub, hub_env
from _shards import save_shards

COMMIT = "3333333333333333333333333333333333333333"
DIM, DEPTH = 768, 8


def _vit(trained_blocks: int, seed: int) -> dict[str, torch.Tensor]:
    """A ViT-Base-wide model in fp16 (~115 MB): blocks below ``trained_blocks`` carry the low-rank
    structure and moved norms training leaves, the others a timm init (normal 0.02, norms 1/0)."""
    rng = np.random.default_rng(seed)

    def weight(out: int, fan_in: int, trained: bool) -> torch.Tensor:
        w = rng.standard_normal((out, fan_in), dtype=np.float32) * 0.02
        if trained:
            w += (rng.standard_normal((out, 16), dtype=np.float32) @ rng.standard_normal((16, fan_in), dtype=np.float32)) * 0.01
        return torch.from_numpy(w).half()

    def norm(trained: bool) -> torch.Tensor:
        noise = rng.standard_normal(DIM, dtype=np.float32) * 0.1 if trained else np.zeros(DIM, np.float32)
        return torch.from_numpy(1 + noise).half()

    sd = {"cls_token": torch.from_numpy(rng.standard_normal((1, 1, DIM), dtype=np.float32) * 0.02).half(),
          "pos_embed": torch.from_numpy(rng.standard_normal((1, 197, DIM), dtype=np.float32) * 0.02).half(),
          "patch_embed.proj.weight": weight(DIM, 3 * 16 * 16, trained_blocks > 0).reshape(DIM, 3, 16, 16)}
    for i in range(DEPTH):
        t = i < trained_blocks
        p = f"blocks.{i}."
        sd |= {p + "norm1.weight": norm(t), p + "attn.qkv.weight": weight(3 * DIM, DIM, t),
               p + "attn.proj.weight": weight(DIM, DIM, t), p + "norm2.weight": norm(t),
               p + "mlp.fc1.weight": weight(4 * DIM, DIM, t), p + "mlp.fc2.weight": weight(DIM, 4 * DIM, t)}
    sd |= {"norm.weight": norm(trained_blocks > 0), "head.weight": weight(1000, DIM, False)}
    return sd


def _repo_files(folder: Path, sd: dict) -> dict[str, bytes]:
    groups = [["cls_token", "pos_embed", "patch_embed.", "blocks.0.", "blocks.1.", "blocks.2."],
              ["blocks.3.", "blocks.4.", "blocks.5."], ["blocks.6.", "blocks.7.", "norm.", "head."]]
    index = save_shards(folder, sd, groups=groups)
    return {p.name: p.read_bytes() for p in index.parent.iterdir()}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with LocalHub() as h:
        for name, trained, seed in (("org/vit-random", 0, 1), ("org/vit-partial", 6, 2)):
            h.add_repo(name, _repo_files(tmp_path_factory.mktemp(name.split("/")[1]), _vit(trained, seed)),
                       commit=COMMIT)
        h.add_repo("org/pickles", {"pytorch_model.bin": b"not read"}, commit=COMMIT)
        # an index listing a tensor its shard's header does not hold: refused as for a local model
        files = _repo_files(tmp_path_factory.mktemp("bad-index"), {"blocks.0.fc.weight": torch.zeros(8, 8)})
        index = json.loads(files["model.safetensors.index.json"])
        index["weight_map"]["blocks.1.fc.weight"] = next(iter(index["weight_map"].values()))
        h.add_repo("org/bad-index", {**files, "model.safetensors.index.json": json.dumps(index).encode()},
                   commit=COMMIT)
        yield h


@pytest.fixture(scope="module")
def cli(hub, tmp_path_factory):
    c = ForkedCli(hub_env(hub, tmp_path_factory.mktemp("home")), preload="huggingface_hub, ckpttool._hub, ckpttool.verify")
    yield c
    c.close()


def _run(cli, hub, home, *args):
    return cli.run(hub_env(hub, home), *args)


@pytest.mark.parametrize("repo, verdict", [("org/vit-random", "random"), ("org/vit-partial", "partial")])
def test_remote_verdict_equals_the_full_downloads_reading_under_a_tenth(cli, hub, tmp_path, repo, verdict):
    code, out, err = _run(cli, hub, tmp_path, "verify", f"hf://{repo}", "--format", "json", "--expect", "any")
    assert code == 0, err
    full = json.loads(out)["files"][0]
    hub.requests.clear()
    code, out, err = _run(cli, hub, tmp_path, "verify", f"hf://{repo}", "--remote", "--format", "json", "--expect", "any")
    assert code == 0, err
    remote = json.loads(out)["files"][0]
    assert (full["verdict"], remote["verdict"]) == (verdict, verdict)
    assert remote["untouched_groups"] == full["untouched_groups"]
    read = remote["remote"]
    assert read["bytes_total"] >= 100_000_000 and len(read["files"]) == 3
    assert read["bytes_read"] <= 0.10 * read["bytes_total"], read
    assert read["nonfinite_checked"] == "only in the bytes read"
    assert (remote["sha256"], remote["weights_digest"]) == (None, None)
    # range requests only, none of them a whole shard
    gets = [r for r in hub.requests if r[0] == "GET" and r[1].startswith("/blobs/")]
    assert gets and all(r[2] and r[2].startswith("bytes=") for r in gets)


def test_remote_text_says_how_much_was_read(cli, hub, tmp_path):
    code, out, err = _run(cli, hub, tmp_path, "verify", "hf://org/vit-random", "--remote", "--expect", "random")
    assert code == 0, err
    assert "read in place" in out and "NaN/Inf checked only in the bytes read" in out


@pytest.mark.parametrize("args, says", [
    (("hf://org/pickles", "--remote"), "safetensors weights only"),
    (("hf://org/bad-index", "--remote"), "does not hold: 'blocks.1.fc.weight'"),
    (("hf://org/missing", "--remote"), "org/missing"),
    (("hf://org/vit-random/pytorch_model.bin", "--remote"), "safetensors files"),
    (("model.safetensors", "--remote"), "hf://ORG/REPO"),
    (("hf://org/vit-random", "--remote", "--manifest", "M.json"), "--remote"),
])
def test_remote_refusals_are_one_line_exit_2(cli, hub, tmp_path, args, says):
    code, _, err = _run(cli, hub, tmp_path, "verify", *args)
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], err


def test_remote_offline_is_refused(cli, hub, tmp_path):
    code, _, err = cli.run(hub_env(hub, tmp_path, HF_HUB_OFFLINE="1"), "verify", "hf://org/vit-random", "--remote")
    assert code == 2 and "HF_HUB_OFFLINE" in err

import json

import pytest
from _run import run_cli

from ckpttool.saving import save_checkpoint


@pytest.fixture(scope="module")
def vit_file(tmp_path_factory):
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, depth=2, num_classes=10)
    path = tmp_path_factory.mktemp("i") / "vit.pth.tar"
    save_checkpoint(path, model.state_dict())
    return path


def test_json_has_every_documented_field(capsys, vit_file):
    r = run_cli(capsys, "inspect", str(vit_file), "--format", "json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["format"] == "torch-zip" and len(doc["sha256"]) == 64
    t = {x["name"]: x for x in doc["tensors"]}
    qkv = t["blocks.0.attn.qkv.weight"]
    for key in ("name", "shape", "dtype", "numel", "mean", "std", "min", "max", "kurtosis",
                "zero_fraction", "nonfinite", "spectral_ratio", "status"):
        assert key in qkv
    assert qkv["shape"] == [576, 192] and qkv["status"] == "init-like"
    assert 0.8 < qkv["spectral_ratio"] < 1.2
    assert t["blocks.0.norm1.weight"]["status"] == "init-constant"
    assert t["blocks.0.norm1.weight"]["spectral_ratio"] is None
    assert doc["summary"]["tensors"] == len(doc["tensors"])


def test_filter_sort_top(capsys, vit_file):
    r = run_cli(capsys, "inspect", str(vit_file), "--format", "json", "--filter", "blocks.1.*", "--sort", "numel", "--top", "3")
    names = [x["name"] for x in json.loads(r.out)["tensors"]]
    assert len(names) == 3 and all(n.startswith("blocks.1.") for n in names)
    assert names[0] in ("blocks.1.mlp.fc1.weight", "blocks.1.mlp.fc2.weight")


def test_text_table_and_summary(capsys, vit_file):
    r = run_cli(capsys, "inspect", str(vit_file), "--top", "5")
    assert r.code == 0
    assert "spec.ratio" in r.out and "5 shown" in r.out and "sha256" in r.out


def test_plot_is_a_png(capsys, vit_file, tmp_path):
    out = tmp_path / "depth.png"
    r = run_cli(capsys, "inspect", str(vit_file), "--plot", str(out), "--top", "1")
    assert r.code == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_file(capsys, tmp_path):
    r = run_cli(capsys, "inspect", str(tmp_path / "nope.safetensors"))
    assert r.code == 2 and r.err.startswith("error: ") and r.err.count("\n") == 1

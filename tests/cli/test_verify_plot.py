"""`verify --plot FILE.png` and `inspect --plot`: the verdict plot from the command line."""

from __future__ import annotations

import pytest
from _run import run_cli

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import torch

    from ckpttool.saving import save_checkpoint

    d = tmp_path_factory.mktemp("plots")
    torch.manual_seed(0)
    for name in ("a_random.pth", "b_pretrained.pth"):
        save_checkpoint(d / name, {f"blocks.{i}.w": torch.randn(32, 32) for i in range(3)})
    return d


def test_verify_plot_writes_one_files_picture(capsys, files, tmp_path):
    out = tmp_path / "v.png"
    r = run_cli(capsys, "verify", str(files / "b_pretrained.pth"), "--plot", str(out))
    assert r.code == 1  # random weights named pretrained: the plot is drawn all the same
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert r.err == f"plot written to {out}\n"


def test_inspect_plot_draws_the_same(capsys, files, tmp_path):
    out = tmp_path / "i.png"
    r = run_cli(capsys, "inspect", str(files / "a_random.pth"), "--plot", str(out))
    assert r.code == 0 and out.read_bytes()[:4] == b"\x89PNG"


def test_verify_plot_takes_exactly_one_file(capsys, files, tmp_path):
    out = tmp_path / "v.png"
    r = run_cli(capsys, "verify", str(files), "--plot", str(out))
    assert r.code == 2 and r.err == "error: --plot draws one checkpoint, and PATHS hold 2; pass one file\n"
    assert r.out == "" and not out.exists()
    r = run_cli(capsys, "verify", "--manifest", str(files / "MANIFEST.json"), "--plot", str(out))
    assert r.code == 2 and r.err == "error: --plot draws one checkpoint given as PATH; add it\n"

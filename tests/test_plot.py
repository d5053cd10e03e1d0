"""`inspect --plot` / `verify --plot`: each group coloured by what the verdict made of it, the verdict
in the title. The categories come from the Verdict's fields; the PNG is checked for the colours."""

from __future__ import annotations

import dataclasses

import pytest

from ckpttool.plot import CATEGORIES, group_rows, save_verdict_plot
from ckpttool.verdict import judge
from ckpttool.verdict.stats import TensorStats

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from _trained import trained_resnet  # noqa: E402

from ckpttool.verdict import _calibration as cal  # noqa: E402


def ts(name, status, spectral_ratio=1.0):
    return TensorStats(name=name, shape=(64, 64), dtype="float32", numel=4096, mean=0.0, std=0.02, min=-0.1,
                       max=0.1, kurtosis=0.0, zero_fraction=0.0, nonfinite=0, spectral_ratio=spectral_ratio,
                       row_norm_dispersion=None, status=status)


def test_each_group_gets_the_category_the_verdict_gave_it():
    stats = [ts("patch_embed.proj.weight", "init-like"), ts("pos_embed", "init-like", None),
             ts("cls_token", "init-constant", None),
             *[ts(f"blocks.{i}.attn.qkv.weight", "trained", 2.0) for i in range(4)],
             ts("blocks.4.attn.qkv.weight", "init-like"), ts("norm.weight", "init-constant", None),
             ts("head.weight", "init-like")]
    v = judge(stats)
    assert v.verdict == "partial" and v.uncounted_groups == ("patch_embed",)
    rows = {r.name: r.category for r in group_rows(stats, v)}
    assert rows == {"patch_embed": "uncounted", "pos_embed": "untouched", "cls_token": "unjudged",
                    **{f"blocks.{i}": "trained" for i in range(4)}, "blocks.4": "untouched",
                    "norm": "unjudged", "head": "head"}
    # the same untouched block, now one small silent group among many trained ones: set aside
    small = [dataclasses.replace(s, numel=256, shape=(16, 16)) if s.name == "blocks.4.attn.qkv.weight" else s
             for s in stats]
    small += [ts(f"blocks.{i}.attn.qkv.weight", "trained", 2.0) for i in range(5, 9)]
    v = judge(small)
    assert v.inconclusive_groups == ("blocks.4",), v.reason
    assert {r.name: r.category for r in group_rows(small, v)}["blocks.4"] == "inconclusive"


def _pixels(png, colour: str) -> int:
    """How many pixels of the PNG are exactly ``colour`` (the strip is drawn opaque)."""
    import matplotlib.image as mpimg
    import numpy as np

    img = (mpimg.imread(png)[..., :3] * 255).round().astype(int)
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(img - rgb).max(axis=-1) <= 1).sum())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from ckpttool.saving import save_checkpoint

    d = tmp_path_factory.mktemp("plots")
    model, _ = trained_resnet()
    save_checkpoint(d / "resnet_pretrained.pth", model.state_dict())
    save_checkpoint(d / "resnet_partial.pth", cal.reinit_modules(model, ["layer2.0"]).state_dict())
    return d


def test_the_untouched_part_shows_at_a_glance(files, tmp_path):
    from ckpttool.verify import verify_file

    red, green, blue = CATEGORIES["untouched"][0], CATEGORIES["trained"][0], CATEGORIES["head"][0]
    partial = verify_file(files / "resnet_partial.pth")
    assert partial.verdict.verdict == "partial" and partial.verdict.untouched_groups == ("layer2.0",)
    png = save_verdict_plot(partial.stats, partial.verdict, tmp_path / "partial.png", title="resnet_partial.pth")
    untouched_px, trained_px = _pixels(png, red), _pixels(png, green)
    assert untouched_px > 500 and trained_px > 3 * untouched_px  # one red column among green ones
    pretrained = verify_file(files / "resnet_pretrained.pth")
    png = save_verdict_plot(pretrained.stats, pretrained.verdict, tmp_path / "pretrained.png", title="x")
    assert _pixels(png, red) == 0 and _pixels(png, green) > 0 and _pixels(png, blue) > 0  # head apart


def test_a_name_with_dollars_or_controls_draws(tmp_path):
    """matplotlib reads ``$...$`` as math: a hostile group name must not break the plot."""
    stats = [ts("a$\\frac{$.w", "trained", 2.0), ts("b\n\x1b.w", "init-like"), ts("c.w", "trained", 2.0),
             ts("d.w", "trained", 2.0)]
    v = judge(stats, ordered=False)
    assert save_verdict_plot(stats, v, tmp_path / "x.png", title="$x\n").stat().st_size > 0

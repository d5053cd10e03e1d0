"""The one-pass sweep (ckpttool.sweep): exact raw-bit scans, sampled statistics of large tensors that
keep every status, bounded memory, and the weights digest from the same reads."""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest
import torch
from safetensors.torch import save_file as save_torch

from ckpttool.digest import checkpoint_weights_digest, weights_digest
from ckpttool.formats.dtypes import TORCH_DTYPES, widen
from ckpttool.loading import load_checkpoint
from ckpttool.sweep import sweep_checkpoint
from ckpttool.verdict.raw_scan import RawScan
from ckpttool.verdict.stats import SAMPLED_ABOVE
from tests.cli._run import run_cli

EXACT = 1 << 62


def _raw_values(name: str, rng: np.random.Generator, n: int) -> np.ndarray:
    d = TORCH_DTYPES[name]
    if d.kind == "bf16":
        return rng.integers(0, 1 << 16, n).astype(np.uint16)  # every bit pattern: NaNs, Infs, -0, subnormals
    if d.kind == "fp8":
        return rng.integers(0, 256, n).astype(np.uint8)
    if name == "bool":
        return rng.integers(0, 2, n).astype(bool)
    if d.kind == "float":
        x = (rng.standard_normal(n) * 3.0).astype(d.raw)
        x[rng.integers(0, n, 5)] = [np.nan, np.inf, -np.inf, 0.0, -0.0]
        return x
    return rng.integers(-1000, 1000, n).astype(d.raw)


@pytest.mark.parametrize("name", ["bfloat16", "float16", "float32", "float64", "float8_e4m3fn", "float8_e5m2",
                                  "float8_e4m3fnuz", "float8_e8m0fnu", "int64", "int8", "uint8", "bool"])
def test_raw_scan_counts_what_the_widened_values_hold(name):
    rng = np.random.default_rng(7)
    raw = _raw_values(name, rng, 20_011)
    scan = RawScan(TORCH_DTYPES[name])
    for i in range(0, raw.size, 4093):  # chunk boundaries anywhere
        scan.add(raw[i : i + 4093])
    got = scan.result()
    f = widen(raw, TORCH_DTYPES[name]).astype(np.float64)
    finite = f[np.isfinite(f)]
    assert (got.count, got.nonfinite, got.zeros) == (f.size, int(f.size - finite.size), int((f == 0).sum()))
    assert (got.min, got.max) == (float(finite.min()), float(finite.max()))


def _save(tmp_path, tensors: dict, fmt: str = "safetensors"):
    path = tmp_path / ("m.safetensors" if fmt == "safetensors" else "m.pt")
    if fmt == "safetensors":
        save_torch({k: v.contiguous() for k, v in tensors.items()}, str(path))
    else:
        torch.save(tensors, path)
    return path


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_one_nan_among_millions_of_entries_is_found(tmp_path, dtype):
    w = torch.randn(2048, 1024) * 0.02
    w[1357, 777] = float("nan")  # a sample of rows and columns would miss it
    path = _save(tmp_path, {"blocks.0.fc.weight": w.to(dtype)})
    with load_checkpoint(path) as ckpt:
        (s,) = sweep_checkpoint(ckpt).stats
    assert w.numel() > SAMPLED_ABOVE and s.sampled is not None
    assert (s.status, s.nonfinite) == ("nonfinite", 1)


def _cases() -> dict[str, np.ndarray]:
    """Tensors of every kind the statuses tell apart, each large enough to be sampled at 4,096."""
    rng = np.random.default_rng(3)
    n = 512
    low_rank = rng.standard_normal((n, 8)) @ rng.standard_normal((8, n)) * 0.1 + rng.standard_normal((n, n)) * 0.02
    pos = np.arange(1024)[:, None] / 10000 ** (np.arange(0, 128, 2) / 128)[None, :]
    table = np.concatenate([np.sin(pos), np.cos(pos)], axis=1)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return {
        "normal.weight": rng.standard_normal((n, 384)) * 0.02,
        "uniform.weight": rng.uniform(-1, 1, (384, n)) / math.sqrt(n),
        "trunc.weight": np.clip(rng.standard_normal((n, n)), -2, 2) * 0.02,
        "trained.weight": low_rank,
        "heavy.weight": rng.standard_t(3, (n, n)) * 0.02,
        "uniform_past_edge.weight": np.concatenate([rng.uniform(-1, 1, n * n - 1), [1.3]]).reshape(n, n) / 30,
        "ones.weight": np.ones((n, 64)),
        "signs.weight": np.sign(rng.standard_normal((n, 64))),
        "pos_table": table,
        "orthogonal.weight": q,
        "ramp": np.arange(70_000, dtype=np.float64),
        "vector": rng.standard_normal(70_000) * 0.02,
        "offset_vector": rng.standard_normal(70_000) * 0.02 + 0.05,
        "zeros.bias": np.zeros(70_000),
    }


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_sampled_statistics_keep_every_status(tmp_path, fmt):
    arrays = {k: v.astype(np.float32) for k, v in _cases().items()}
    arrays["index_buffer"] = np.arange(70_000, dtype=np.int64) % 7
    path = _save(tmp_path, {k: torch.from_numpy(v) for k, v in arrays.items()}, fmt)
    with load_checkpoint(path) as ckpt:
        exact = sweep_checkpoint(ckpt, sampled_above=EXACT).stats
        sampled = sweep_checkpoint(ckpt, sampled_above=4096).stats
    assert all(s.sampled is None for s in exact)
    assert all(s.sampled is not None for s in sampled if not s.note.startswith("constant"))
    for a, b in zip(exact, sampled, strict=True):
        assert (a.name, a.status) == (b.name, b.status), (a.note, b.note)
        assert (a.min, a.max, a.zero_fraction, a.nonfinite) == (b.min, b.max, b.zero_fraction, b.nonfinite)
        if a.std:
            assert b.std == pytest.approx(a.std, rel=0.05)


def test_a_weight_norm_direction_above_the_threshold_is_compared_with_its_gain(tmp_path):
    conv = torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv1d(256, 256, 64), dim=0)
    sd = {k: v.detach() for k, v in conv.state_dict().items()}
    path = _save(tmp_path, sd, "pt")
    with load_checkpoint(path) as ckpt:
        exact = {s.name: s.status for s in sweep_checkpoint(ckpt, sampled_above=EXACT).stats}
        sampled = {s.name: s.status for s in sweep_checkpoint(ckpt, sampled_above=4096).stats}
    assert exact == sampled
    assert sampled["parametrizations.weight.original0"] == "init-constant"


def test_a_large_tensor_is_read_in_bounded_memory(tmp_path):
    w = torch.randn(4096, 4096) * 0.02  # 64 MiB of float32
    path = _save(tmp_path, {"blocks.0.fc.weight": w})
    del w
    with load_checkpoint(path) as ckpt:
        tracemalloc.start()
        sweep_checkpoint(ckpt)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 40 << 20, f"peak {peak / 2**20:.0f} MiB for a 64 MiB tensor"


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_the_digest_of_the_sweep_is_the_state_dicts(tmp_path, fmt):
    base = torch.randn(1200, 1000)
    sd = {"a.weight": torch.randn(64, 64), "b.weight": base.to(torch.bfloat16), "c.bias": torch.zeros(7),
          "d.weight": torch.randn(1100, 1000), "e.mask": torch.ones(5, dtype=torch.bool)}
    if fmt == "pt":
        sd["f.weight"] = base.t()  # a strided view of a shared storage, read a block of rows at a time
    path = _save(tmp_path, sd, fmt)
    with load_checkpoint(path) as ckpt:
        swept = sweep_checkpoint(ckpt)
        assert swept.weights_digest == checkpoint_weights_digest(ckpt)
    assert swept.weights_digest == weights_digest(sd)


def test_verify_no_hashes_reports_no_hashes_and_the_same_verdict(tmp_path, capsys):
    path = _save(tmp_path, {"blocks.0.fc.weight": torch.randn(1100, 1000) * 0.02, "head.weight": torch.randn(10, 64)})
    full = run_cli(capsys, "verify", str(path), "--format", "json", "--expect", "any")
    quick = run_cli(capsys, "verify", str(path), "--format", "json", "--expect", "any", "--no-hashes")
    assert (full.code, quick.code) == (0, 0)
    a, b = json.loads(full.out)["files"][0], json.loads(quick.out)["files"][0]
    assert a["sha256"] and a["weights_digest"]
    assert (b["sha256"], b["weights_digest"]) == (None, None)
    assert a["verdict"] == b["verdict"]
    text = run_cli(capsys, "verify", str(path), "--expect", "any", "--no-hashes")
    assert "not hashed" in text.out


def test_no_hashes_is_refused_with_a_manifest(tmp_path, capsys):
    result = run_cli(capsys, "verify", "--manifest", str(tmp_path / "MANIFEST.json"), "--no-hashes")
    assert result.code == 2
    assert "--no-hashes" in result.err


def test_inspect_marks_sampled_figures(tmp_path, capsys):
    path = _save(tmp_path, {"blocks.0.fc.weight": torch.randn(1100, 1000) * 0.02, "norm.weight": torch.ones(64)})
    out = run_cli(capsys, "inspect", str(path))
    assert out.code == 0
    assert "~" in out.out and "sampled" in out.out and "every entry" in out.out
    doc = json.loads(run_cli(capsys, "inspect", str(path), "--format", "json").out)
    sampled = {t["name"]: t["sampled"] for t in doc["tensors"]}
    assert sampled["norm.weight"] is None and sampled["blocks.0.fc.weight"] > 0


def test_stored_values_gather_what_numpy_indexing_gives(tmp_path):
    from ckpttool.formats import stored

    w = torch.randn(300, 70).to(torch.bfloat16)
    path = _save(tmp_path, {"w": w})
    expected = w.float().numpy()
    old, stored.SPAN = stored.SPAN, 1000  # spans of a few rows: every selection crosses several
    try:
        with load_checkpoint(path) as ckpt:
            v = ckpt.values("w")
            rows = np.array([0, 3, 4, 150, 151, 299])
            cases = [(v[rows], expected[rows]), (v[rows[::-1]], expected[rows[::-1]]), (v[::7], expected[::7]), (v[10:20], expected[10:20]),
                     (v[rows][:, [1, 5, 69]], expected[rows][:, [1, 5, 69]]), (v[-1], expected[-1]),
                     (v.T[[2, 9]], expected.T[[2, 9]]), (v.reshape(-1)[::997], expected.reshape(-1)[::997]),
                     (v[np.arange(300) % 2 == 0], expected[::2])]
            for got, want in cases:
                np.testing.assert_array_equal(np.asarray(got), want)
            np.testing.assert_array_equal(np.concatenate(list(v.rows(64))), expected)
    finally:
        stored.SPAN = old

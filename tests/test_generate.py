"""ckpttool.generate: real timm builds of a tiny ViT, real writes; no mocks of our own code.

Simulated, and said so where it happens: ENOSPC (os.fsync made to fail with ENOSPC in-process).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import _init_fixtures as fx
import pytest
from _init_fixtures import ARCH, TINY_KWARGS_JSON, tiny_request

from ckpttool.errors import (
    InvalidArgumentError,
    ManifestError,
    OutputError,
    VerdictMismatchError,
    WeightsUnavailableError,
)
from ckpttool.generate import (
    GenerateRequest,
    build_init,
    generate_init,
    generate_matrix,
    matrix_requests,
    parse_model_kwargs,
    resolve_output_path,
)

REPO = Path(__file__).resolve().parents[1]

# shared fixtures (pytest finds them as module attributes)
_no_network = fx._no_network
offline_hub = fx.offline_hub
random_weights = fx.random_weights
trained_weights = fx.trained_weights


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# -- random init ------------------------------------------------------------------------------------

def test_same_seed_gives_bit_identical_tensors_and_other_seed_differs():
    import torch

    a = build_init(tiny_request(init="random", seed=7))
    b = build_init(tiny_request(init="random", seed=7))
    c = build_init(tiny_request(init="random", seed=8))
    assert list(a.state_dict) == list(b.state_dict)
    for name in a.state_dict:
        assert torch.equal(a.state_dict[name], b.state_dict[name]), name
    assert not torch.equal(a.state_dict["blocks.0.attn.qkv.weight"], c.state_dict["blocks.0.attn.qkv.weight"])
    assert a.verdict.verdict == "random"
    assert a.origin_counts() == {"pretrained": 0, "resampled": 0, "fresh": len(a.state_dict)}
    assert a.source.kind == "random" and a.source.seed == 7


def test_weight_init_mode_is_passed_to_timm_and_recorded():
    built = build_init(tiny_request(init="random", weight_init="moco"))
    assert built.verdict.verdict == "random"
    assert built.source.weight_init == "moco"
    assert built.metadata()["source"]["weight_init"] == "moco"


def test_weight_init_refused_for_arch_that_does_not_take_it():
    with pytest.raises(InvalidArgumentError, match=r"resnet18 does not take --weight-init"):
        build_init(GenerateRequest(arch="resnet18", dataset="cifar10", init="random", weight_init="jax"))


# -- pretrained from a local file -------------------------------------------------------------------

def test_weights_file_resamples_patch_and_pos_embed_and_only_head_is_fresh(trained_weights):
    built = build_init(tiny_request(dataset="cifar100", weights_file=trained_weights))
    origins = {o.name: o.origin for o in built.origins}
    assert origins["patch_embed.proj.weight"] == "resampled"
    assert origins["pos_embed"] == "resampled"
    assert origins["head.weight"] == origins["head.bias"] == "fresh"
    assert {n for n, o in origins.items() if o != "pretrained"} == {
        "patch_embed.proj.weight", "pos_embed", "head.weight", "head.bias"}
    assert built.state_dict["pos_embed"].shape == (1, 65, 64)  # 8x8 grid + cls
    assert built.state_dict["patch_embed.proj.weight"].shape == (64, 3, 4, 4)
    assert built.verdict.verdict == "pretrained"
    assert built.img_size == 32 and built.patch_size == 4
    assert built.source.kind == "file" and len(built.source.sha256) == 64


def test_random_weights_file_with_init_pretrained_is_refused_and_nothing_written(random_weights, tmp_path):
    out = tmp_path / "init" / "x_pretrained.pth.tar"
    with pytest.raises(VerdictMismatchError) as info:
        generate_init(tiny_request(dataset="cifar100", weights_file=random_weights, out=out))
    assert info.value.exit_code == 1
    # resampling iid noise to a new grid makes pos_embed spatially smooth, so the verdict may call
    # the result "partial" rather than "random": either way it is not "pretrained" and is refused
    assert info.value.evidence.verdict in ("random", "partial")
    assert "nothing was written" in str(info.value)
    assert not out.exists()
    assert _files(tmp_path / "init") == []  # no manifest, no temp, no backup


def test_weights_file_that_does_not_fit_lists_mismatched_keys(tmp_path):
    import timm
    from safetensors.torch import save_file

    other = timm.create_model(ARCH, num_classes=10, img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2)
    path = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))
    with pytest.raises(InvalidArgumentError) as info:
        build_init(tiny_request(weights_file=path))
    msg = str(info.value)
    assert info.value.exit_code == 2
    assert "do not fit vit_tiny_patch16_224.augreg_in21k_ft_in1k" in msg
    assert "[32] in file vs [64] in model" in msg
    assert "more)" in msg and "\n" not in msg


def test_weights_file_with_extra_blocks_does_not_fit(trained_weights, tmp_path):
    from safetensors.torch import load_file, save_file

    sd = load_file(str(trained_weights))
    sd["blocks.2.norm1.weight"] = sd["blocks.1.norm1.weight"].clone()
    path = tmp_path / "extra.safetensors"
    save_file(sd, str(path))
    with pytest.raises(InvalidArgumentError, match=r"1 mismatched tensors: blocks\.2\.norm1\.weight only in file"):
        build_init(tiny_request(weights_file=path))


def test_missing_weights_file_is_weights_unavailable(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        build_init(tiny_request(weights_file=tmp_path / "nope.safetensors"))


# -- bad arguments ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "pattern"), [
    (dict(arch="vit_smal"), r"unknown architecture 'vit_smal'; did you mean vit_small"),
    (dict(arch="vit_small_patch16_224.augreg_in21"), r"unknown pretrained tag 'augreg_in21' .* augreg_in21k"),
    (dict(dataset="cifar11"), r"unknown dataset 'cifar11'; did you mean cifar10"),
    (dict(num_classes=0, dataset=None), r"--num-classes must be >= 1, got 0"),
    (dict(dataset="cifar10", num_classes=7), r"cifar10 has 10 classes but --num-classes is 7"),
    (dict(init="random", revision="main"), r"--revision is for --init pretrained"),
    (dict(weight_init="jax"), r"--weight-init is for --init random"),
    (dict(model_kwargs=(("foo_bar", 1),)), r"does not take --model-kwargs foo_bar"),
])
def test_bad_arguments_are_invalid_argument_errors(kwargs, pattern):
    with pytest.raises(InvalidArgumentError, match=pattern) as info:
        build_init(tiny_request(**kwargs))
    assert info.value.exit_code == 2


def test_parse_model_kwargs():
    assert parse_model_kwargs('{"depth": 2, "embed_dim": 64}') == (("depth", 2), ("embed_dim", 64))
    with pytest.raises(InvalidArgumentError, match="not valid JSON"):
        parse_model_kwargs("{depth: 2}")
    with pytest.raises(InvalidArgumentError, match="must not set img_size; use --img-size"):
        parse_model_kwargs('{"img_size": 32}')


def test_default_output_name_uses_the_short_name(tmp_path):
    req = GenerateRequest(arch="vit_small", dataset="cifar10", init="pretrained", out_dir=tmp_path)
    assert resolve_output_path(req) == tmp_path / "vit_small_cifar10_pretrained_init.pth.tar"
    with pytest.raises(InvalidArgumentError, match="unsupported suffix"):
        resolve_output_path(GenerateRequest(arch="vit_small", dataset="cifar10", out=tmp_path / "x.zip"))


# -- writing ---------------------------------------------------------------------------------------

def test_written_file_loads_safely_with_metadata_and_manifest_entry(tmp_path, trained_weights):
    import torch

    from ckpttool.loading import load_checkpoint
    from ckpttool.manifest import read_manifest

    out = tmp_path / "init" / "tiny_cifar100_pretrained_init.pth.tar"
    result = generate_init(tiny_request(dataset="cifar100", weights_file=trained_weights, out=out))
    obj = torch.load(out, weights_only=True)
    assert set(obj) == {"state_dict", "ckpttool"}
    meta = obj["ckpttool"]
    assert meta["init"] == "pretrained" and meta["num_classes"] == 100
    assert meta["origins"] == {"pretrained": 28, "resampled": 2, "fresh": 2}
    assert meta["not_pretrained"] == {"patch_embed.proj.weight": "resampled", "pos_embed": "resampled",
                                      "head.weight": "fresh", "head.bias": "fresh"}
    assert set(meta["versions"]) == {"ckpttool", "torch", "timm", "safetensors", "numpy"}
    assert meta["source"]["sha256"] == result.built.source.sha256
    with load_checkpoint(out) as ckpt:
        assert ckpt.metadata["verdict"] == "pretrained"
    entry = read_manifest(out.parent / "MANIFEST.json").get(out.name)
    assert entry.sha256 == result.sha256 and entry.size == out.stat().st_size
    assert entry.expected_verdict == "pretrained" and entry.provenance["img_size"] == 32
    from ckpttool.digest import weights_digest

    assert entry.weights_digest == weights_digest(obj["state_dict"])  # what a script that loads it checks


def test_safetensors_output_carries_the_same_metadata(tmp_path):
    from ckpttool.loading import load_checkpoint

    out = tmp_path / "r.safetensors"
    generate_init(tiny_request(init="random", out=out, seed=3))
    with load_checkpoint(out) as ckpt:
        assert ckpt.format == "safetensors"
        assert ckpt.metadata["source"] == {"kind": "random", "seed": 3, "weight_init": ""}


def test_existing_destination_refused_without_force_and_backed_up_with_force(tmp_path):
    from ckpttool.backup import list_backups

    out = tmp_path / "x_random_init.pth.tar"
    first = generate_init(tiny_request(init="random", out=out, seed=1))
    old_bytes = out.read_bytes()
    with pytest.raises(OutputError, match=r"exists; pass --force to replace it \(the old file is backed up first\)"):
        generate_init(tiny_request(init="random", out=out, seed=2))
    assert out.read_bytes() == old_bytes
    second = generate_init(tiny_request(init="random", out=out, seed=2, force=True))
    assert second.backup is not None and second.backup.reason == "replaced by generate"
    assert second.backup.sha256 == first.sha256
    records = list_backups(tmp_path / "backup_old")
    assert [r.sha256 for r in records] == [first.sha256]
    assert (tmp_path / "backup_old" / records[0].object_path).read_bytes() == old_bytes


def test_corrupted_manifest_stops_generate_and_is_left_byte_identical(tmp_path):
    manifest = tmp_path / "MANIFEST.json"
    manifest.write_bytes(b'{"format": "ckpttool-init-manifest", "version": 1, "files": {')
    before = manifest.read_bytes()
    with pytest.raises(ManifestError, match="is corrupted"):
        generate_init(tiny_request(init="random", out=tmp_path / "x.pth.tar"))
    assert manifest.read_bytes() == before
    assert _files(tmp_path) == ["MANIFEST.json"]


def test_unwritable_destination_is_output_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match="a path component is a file"):
        generate_init(tiny_request(init="random", out=blocker / "sub" / "x.pth.tar"))


def test_disk_full_simulated_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    """SIMULATED: ENOSPC is injected by making os.fsync fail for the checkpoint's temp file."""
    out = tmp_path / "x.pth.tar"
    generate_init(tiny_request(init="random", out=out, seed=1))
    old = out.read_bytes()
    manifest_before = (tmp_path / "MANIFEST.json").read_bytes()
    real_fsync = os.fsync

    def full_disk_fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path / ".x.pth.tar.")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk_fsync)
    with pytest.raises(OutputError, match="No space left on device"):
        generate_init(tiny_request(init="random", out=out, seed=2, force=True))
    assert out.read_bytes() == old
    assert (tmp_path / "MANIFEST.json").read_bytes() == manifest_before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_matrix_generates_every_combination_and_reports_progress(tmp_path):
    base = tiny_request(init="random", out_dir=tmp_path)
    requests = matrix_requests(base, archs=[ARCH], datasets=["cifar10", "cifar100"], inits=("random",))
    events = []
    results = generate_matrix(requests, progress=lambda ev: events.append((ev.index, ev.stage)))
    assert [r.path.name for r in results] == [f"{ARCH}_cifar10_random_init.pth.tar",
                                              f"{ARCH}_cifar100_random_init.pth.tar"]
    assert events == [(0, "start"), (0, "done"), (1, "start"), (1, "done")]
    manifest = json.loads((tmp_path / "MANIFEST.json").read_text())
    assert sorted(manifest["files"]) == sorted(r.path.name for r in results)
    with pytest.raises(InvalidArgumentError, match="with --all use --out-dir"):
        matrix_requests(tiny_request(out=tmp_path / "x.pth.tar"))


# -- processes: kill -9 and concurrency (real subprocesses) -----------------------------------------

_CHILD = r"""
import os, sys, time
from pathlib import Path
from ckpttool.generate import GenerateRequest, generate_init, parse_model_kwargs
out = Path(sys.argv[1]); mode = sys.argv[2]
real_fsync = os.fsync
def hooked(fd):
    target = os.readlink(f"/proc/self/fd/{fd}")
    if mode == "hook" and target.startswith(str(out.parent / ("." + out.name + "."))):
        print("WRITING", flush=True)
        time.sleep(120)
    return real_fsync(fd)
os.fsync = hooked
req = GenerateRequest(arch="vit_tiny_patch16_224", dataset="cifar10", init="random", seed=int(sys.argv[3]),
                      img_size=32, patch_size=4, model_kwargs=parse_model_kwargs(sys.argv[4]), out=out, force=True)
print("READY", flush=True)
generate_init(req)
print("DONE", flush=True)
"""


def _spawn(out: Path, mode: str, seed: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(out), mode, str(seed), TINY_KWARGS_JSON],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def _wait_for(proc: subprocess.Popen, marker: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if marker in line:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"child exited before {marker}: {proc.stderr.read()}")
    raise AssertionError(f"no {marker} within {timeout}s")


def test_kill_9_during_write_leaves_old_file_whole(tmp_path):
    from ckpttool.loading import load_checkpoint

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    outs = {}
    for folder in (a, b):
        out = folder / "x.pth.tar"
        generate_init(tiny_request(init="random", out=out, seed=1))
        outs[folder] = (out, out.read_bytes())
    hooked = _spawn(outs[a][0], "hook", 5)  # killed while its temp file is fully written, not yet renamed
    timed = _spawn(outs[b][0], "plain", 6)  # killed at some moment of its run
    try:
        _wait_for(hooked, "WRITING")
        os.kill(hooked.pid, signal.SIGKILL)
        _wait_for(timed, "READY")
        time.sleep(0.3 + (os.getpid() % 10) / 10)
        os.kill(timed.pid, signal.SIGKILL)
    finally:
        for p in (hooked, timed):
            p.kill()
            p.wait()
    out, old = outs[a]
    assert out.read_bytes() == old  # the old file, whole
    for out, _old in outs.values():
        finals = [p for p in out.parent.iterdir() if p.name == out.name]
        assert len(finals) == 1
        with load_checkpoint(out) as ckpt:  # old or new, but always a whole checkpoint
            assert len(ckpt.tensors) == 32
        # a leftover temp is dot-prefixed and .tmp: never the final name, ignored by the manifest check
        assert all(p.name.startswith(".") for p in out.parent.iterdir() if p.name.endswith(".tmp"))


def test_concurrent_generates_on_one_destination_serialise(tmp_path):
    from ckpttool.backup import list_backups
    from ckpttool.hashing import file_sha256
    from ckpttool.manifest import read_manifest

    out = tmp_path / "x.pth.tar"
    first = generate_init(tiny_request(init="random", out=out, seed=1))
    env = {**os.environ, "COLUMNS": "200"}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "ckpttool", "generate", "--arch", ARCH, "--dataset", "cifar10", "--init", "random",
         "--seed", str(seed), "--img-size", "32", "--patch-size", "4", "--model-kwargs", TINY_KWARGS_JSON,
         "--out", str(out), "--force", "--format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env) for seed in (11, 12, 13)]
    outputs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr
        outputs.append(json.loads(stdout)["sha256"])
    final = file_sha256(out)
    assert final in outputs
    assert len(set(outputs)) == 3
    backed_up = [r.sha256 for r in list_backups(tmp_path / "backup_old")]
    # every replaced version is in the backup manifest exactly once
    assert sorted(backed_up) == sorted([first.sha256, *[s for s in outputs if s != final]])
    assert all(r.reason == "replaced by generate" for r in list_backups(tmp_path / "backup_old"))
    assert read_manifest(tmp_path / "MANIFEST.json").get("x.pth.tar").sha256 == final


def test_tensor_missing_from_weights_stays_fresh_and_is_refused(trained_weights, tmp_path):
    from safetensors.torch import load_file, save_file

    sd = load_file(str(trained_weights))
    del sd["norm.weight"]  # timm loads non-strictly when the head is dropped: it would stay at init
    path = tmp_path / "holey.safetensors"
    save_file(sd, str(path))
    with pytest.raises(VerdictMismatchError, match=r"1 non-head tensors would be freshly initialised .*: norm\.weight;") as info:
        generate_init(tiny_request(dataset="cifar100", weights_file=path, out=tmp_path / "x.pth.tar"))
    assert {o.name for o in info.value.built.not_pretrained() if o.origin == "fresh"} >= {"norm.weight"}


def test_file_lock_excludes_a_second_holder(tmp_path):
    from ckpttool.locking import file_lock, lock_path_for

    target = tmp_path / "x.pth.tar"
    with file_lock(target) as lock:
        assert lock == lock_path_for(target) == tmp_path / ".x.pth.tar.lock"
        with pytest.raises(OutputError, match=r"is locked by another process .* for more than 0\.1 s"):
            with file_lock(target, timeout=0.1):
                pass
    with file_lock(target, timeout=0.1):  # released
        pass

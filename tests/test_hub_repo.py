"""`verify hf://ORG/REPO[@REVISION]` (no file): the repo's model found as transformers and timm find it,
downloaded by the real huggingface_hub client from the local HTTP hub (tests/_local_hub.py) and judged
as one model. Each CLI run is a fork of one warm process that imports neither torch nor timm, as
`verify` does not (tests/_forked_cli.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import _init_fixtures as fx
import pytest
from _forked_cli import ForkedCli
from _local_hub import LocalHub, hub_env
from _shards import load_tensors, save_shards

_no_network = fx._no_network
trained_weights = fx.trained_weights
random_weights = fx.random_weights

REPO = "org/vit-shards"
COMMIT = "1111111111111111111111111111111111111111"
COMMIT2 = "2222222222222222222222222222222222222222"
INDEX = "model.safetensors.index.json"
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
LOOKED_FOR = "model.safetensors.index.json, model.safetensors, pytorch_model.bin.index.json, pytorch_model.bin"


def _sharded_files(tmp: Path, weights: Path) -> dict[str, bytes]:
    index = save_shards(tmp, load_tensors(weights), groups=[["patch_embed.", "cls_token", "pos_embed", "blocks.0."],
                                                            ["blocks.1.", "norm.", "head."]])
    return {p.name: p.read_bytes() for p in index.parent.iterdir()}


@pytest.fixture(scope="module")
def trained_repo(tmp_path_factory, trained_weights) -> dict[str, bytes]:
    return _sharded_files(tmp_path_factory.mktemp("trained"), trained_weights)


@pytest.fixture(scope="module")
def random_repo(tmp_path_factory, random_weights) -> dict[str, bytes]:
    return _sharded_files(tmp_path_factory.mktemp("random"), random_weights)


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """The module's hub and a warm CLI process that imports huggingface_hub, not torch or timm."""
    with LocalHub() as h:
        cli = ForkedCli(hub_env(h, tmp_path_factory.mktemp("warm")), preload="huggingface_hub, ckpttool._hub")
        yield h, cli
        cli.close()


@pytest.fixture
def hub(warm, trained_repo) -> LocalHub:
    h, _ = warm
    h.reset()
    h.add_repo(REPO, {**trained_repo, "README.md": b"# shards\n"}, commit=COMMIT)
    return h


@pytest.fixture
def verify(warm, hub, tmp_path):
    """``verify(*args, **env) -> (code, out, err)``: `ckpttool verify` against the hub, a private cache."""

    def _run(*args: str, **env: str):
        return warm[1].run(hub_env(hub, tmp_path, **env), "verify", *args)

    return _run


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def one_error(result) -> str:
    code, out, err = result
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(lines) == 1 and out == "", (code, out, err)
    assert "Traceback" not in err
    return lines[0]


def test_a_sharded_repo_is_downloaded_and_verified_as_one_model(verify, hub, trained_repo, tmp_path):
    uri = f"hf://{REPO}"
    code, out, err = verify(uri, "--expect", "pretrained", "--format", "json")
    assert code == 0, err
    (f,) = json.loads(out)["files"]
    assert f["verdict"] == "pretrained" and f["passed"] and f["path"].endswith(f"snapshots/{COMMIT}/{INDEX}")
    assert f["sha256"] == sha(trained_repo[INDEX])
    assert [(Path(s["path"]).name, s["sha256"]) for s in f["shards"]] == [(s, sha(trained_repo[s])) for s in SHARDS]
    assert f["hub"] == {"uri": uri, "repo_id": REPO, "filename": INDEX, "revision": None, "commit": COMMIT,
                        "sha256": sha(trained_repo[INDEX]),
                        "shards": [{"filename": s, "sha256": sha(trained_repo[s])} for s in SHARDS]}
    assert sorted(p for m, p, _ in hub.requests if m == "HEAD") == sorted(
        [f"/{REPO}/resolve/main/{INDEX}"] + [f"/{REPO}/resolve/{COMMIT}/{s}" for s in SHARDS])  # shards at its commit
    assert len(hub.downloads()) == 3
    code, out, err = verify(uri)  # text; now from the cache (after a HEAD each)
    assert code == 0, err
    assert (f"{uri}: repo {REPO}, commit {COMMIT}, {INDEX} sha256 {sha(trained_repo[INDEX])} with 2 shards "
            f"(cached at {tmp_path / 'hf-cache'}") in out
    assert "sharded model: 2 shards" in out and len(hub.downloads()) == 3


@pytest.mark.parametrize(("files", "picked"), [
    (("model.safetensors", "pytorch_model.bin"), "model.safetensors"),
    (("pytorch_model.bin",), "pytorch_model.bin"),
])
def test_a_single_file_repo_in_the_order_transformers_looks(verify, hub, trained_weights, files, picked):
    import io

    import torch

    data = {"model.safetensors": trained_weights.read_bytes()}
    buf = io.BytesIO()
    torch.save(load_tensors(trained_weights), buf)
    data["pytorch_model.bin"] = buf.getvalue()
    hub.add_repo("org/single", {name: data[name] for name in files}, commit=COMMIT)
    code, out, err = verify("hf://org/single", "--format", "json", "--expect", "pretrained")
    assert code == 0, err
    (f,) = json.loads(out)["files"]
    assert f["hub"]["filename"] == picked and f["shards"] == [] and "shards" not in f["hub"]
    asked = [p.rsplit("/", 1)[1] for m, p, _ in hub.requests if m == "HEAD"]
    assert asked == LOOKED_FOR.split(", ")[: LOOKED_FOR.split(", ").index(picked) + 1]


@pytest.mark.parametrize("how", ["branch", "commit"])
def test_revision_pinning(verify, hub, random_repo, how):
    hub.add_commit(REPO, random_repo, commit=COMMIT2, branch="v2")
    rev = "v2" if how == "branch" else COMMIT2
    code, out, err = verify(f"hf://{REPO}@{rev}", "--format", "json")
    assert code == 0, err
    (f,) = json.loads(out)["files"]
    assert f["verdict"] == "random" and f["hub"]["commit"] == COMMIT2 and f["hub"]["revision"] == rev
    assert [s["sha256"] for s in f["hub"]["shards"]] == [sha(random_repo[s]) for s in SHARDS]


def test_a_repo_with_none_of_the_files_names_what_was_looked_for(verify, hub):
    hub.add_repo("org/empty", {"README.md": b"# nothing\n", "weights.pt": b"x"}, commit=COMMIT)
    assert one_error(verify("hf://org/empty")) == (
        f"error: org/empty has none of {LOOKED_FOR} (the weight files transformers and timm look for); name its "
        "weight file: hf://org/empty/FILE")


def test_an_index_naming_a_shard_the_repo_lacks(verify, hub, trained_repo):
    hub.repos[REPO].commits[COMMIT].pop(SHARDS[1])
    assert one_error(verify(f"hf://{REPO}")) == (
        f"error: {REPO} has {INDEX} but not the shard '{SHARDS[1]}' it names (the hub answered 404 for it); "
        "the repo is incomplete; tell its owners, or pass a local copy of the model")


FAULTS = {
    "missing repo": ("hf://org/nope", None, None,
                     "error: hub repository org/nope not found on {endpoint} (HTTP 404); check the model name"),
    "missing revision": (f"hf://{REPO}@nope", None, None,
                         f"error: revision 'nope' not found in {REPO}; pass an existing branch, tag or commit"),
    "gated 401": (f"hf://{REPO}", "401", None, f"error: hub repository {REPO} is gated or private (HTTP 401)"),
    "gated 403": (f"hf://{REPO}", "403", None, f"error: hub repository {REPO} is gated or private (HTTP 403)"),
    "server error on metadata": (f"hf://{REPO}", "500", None,
                                 f"error: the hub at {{endpoint}} answered HTTP 500 for {REPO}/{INDEX}; nothing "
                                 "was written; try again later"),
    "server error on a shard": (f"hf://{REPO}", None, "500",
                                f"error: the hub at {{endpoint}} answered HTTP 500 for {REPO}@{COMMIT}/{SHARDS[1]}"),
    "shard body not its sha256": (f"hf://{REPO}", None, "corrupt",
                                  f"error: downloaded {REPO}@{COMMIT}/{SHARDS[1]} does not match the hub's sha256"),
}


@pytest.mark.parametrize("case", list(FAULTS))
def test_each_fault_is_one_error_line(verify, hub, trained_repo, tmp_path, case):
    uri, hub_fault, cdn_fault, start = FAULTS[case]
    hub.hub_fault = hub_fault
    hub.fault, hub.fault_blobs = cdn_fault, {sha(trained_repo[SHARDS[1]])}
    line = one_error(verify(uri))
    assert line.startswith(start.format(endpoint=hub.endpoint)), line
    if cdn_fault == "corrupt":  # the bad copy is gone from the cache; the next run downloads it again
        assert f"the hub advertised {sha(trained_repo[SHARDS[1]])} (the transfer was altered" in line
        hub.fault = None
        code, out, err = verify(uri, "--expect", "pretrained")
        assert code == 0, err


def test_offline_from_the_cache_and_without_it(verify, hub, trained_repo, tmp_path):
    cache = tmp_path / "hf-cache"
    assert one_error(verify(f"hf://{REPO}", HF_HUB_OFFLINE="1")) == (
        f"error: pretrained weights {REPO} unavailable: HF_HUB_OFFLINE is set and none of {LOOKED_FOR} is in "
        f"{cache}; run once with network access to fill the cache, or pass a local copy of the file instead of "
        "the hf:// path")
    code, out, err = verify(f"hf://{REPO}", "--format", "json")
    assert code == 0, err
    online = json.loads(out)["files"][0]["hub"]
    hub.repos.clear()  # the hub no longer answers for it: offline must not ask
    code, out, err = verify(f"hf://{REPO}", "--format", "json", HF_HUB_OFFLINE="1")
    assert code == 0, err
    assert json.loads(out)["files"][0]["hub"] == online
    # a shard missing from the cache, offline: named
    (shard,) = [p for p in cache.rglob(SHARDS[1]) if "snapshots" in p.parts]
    shard.unlink()
    assert one_error(verify(f"hf://{REPO}", HF_HUB_OFFLINE="1")) == (
        f"error: pretrained weights {REPO}@{COMMIT}/{SHARDS[1]} unavailable: HF_HUB_OFFLINE is set and the file "
        f"is not in {cache}; run once with network access to fill the cache, or pass a local copy of the file "
        "instead of the hf:// path")
    shutil.rmtree(cache)

"""`generate` against a local HTTP hub, for real: the real huggingface_hub client downloads over HTTP
from tests/_local_hub.py (HF_ENDPOINT) while the hub drops, stalls, truncates or refuses.

The normal download and the offline rerun run `python -m ckpttool` as a user would (huggingface_hub
reads HF_ENDPOINT and its timeouts at import). The fault scenarios run the same CLI entry point in
forks of one warm process (tests/_forked_cli.py) so that each costs its own work, not an import of
torch and timm.

Every failure: exit code, exactly one `error:` line, nothing written in init_model/ (no file, no
backup, no temp file) and MANIFEST.json byte-identical: never a random fallback.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import _init_fixtures as fx
import pytest
from _forked_cli import ForkedCli
from _init_fixtures import ARCH, COMMIT, REPO_ID, TAG, TINY_KWARGS_JSON
from _local_hub import LocalHub, hub_env

trained_weights = fx.trained_weights
random_weights = fx.random_weights

FULL = f"{ARCH}.{TAG}"
GEN = ("generate", "--arch", FULL, "--dataset", "cifar10", "--init", "pretrained", "--img-size", "32",
       "--patch-size", "4", "--model-kwargs", TINY_KWARGS_JSON)
OUT_NAME = f"{FULL}_cifar10_pretrained_init.pth.tar"
COMMIT2 = "fedcba9876543210fedcba9876543210fedcba98"


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.startswith("error:")]


def run_ckpttool(env: dict[str, str], *args: str) -> Result:
    p = subprocess.run([sys.executable, "-m", "ckpttool", *args], env=env, capture_output=True, text=True,
                       timeout=180)
    return Result(p.returncode, p.stdout, p.stderr)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def init_template(tmp_path_factory) -> Path:
    """An init_model/ folder that already holds a random init and its MANIFEST.json."""
    from _init_fixtures import tiny_request

    from ckpttool.generate import generate_init

    folder = tmp_path_factory.mktemp("template") / "init_model"
    generate_init(tiny_request(init="random", out_dir=folder))
    assert (folder / "MANIFEST.json").is_file()
    return folder


@pytest.fixture
def init_dir(tmp_path, init_template) -> Path:
    folder = tmp_path / "init_model"
    shutil.copytree(init_template, folder)
    return folder


@pytest.fixture
def served(trained_weights) -> bytes:
    return trained_weights.read_bytes()


def _serve(h: LocalHub, served: bytes) -> LocalHub:
    h.add_repo(REPO_ID, {"model.safetensors": served, "README.md": b"# tiny\n"}, commit=COMMIT)
    return h


@pytest.fixture(scope="module")
def module_hub():
    with LocalHub() as h:
        yield h


@pytest.fixture(scope="module")
def forked_cli(module_hub, tmp_path_factory):
    cli = ForkedCli(hub_env(module_hub, tmp_path_factory.mktemp("warm")))
    yield cli
    cli.close()


@pytest.fixture
def hub(module_hub, served) -> LocalHub:
    """The module's hub, reset, serving the trained weights under timm's pretrained tag."""
    module_hub.reset()
    return _serve(module_hub, served)


@pytest.fixture
def run(forked_cli, tmp_path):
    """``run(hub, *args)``: the CLI in a fresh process against ``hub``, with a private cache."""

    def _run(hub: LocalHub, *args: str, **env: str) -> Result:
        return Result(*forked_cli.run(hub_env(hub, tmp_path, **env), *args))

    return _run


def generate_refused(run, hub: LocalHub, init_dir: Path, *args: str) -> str:
    """Run `generate` into ``init_dir``; it must fail with the contract of :func:`refused`."""
    before = snapshot(init_dir)
    return refused(run(hub, *GEN, *args, "--out-dir", str(init_dir)), init_dir, before)


def refused(result: Result, init_dir: Path, before: dict[str, bytes], *, code: int = 2) -> str:
    """The failure contract; returns the one error line."""
    assert result.code == code, result.err
    assert len(result.error_lines) == 1, result.err
    assert "Traceback" not in result.err
    assert snapshot(init_dir) == before  # no file, no backup, no temp file; MANIFEST.json unchanged
    assert not (init_dir / OUT_NAME).exists()
    return result.error_lines[0]


def test_download_writes_pretrained_init_with_repo_commit_and_sha256(init_dir, tmp_path, served):
    from ckpttool.verify import verify_file

    with _serve(LocalHub(), served) as hub:  # `python -m ckpttool`, exactly as a user runs it
        r = run_ckpttool(hub_env(hub, tmp_path), *GEN, "--out-dir", str(init_dir))
    assert r.code == 0, r.err
    assert r.error_lines == []
    out = init_dir / OUT_NAME
    report = verify_file(out, expect="pretrained")
    assert report.passed and report.verdict.verdict == "pretrained"
    src = report.metadata["source"]  # stored in the file itself
    assert _provenance(init_dir, out)["source"] == src  # and pinned in the manifest
    assert src["kind"] == "hub" and src["repo_id"] == REPO_ID and src["filename"] == "model.safetensors"
    assert src["commit"] == COMMIT
    assert src["sha256"] == hashlib.sha256(served).hexdigest()
    assert f"hub {REPO_ID}/model.safetensors @ {COMMIT}" in r.out
    # the real client went through the hub's metadata answer and then the CDN
    assert [m for m, p, _ in hub.requests if "/resolve/main/model.safetensors" in p] == ["HEAD"]
    assert len(hub.downloads()) == 1


def _provenance(init_dir: Path, out: Path) -> dict:
    manifest = json.loads((init_dir / "MANIFEST.json").read_text())
    return manifest["files"][out.name]["provenance"]


def test_connection_dropped_half_way_then_resumed_gives_the_same_file(run, hub, init_dir, tmp_path, served):
    hub.fault = "drop_once"
    r = run(hub, *GEN, "--out-dir", str(init_dir))
    assert r.code == 0, r.err
    ranges = [rng for _, _, rng in hub.downloads()]
    assert len(ranges) == 2 and ranges[0] is None  # dropped, then huggingface_hub asked again
    assert _provenance(init_dir, init_dir / OUT_NAME)["source"]["sha256"] == hashlib.sha256(served).hexdigest()


def test_connection_dropped_half_way_for_good_writes_nothing(run, hub, init_dir, tmp_path):
    """The incident: the download did not finish. Nothing may be written, and the cache holds no file."""
    hub.fault = "drop"
    line = generate_refused(run, hub, init_dir)
    assert line.startswith(f"error: connection to {hub.endpoint} failed or dropped while downloading "
                           f"{REPO_ID}/model.safetensors, also after huggingface_hub's retries")
    assert line.endswith("nothing was written; run again when the network is back (the download resumes)")
    assert not list((tmp_path / "hf-cache").rglob("model.safetensors"))
    assert len(hub.downloads()) > 2  # huggingface_hub tried to resume before giving up


def test_stall_past_the_client_timeout_writes_nothing(run, hub, init_dir, tmp_path):
    hub.fault = "stall"
    line = generate_refused(run, hub, init_dir)
    assert line == (f"error: download of {REPO_ID}/model.safetensors from {hub.endpoint} stalled: no data for 1 s "
                    "(HF_HUB_DOWNLOAD_TIMEOUT), also after huggingface_hub's retries; nothing was written; "
                    "run again when the network is back (the download resumes)")


def test_unknown_repo_is_404_and_names_the_repo(run, hub, init_dir, tmp_path):
    hub.repos.clear()
    line = generate_refused(run, hub, init_dir)
    assert line.startswith(f"error: hub repository {REPO_ID} not found on {hub.endpoint} (HTTP 404); "
                           "check the model name and tag")
    assert "`hf auth login`" in line


def test_repo_without_the_file_is_404_and_names_the_candidates(run, hub, init_dir, tmp_path):
    hub.repos[REPO_ID].commits[COMMIT].pop("model.safetensors")
    line = generate_refused(run, hub, init_dir)
    assert line == (f"error: {REPO_ID} has none of model.safetensors, pytorch_model.bin; "
                    "pass --weights-file PATH")


@pytest.mark.parametrize("status", ["401", "403"])
def test_gated_repo_says_how_to_authenticate(run, hub, init_dir, tmp_path, status):
    hub.hub_fault = status
    line = generate_refused(run, hub, init_dir)
    assert line == (f"error: hub repository {REPO_ID} is gated or private (HTTP {status}) and this request was "
                    "not allowed: log in with `hf auth login` (or set HF_TOKEN to a token with read access) and "
                    "accept the model's terms on its hub page, then run again; or pass --weights-file PATH")


@pytest.mark.parametrize("where", ["metadata", "download"])
def test_server_error_500(run, hub, init_dir, tmp_path, where):
    """500 on the HEAD (huggingface_hub retries it 5 times, honouring Retry-After: 0) or on the GET."""
    if where == "metadata":
        hub.hub_fault = "500"
    else:
        hub.fault = "500"
    line = generate_refused(run, hub, init_dir)
    assert line == (f"error: the hub at {hub.endpoint} answered HTTP 500 for {REPO_ID}/model.safetensors; "
                    "nothing was written; try again later, or pass --weights-file PATH")


def test_body_shorter_than_advertised_size(run, hub, init_dir, tmp_path, served):
    hub.fault = "short"
    line = generate_refused(run, hub, init_dir)
    assert line == (f"error: download of {REPO_ID}/model.safetensors is incomplete: received {len(served) // 2} "
                    f"bytes, the hub advertised {len(served)}; nothing was written; run again")


def test_body_not_matching_the_etag_is_refused_and_removed_from_the_cache(run, hub, init_dir, tmp_path, served):
    hub.fault = "corrupt"
    line = generate_refused(run, hub, init_dir)
    sha = hashlib.sha256(served).hexdigest()
    assert line.startswith(f"error: downloaded {REPO_ID}/model.safetensors does not match the hub's sha256: got ")
    assert f"the hub advertised {sha} (the transfer was altered; the bad copy was removed from the cache)" in line
    assert not [p for p in (tmp_path / "hf-cache").rglob("*") if p.is_file() and p.name in ("model.safetensors", sha)]
    hub.fault = None  # the next run downloads again and succeeds
    r = run(hub, *GEN, "--out-dir", str(init_dir))
    assert r.code == 0, r.err


@pytest.mark.parametrize("how", ["commit", "branch"])
def test_revision_records_the_resolved_commit(run, hub, init_dir, tmp_path, served, how):
    # a second commit on branch "v2" holds other bytes of the same trained weights (metadata differs)
    other = served.replace(b"digits_acc", b"digits_acX", 1)
    assert other != served
    hub.add_commit(REPO_ID, {"model.safetensors": other}, commit=COMMIT2, branch="v2")
    revision = COMMIT2 if how == "commit" else "v2"
    r = run(hub, *GEN, "--revision", revision, "--out-dir", str(init_dir))
    assert r.code == 0, r.err
    src = _provenance(init_dir, init_dir / OUT_NAME)["source"]
    assert src["revision"] == revision and src["commit"] == COMMIT2
    assert src["sha256"] == hashlib.sha256(other).hexdigest()


def test_unknown_revision(run, hub, init_dir, tmp_path):
    line = generate_refused(run, hub, init_dir, "--revision", "nope")
    assert line == f"error: revision 'nope' not found in {REPO_ID}; pass an existing branch, tag or commit"


def test_second_run_offline_with_the_server_stopped_is_served_from_the_cache(run, init_dir, tmp_path, served):
    with _serve(LocalHub(), served) as hub:
        first = run(hub, *GEN, "--out-dir", str(init_dir))
    assert first.code == 0, first.err
    again = run(hub, *GEN, "--out-dir", str(tmp_path / "again"), HF_HUB_OFFLINE="1")
    assert again.code == 0, again.err
    a = _provenance(init_dir, init_dir / OUT_NAME)["source"]
    b = _provenance(tmp_path / "again", tmp_path / "again" / OUT_NAME)["source"]
    assert (b["commit"], b["sha256"], b["path"]) == (a["commit"], a["sha256"], a["path"])


def test_all_with_one_arch_failing_writes_the_others_and_exits_nonzero(run, module_hub, tmp_path, served):
    """`generate --all` (vit_tiny/small/base x cifar10/100, shrunk by --model-kwargs): vit_base's repo is
    missing; the other four files are written, the summary lists the two failures, exit 2."""
    from timm.models import get_pretrained_cfg

    from ckpttool import _hub
    from ckpttool.archs import resolve_arch

    out_dir = tmp_path / "init_model"
    h = module_hub
    h.reset()
    for short in ("vit_tiny", "vit_small"):
        repo, _, _ = _hub.resolve_hub_source(get_pretrained_cfg(resolve_arch(short).full_name))
        h.add_repo(repo, {"model.safetensors": served}, commit=COMMIT)
    base_repo, _, _ = _hub.resolve_hub_source(get_pretrained_cfg(resolve_arch("vit_base").full_name))
    r = run(h, "generate", "--all", "--img-size", "32", "--patch-size", "4",
            "--model-kwargs", TINY_KWARGS_JSON, "--out-dir", str(out_dir))
    assert r.code == 2, r.err
    assert r.error_lines == ["error: generate --all: 2 of 6 files failed (listed above: vit_base cifar10 pretrained, "
                             "vit_base cifar100 pretrained); the other 4 were written"]
    written = sorted(p.name for p in out_dir.glob("*.pth.tar"))
    assert written == sorted(f"{a}_{d}_pretrained_init.pth.tar" for a in ("vit_tiny", "vit_small")
                             for d in ("cifar10", "cifar100"))
    assert sorted(json.loads((out_dir / "MANIFEST.json").read_text())["files"]) == written
    assert "2 of 6 files failed, nothing written for them:" in r.out
    assert f"vit_base cifar10 pretrained: hub repository {base_repo} not found" in r.out
    assert r.out.count("FAILED") == 2



# -- verify hf://ORG/REPO[@REVISION]/FILE -----------------------------------------------------------

def test_verify_hf_path_downloads_and_reports_repo_commit_and_sha256(run, hub, tmp_path, served):
    sha = hashlib.sha256(served).hexdigest()
    uri = f"hf://{REPO_ID}/model.safetensors"
    r = run(hub, "verify", uri, "--expect", "pretrained")
    assert r.code == 0, r.err
    assert f"{uri}: repo {REPO_ID}, commit {COMMIT}, sha256 {sha} (cached at " in r.out
    assert "pretrained" in r.out and r.error_lines == []
    r = run(hub, "verify", f"hf://{REPO_ID}@main/model.safetensors", "--format", "json")
    doc = json.loads(r.out)
    assert r.code == 0 and doc["passed"]
    (f,) = doc["files"]
    assert f["verdict"] == "pretrained" and f["sha256"] == sha
    assert f["hub"] == {"uri": f"hf://{REPO_ID}@main/model.safetensors", "repo_id": REPO_ID,
                        "filename": "model.safetensors", "revision": "main", "commit": COMMIT, "sha256": sha}
    assert len(hub.downloads()) == 1  # the second run was served from the cache (after a HEAD)


def test_verify_hf_path_dropped_connection_is_one_error_line(run, hub, tmp_path):
    hub.fault = "drop"
    r = run(hub, "verify", f"hf://{REPO_ID}/model.safetensors")
    assert r.code == 2 and len(r.error_lines) == 1, r.err
    assert r.error_lines[0].startswith(f"error: connection to {hub.endpoint} failed or dropped while downloading")
    assert r.out == ""


@pytest.mark.parametrize("what", ["repo", "file"])
def test_verify_hf_path_404(run, hub, what):
    uri = "hf://timm/nope/model.safetensors" if what == "repo" else f"hf://{REPO_ID}/nope.safetensors"
    r = run(hub, "verify", uri)
    assert r.code == 2 and len(r.error_lines) == 1, r.err
    if what == "repo":
        assert r.error_lines[0].startswith(f"error: hub repository timm/nope not found on {hub.endpoint} (HTTP 404)")
    else:
        assert r.error_lines[0] == (f"error: {REPO_ID} has no file 'nope.safetensors' (the hub answered 404 for "
                                    "it); check the file name in the repo")


def test_verify_hf_path_imports_neither_torch_nor_timm(hub, tmp_path, served):
    """The light install: `verify hf://...` downloads and verifies without torch or timm."""
    code = ("import sys\nfrom ckpttool.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    print('exit', e.code, sorted({'torch', 'timm'} & set(sys.modules)), file=sys.stderr)\n")
    p = subprocess.run([sys.executable, "-c", code, "verify", f"hf://{REPO_ID}/model.safetensors", "--format", "json"],
                       env=hub_env(hub, tmp_path), capture_output=True, text=True, timeout=120)
    assert p.stderr.splitlines()[-1] == "exit 0 []", p.stderr
    (f,) = json.loads(p.stdout)["files"]
    assert f["verdict"] == "pretrained" and f["hub"]["commit"] == COMMIT
    assert f["hub"]["sha256"] == f["sha256"] == hashlib.sha256(served).hexdigest()

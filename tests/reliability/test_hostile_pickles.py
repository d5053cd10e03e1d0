"""Known pickle attacks, in every container ckpttool reads: refused by name, never executed.

Each payload would touch a marker file if it ever ran (``test_payloads_are_live`` proves that with
plain ``pickle.loads`` in a child process); after every refusal the marker must not exist.
Library (``load_checkpoint``, ``load_state_dict``) and CLI (``ckpttool verify DIR``, folder mode).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import _attacks as A
import pytest

from ckpttool.errors import CheckpointFormatError, UnsafeCheckpointError
from ckpttool.loading import load_checkpoint
from ckpttool.torch_state import load_state_dict

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PAYLOADS = list(A.payloads(Path("/nonexistent")))
CONTAINERS = ("torch-zip", "torch-legacy", "pth.tar", "nested-dict", "data.pkl", "extra.pkl")


@pytest.fixture(autouse=True)
def _browser_touches(monkeypatch):
    monkeypatch.setenv("BROWSER", "touch %s")


def build(container: str, payload: A.Payload, folder: Path) -> Path:
    """Put ``payload`` into one kind of file, as an attacker would."""
    sd = A.benign_state_dict()
    if container == "torch-zip":
        return A.write_torch(folder / "evil.pth", {"state_dict": sd, "x": payload.obj})
    if container == "torch-legacy":
        return A.write_torch(folder / "evil.pt", {"state_dict": sd, "x": payload.obj}, legacy=True)
    if container == "pth.tar":  # a suffix some scanners skip in folder mode
        return A.write_torch(folder / "evil.pth.tar", {"state_dict": sd, "epoch": payload.obj})
    if container == "nested-dict":
        return A.write_torch(folder / "nested.pth", {"state_dict": {**sd, "meta": {"deep": {"x": payload.obj}}}})
    if container == "data.pkl":  # the zip's own pickle replaced by the payload alone
        return A.torch_zip_with_data_pkl(folder / "data_pkl.pth", pickle.dumps(payload.obj, protocol=2), folder)
    if container == "extra.pkl":  # a loadable zip that carries a second, malicious pickle
        return A.torch_zip_with_extra_pkl(folder / "extra.pth", pickle.dumps({"x": payload.obj}, protocol=4), folder)
    raise AssertionError(container)


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("name", PAYLOADS)
def test_attack_is_refused_by_name_and_not_executed(tmp_path, name, container):
    marker = tmp_path / "pwned"
    payload = A.payloads(marker)[name]
    path = build(container, payload, tmp_path)
    for load in (load_checkpoint, load_state_dict):
        with pytest.raises(UnsafeCheckpointError) as err:
            load(path)
        message = str(err.value)
        assert message.startswith(f"refused to load {path}: it imports unsafe globals ")
        for g in payload.globals:
            assert g in message, (g, message)
        assert "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_every_protocol_in_a_torch_zip_is_refused_naming_os_system(tmp_path, protocol):
    marker = tmp_path / "pwned"
    data, name = A.protocol_payload(marker, protocol)
    path = A.torch_zip_with_data_pkl(tmp_path / f"p{protocol}.pth", data, tmp_path)
    for load in (load_checkpoint, load_state_dict):
        with pytest.raises(UnsafeCheckpointError, match=rf"unsafe globals {name} \("):
            load(path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_every_protocol_as_a_bare_pickle_file_is_refused_naming_os_system(tmp_path, protocol):
    marker = tmp_path / "pwned"
    data, name = A.protocol_payload(marker, protocol)
    path = tmp_path / f"p{protocol}.pt"
    path.write_bytes(data)
    with pytest.raises(UnsafeCheckpointError, match=rf"unsafe globals {name} \("):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_torch_save_with_every_protocol_is_refused(tmp_path, protocol):
    marker = tmp_path / "pwned"
    evil = A.payloads(marker)["os.system"].obj
    for legacy in (False, True):
        path = A.write_torch(tmp_path / f"p{protocol}{legacy}.pth", {"w": A.benign_state_dict(), "x": evil},
                             legacy=legacy, protocol=protocol)
        with pytest.raises(UnsafeCheckpointError, match=r"unsafe globals posix\.system \("):
            load_checkpoint(path)
    assert not marker.exists()


def test_protocol_0_bare_pickle_is_not_even_a_checkpoint(tmp_path):
    """Protocol 0/1 pickles have no PROTO opcode: format detection refuses them before any scan."""
    marker = tmp_path / "pwned"
    path = tmp_path / "p0.pt"
    path.write_bytes(A.protocol_payload(marker, 0)[0])
    with pytest.raises(CheckpointFormatError, match="is not a checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_refusal_lists_every_global_of_a_multi_payload_file(tmp_path):
    marker = tmp_path / "pwned"
    ps = A.payloads(marker)
    obj = {"w": A.benign_state_dict(), **{n: p.obj for n, p in ps.items()}}
    path = A.write_torch(tmp_path / "all.pth", obj)
    with pytest.raises(UnsafeCheckpointError) as err:
        load_checkpoint(path)
    wanted = sorted({g for p in ps.values() for g in p.globals})
    assert f"unsafe globals {', '.join(wanted)} (" in str(err.value)
    assert not marker.exists()


def test_payloads_are_live(tmp_path):
    """Control: the same pickles DO touch their markers under plain pickle.loads (in a child process)."""
    blobs = {}
    for name in PAYLOADS:
        marker = tmp_path / f"live-{name}"
        blobs[name] = (marker, pickle.dumps(A.payloads(marker)[name].obj, protocol=2))
    script = tmp_path / "blobs.pkl"
    script.write_bytes(pickle.dumps({n: b for n, (_m, b) in blobs.items()}))
    code = ("import pickle, sys, time; blobs = pickle.load(open(sys.argv[1], 'rb'))\n"
            "for b in blobs.values():\n    r = pickle.loads(b)\n    getattr(r, 'wait', lambda: None)()\n"
            "time.sleep(0.5)\n")  # webbrowser runs its command in the background
    env = A.hostile_env({**os.environ, "PYTHONPATH": str(HERE)})
    subprocess.run([sys.executable, "-c", code, str(script)], check=True, env=env, capture_output=True, timeout=60)
    assert [n for n, (m, _b) in blobs.items() if not m.exists()] == []


def test_cli_folder_mode_refuses_each_bad_file_on_one_line(tmp_path):
    """`ckpttool verify DIR`: exit 2, one `error:` line per bad file naming its global, no traceback."""
    folder = tmp_path / "models"
    (folder / "sub").mkdir(parents=True)
    marker = tmp_path / "pwned"
    ps = A.payloads(marker)
    bad = {
        build("torch-zip", ps["os.system"], folder): "posix.system",
        build("pth.tar", ps["builtins.eval"], folder / "sub"): "builtins.eval",
        build("torch-legacy", ps["subprocess.Popen"], folder): "subprocess.Popen",
        build("extra.pkl", ps["runpy._run_code"], folder): "runpy._run_code",
        build("nested-dict", ps["webbrowser.open"], folder / "sub"): "webbrowser.open",
        build("data.pkl", ps["getattr-chain"], folder): "builtins.getattr",
    }
    (folder / "good.safetensors").write_bytes(A.valid_safetensors_bytes())
    r = subprocess.run([sys.executable, "-m", "ckpttool", "verify", str(folder)], capture_output=True, text=True,
                       env=A.hostile_env({**os.environ, "COLUMNS": "200"}), cwd=REPO, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == len(bad), r.stderr
    for path, name in bad.items():
        lines = [ln for ln in errors if f"refused to load {path}:" in ln]
        assert len(lines) == 1 and name in lines[0], (path, errors)
    assert not marker.exists()

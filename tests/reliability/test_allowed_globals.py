"""Issue 11, findings 1-5: files built only from allowed globals, bombs, and inputs that used to give
tracebacks. Every one must end as ONE ``error:`` line and exit 2 in bounded time and memory, with
the other files of a folder still judged, and no signal. Builders live in ``_allowed.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import _allowed as W
import _attacks as A
import pytest

from ckpttool.errors import CheckpointFormatError, UnsafeCheckpointError
from ckpttool.formats.limits import MAX_OPCODES, MAX_PICKLE_BYTES, MAX_TENSORS, CheckpointLimitError
from ckpttool.loading import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# Run the CLI in a child and report its exit code, output and peak RSS (it must survive: no signal).
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the (large) parent across fork+exec.
_CHILD = """
import json, sys
from ckpttool.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"code": code, "rss": int(hwm.split()[1]) * 1024, "torch": "torch" in sys.modules}))
"""

# name -> (pickle builder, what the one line must say)
PICKLE_CASES = {
    "f1_object_array_in_set": (W.object_array_in_set, r"only numeric dtypes are accepted"),
    "f1_object_array_reconstructed": (W.object_array_reconstructed, r"only numeric dtypes are accepted"),
    "f2_ordered_dict_hiding_values": (W.ordered_dict_hiding_values, r"carries attributes 'values'"),
    "f3_tensor_constructor": (W.tensor_constructor, r"calls torch\.FloatTensor"),
    "f3_bytearray_of_size": (W.bytearray_of_size, r"builtins\.bytearray with a int"),
    "f3_stride_zero_view": (W.stride_zero_view, r"overlapping strides \(0, 0\)"),
    "f3_numpy_device_tensor": (W.numpy_device_tensor, r"device tensor rebuilt from a numpy array"),
    "f3_sparse_tensor": (W.sparse_tensor, r"sparse tensor"),
    "f4_opcode_bomb": (W.opcode_bomb, r"more work than its size allows"),
    "f5_deep_tuple_key": (W.deep_tuple_key, r"nests containers more than 500 deep"),
    "f5_meta_tensor": (W.meta_tensor, r"meta tensor"),
    "f5_complex32": (lambda: W.dtype_tensor("complex32"), r"dtype complex32"),
    "f5_bits8": (lambda: W.dtype_tensor("bits8"), r"dtype bits8"),
    "f5_bits16": (lambda: W.dtype_tensor("bits16"), r"dtype bits16"),
}


def _safetensors_cases(folder: Path) -> dict[str, tuple[Path, str]]:
    huge_int = b'{"w": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 4]}}'
    deep = b'{"w": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    many = {f"t{k}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for k in range(MAX_TENSORS + 1)}
    return {
        "f5_huge_int": (A.raw_safetensors(folder / "f5_huge_int.safetensors", huge_int, bytes(4)), r"header is not JSON"),
        "f5_deep_json": (A.raw_safetensors(folder / "f5_deep_json.safetensors", deep), r"header is not JSON"),
        "f4_many_tensors": (A.raw_safetensors(folder / "f4_many_tensors.safetensors", many),
                            rf"tensors, more than {MAX_TENSORS}"),
    }


def _deflate_bomb(path: Path) -> Path:
    """A torch zip whose deflated data.pkl inflates past MAX_PICKLE_BYTES (a few hundred KB on disk)."""
    body = b"\x80\x02]q\x00(" + b"N" * (MAX_PICKLE_BYTES + 1024) + b"e."
    return W.write_zip(path, body, deflate_pkl=True)


def _run_cli(*args: str) -> tuple[dict, str, str]:
    r = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, **ONE_THREAD}, timeout=120)
    assert r.returncode == 0, f"the child died (signal or crash): rc={r.returncode}\n{r.stderr[-2000:]}"
    *out, last = r.stdout.splitlines()
    return json.loads(last), "\n".join(out), r.stderr


@pytest.fixture(scope="module")
def hostile_folder(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    import torch

    folder = tmp_path_factory.mktemp("allowed")
    wanted = {}
    for name, (build, pattern) in PICKLE_CASES.items():
        W.write_zip(folder / f"{name}.pth", build())
        wanted[f"{name}.pth"] = pattern
    for path, pattern in _safetensors_cases(folder).values():
        wanted[path.name] = pattern
    _deflate_bomb(folder / "f4_deflate_bomb.pth")
    wanted["f4_deflate_bomb.pth"] = "inflates to more than"
    torch.save({"w": torch.ones(1, 4).expand(1 << 16, 4)}, folder / "f3_expand_view.pth")  # saved by torch itself
    wanted["f3_expand_view.pth"] = r"overlapping strides"
    torch.save({"fc.weight": torch.randn(16, 16)}, folder / "good_random_init.pth")
    return folder, wanted


def test_each_hostile_file_is_one_error_line_and_the_good_one_is_still_judged(hostile_folder):
    folder, wanted = hostile_folder
    result, stdout, stderr = _run_cli("verify", str(folder), "--format", "json")
    assert result["code"] == 2
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert all(line.startswith("error: ") for line in lines), lines
    report = json.loads(stdout)
    errors = {Path(e["path"]).name: e["error"] for e in report["errors"]}
    for name, pattern in wanted.items():
        assert name in errors, (name, sorted(errors))
        assert re.search(pattern, errors[name]), (name, errors[name])
        assert "\n" not in errors[name]
    assert [Path(f["path"]).name for f in report["files"]] == ["good_random_init.pth"]
    biggest = max(p.stat().st_size for p in folder.iterdir())
    assert result["rss"] < 4 * biggest + 200 * 2**20, result["rss"]
    assert not result["torch"]


def test_backup_of_a_hostile_file_records_it_as_unreadable(hostile_folder, tmp_path):
    """Finding 5: backup used to crash on these; now the verdict at backup time is 'unreadable'."""
    folder, _ = hostile_folder
    work = tmp_path / "w"
    work.mkdir()
    target = work / "f5_meta_tensor.pth"
    target.write_bytes((folder / "f5_meta_tensor.pth").read_bytes())
    result, stdout, stderr = _run_cli("backup", str(target), "--root", str(work), "--format", "json")
    assert result["code"] == 0 and "Traceback" not in stderr, stderr
    assert json.loads(stdout)["backups"][0]["verdict"] == "unreadable"


@pytest.mark.parametrize("name", sorted(PICKLE_CASES))
def test_library_refuses_with_a_typed_error(tmp_path, name):
    build, pattern = PICKLE_CASES[name]
    path = W.write_zip(tmp_path / f"{name}.pth", build())
    with pytest.raises((UnsafeCheckpointError, CheckpointFormatError), match=pattern) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_ema_weights_are_judged_too(tmp_path):
    """Finding 2a: {'state_dict': trained, 'state_dict_ema': random} must not pass as pretrained."""
    import torch
    from _trained import trained_resnet

    from ckpttool.verify import verify_file

    model, _ = trained_resnet()
    trained = model.state_dict()
    torch.manual_seed(1)
    from ckpttool.verdict import _calibration as cal

    random_sd = cal.create_random_model("test_resnet", in_chans=1).state_dict()
    path = tmp_path / "mixed_pretrained_init.pth"
    torch.save({"state_dict": trained, "state_dict_ema": random_sd}, path)
    report = verify_file(path)
    assert report.verdict.verdict == "pretrained"
    assert dict(report.other_weight_sets)["state_dict_ema"].verdict == "random"
    assert not report.passed
    assert "weight set state_dict_ema: verdict random, expected pretrained" in report.failure_reason
    sets = report.to_dict()["weight_sets"]
    assert [(s["wrapper"], s["verdict"]) for s in sets] == [("state_dict", "pretrained"), ("state_dict_ema", "random")]
    torch.save({"state_dict": trained, "state_dict_ema": trained}, path)
    assert verify_file(path).passed


def test_legacy_pickle_is_scanned_as_a_stream(tmp_path):
    """Finding 4: a 10 MB legacy object pickle of cheap opcodes is refused at the opcode cap, in bounded memory."""
    parts = A.legacy_parts(A.legacy_bytes())
    ops = A.pickle_ops(parts[3])
    parts[3] = b"".join([ops[0], b"(", b"N" * (10 * 2**20), b"1", *ops[1:]])  # MARK, 10M NONEs, POP_MARK
    path = tmp_path / "long.pt"
    path.write_bytes(b"".join(parts))
    result, _, stderr = _run_cli("verify", str(path))
    assert result["code"] == 2 and stderr.startswith("error: ") and len(stderr.splitlines()) == 1, stderr
    assert f"more than {MAX_OPCODES} opcodes" in stderr
    assert result["rss"] < 200 * 2**20, result["rss"]


def test_refusal_names_only_the_globals_actually_refused(tmp_path):
    """Issue 10, item 7: allowed globals used beside the payload (OrderedDict, rebuilds, set...) are not listed."""
    marker = tmp_path / "pwned"
    evil = A.payloads(marker)["os.system"].obj
    import torch

    # builtin types as values (a config's type annotations): refused too, but not named beside a culprit
    obj = {"state_dict": torch.nn.Linear(2, 2).state_dict(), "s": {1, 2}, "b": bytearray(b"x"),
           "types": [int, dict, list], "x": evil}
    path = A.write_torch(tmp_path / "evil.pth", obj)
    with pytest.raises(UnsafeCheckpointError) as err:
        load_checkpoint(path)
    listed = str(err.value).split("unsafe globals ", 1)[1].split(" (", 1)[0]
    assert listed == "posix.system"
    path = A.write_torch(tmp_path / "types.pth", {"w": torch.ones(1), "types": [int, dict]})
    with pytest.raises(UnsafeCheckpointError, match=r"unsafe globals builtins\.dict, builtins\.int \("):
        load_checkpoint(path)


@pytest.mark.parametrize("command", [["verify"], ["inspect"], ["inspect", "--format", "json"]])
def test_fifo_is_refused_not_waited_on(tmp_path, command):
    fifo = tmp_path / "weights.pth"
    os.mkfifo(fifo)
    r = subprocess.run([sys.executable, "-m", "ckpttool", *command, str(fifo)], capture_output=True, text=True,
                       cwd=REPO, env={**os.environ, **ONE_THREAD}, timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and len(r.stderr.splitlines()) == 1, r.stderr
    assert "not a regular file" in r.stderr


def test_limits_are_the_documented_ones():
    text = (REPO / "SECURITY.md").read_text()
    for value in (MAX_PICKLE_BYTES, MAX_OPCODES, MAX_TENSORS):
        assert f"{value:,}" in text, value
    assert issubclass(CheckpointLimitError, CheckpointFormatError)


@pytest.mark.parametrize("legacy", [False, True])
def test_torch_files_are_read_in_bounded_memory(tmp_path, legacy):
    """Torch zips and legacy files, like safetensors: pages released per tensor, peak ~ one tensor."""
    import torch

    gen = torch.Generator().manual_seed(0)
    sd = {f"blocks.{i}.w": torch.randn(1024, 1024, generator=gen) for i in range(24)}  # 96 MiB
    path = tmp_path / ("big.pt" if legacy else "big.pth")
    torch.save(sd, path, **({"_use_new_zipfile_serialization": False} if legacy else {}))
    result, _, stderr = _run_cli("verify", "--expect", "any", str(path))
    assert result["code"] == 0, stderr
    size = path.stat().st_size
    assert result["rss"] < 90 * 2**20 + size // 2, (result["rss"] / 2**20, size / 2**20)

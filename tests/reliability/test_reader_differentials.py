"""Issue 19: the seven ways a file could make ckpttool judge other tensors than torch loads.

Each file is built the way an attacker (or a buggy exporter) would, with "trained" values T = 7
where ckpttool used to look and "random" values R = -1 where torch looks. ckpttool must refuse it
(exit 2, one line) or judge exactly what ``torch.load(weights_only=True)`` returns, with and without
``mmap=True`` (``_parity.disagreement``). Each test failed on the reader before issue 19.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import _attacks as A
import pytest
import torch
from _cli import cli
from _parity import disagreement, ours, theirs

from ckpttool.errors import CheckpointFormatError, UnsafeCheckpointError
from ckpttool.loading import load_checkpoint

T = {"w": torch.full((4,), 7.0)}  # what ckpttool was made to judge
R = {"w": torch.full((4,), -1.0)}  # what torch loads
_KEY0 = b"X\x01\x00\x00\x000"  # BINUNICODE '0': the storage key in torch's data.pkl


def members(sd: dict) -> list[tuple[str, bytes]]:
    buf = io.BytesIO()
    torch.save(sd, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]


def write(path: Path, entries: list[tuple[str, bytes]]) -> Path:
    path.write_bytes(A.build_zip(entries))
    return path


def rekeyed(entries: list[tuple[str, bytes]], key: str) -> list[tuple[str, bytes]]:
    """The same checkpoint with its one storage under another key (``data/<key>``)."""
    out = []
    for name, data in entries:
        if name.endswith("/data.pkl"):
            assert data.count(_KEY0) == 1
            raw = key.encode()
            data = data.replace(_KEY0, b"X" + len(raw).to_bytes(4, "little") + raw)
        out.append((name.replace("/data/0", f"/data/{key}"), data))
    return out


def assert_refused_or_same(path: Path) -> None:
    reason = disagreement(path)
    assert reason is None, reason
    assert any(theirs(path, mmap=m)[0] == "loaded" for m in (False, True)) or ours(path)[0] == "refused"


def assert_refused(path: Path, match: str, error=CheckpointFormatError) -> None:
    with pytest.raises(error, match=match):
        load_checkpoint(path)
    assert_refused_or_same(path)


# 1. Which folder of the zip ------------------------------------------------------------------------


def test_class1_torch_reads_the_folder_of_the_first_entry(tmp_path):
    trained, rand = members(T), members(R)
    version = next(d for n, d in trained if n.endswith("/version"))
    entries = [("a/version", version)]
    entries += [(n.replace("archive/", "a/x/"), d) for n, d in trained]  # read by ckpttool before issue 19
    entries += [(n.replace("archive/", "a/"), d) for n, d in rand if not n.endswith("/version")]  # torch reads
    path = write(tmp_path / "folders.pth", entries)
    assert theirs(path)[1] == {"/'w'": ("float32", (4,), R["w"].numpy().tobytes())}
    assert_refused_or_same(path)
    with load_checkpoint(path) as ckpt:  # the folder torch reads: the random values are judged
        assert ckpt.array("w").tolist() == [-1.0] * 4


# 2. Case-insensitive names -------------------------------------------------------------------------


def test_class2_a_data_pkl_in_other_case_is_refused(tmp_path):
    trained, rand = members(T), rekeyed(members(R), "1")
    shout = [("archive/DATA.PKL", dict(rand)["archive/data.pkl"])]
    path = write(tmp_path / "case.pth", shout + trained + [("archive/data/1", dict(rand)["archive/data/1"])])
    assert theirs(path)[1]["/'w'"][2] == R["w"].numpy().tobytes()  # torch reads DATA.PKL
    assert_refused(path, r"two zip members named 'archive/data\.pkl' \(ignoring case\)")


def test_class2_a_byteorder_in_other_case_is_refused(tmp_path):
    path = write(tmp_path / "order.pth", [("archive/BYTEORDER", b"big"), *members(T)])
    assert theirs(path)[1]["/'w'"][2] != T["w"].numpy().tobytes()  # torch byte-swaps every tensor
    assert_refused(path, r"\(ignoring case\)")


def test_class2_a_storage_in_other_case_is_refused(tmp_path):
    trained = members(T)
    rand = dict(members(R))["archive/data/0"]
    path = write(tmp_path / "storage.pth", [*trained[:4], ("archive/Data/0", rand), *trained[4:]])
    assert_refused(path, r"'archive/data/0' \(ignoring case\)")


# 3. Where the central directory is -----------------------------------------------------------------


def test_class3_two_joined_archives_are_refused(tmp_path):
    path = tmp_path / "joined.pth"
    path.write_bytes(A.build_zip(members(R)) + A.build_zip(members(T)))
    assert theirs(path)[1]["/'w'"][2] == R["w"].numpy().tobytes()  # torch: the directory at the absolute offset
    assert_refused(path, "not at the offset its end record names")


def test_class3_data_after_the_end_record_is_refused(tmp_path):
    path = tmp_path / "appended.pth"
    path.write_bytes(A.build_zip(members(T)) + b"appended" * 8)
    assert_refused(path, "after its zip end record")


# 4. Hidden payload: a pickle torch reads is scanned --------------------------------------------------


def _payload_pickle(marker: Path, size: int = 0) -> bytes:
    """A pickle that runs ``os.system`` on load, padded after its STOP to ``size`` bytes."""
    import pickle

    data = pickle.dumps({"w": A.payloads(marker)["os.system"].obj}, protocol=2)
    assert len(data) <= max(size, len(data))
    return data + b"\0" * max(size - len(data), 0)


def test_class4_payload_in_other_case_is_scanned(tmp_path, capsys):
    marker = tmp_path / "pwned"
    # (with this many members, miniz's binary search over the sorted names lands on DATA.PKL)
    entries = [("archive/DATA.PKL", _payload_pickle(marker)), *members(T), ("archive/data/1", bytes(16))]
    path = write(tmp_path / "hidden.pth", entries)
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_checkpoint(path)
    code, out, err = cli(capsys, "verify", str(path), "--expect", "pretrained")
    assert code == 2 and err.count("error:") == 1 and "system" in err
    assert not marker.exists()
    torch.load(path, weights_only=False)  # what a training script without weights_only would run
    assert marker.exists()


def test_class4_payload_in_a_prepended_archive_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    # the same layout as the trained archive: its directory sits where the end record points
    evil = [(n, _payload_pickle(marker, len(d)) if n.endswith("data.pkl") else d) for n, d in members(T)]
    path = tmp_path / "hidden.pth"
    path.write_bytes(A.build_zip(evil) + A.build_zip(members(T)))
    with pytest.raises(CheckpointFormatError, match="not at the offset its end record names"):
        load_checkpoint(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_class4_pickle_like_member_outside_the_storages_is_scanned(tmp_path):
    marker = tmp_path / "pwned"
    path = write(tmp_path / "extra.pth", [*members(T), ("archive/extra.PKL", _payload_pickle(marker))])
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_checkpoint(path)
    path = write(tmp_path / "record.pth", [*members(T), ("archive/model_args", _payload_pickle(marker))])
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_checkpoint(path)
    assert not marker.exists()


# 5. _rebuild_parameter_with_state --------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True])
def test_class5_parameter_state_is_refused(tmp_path, legacy):
    p = torch.nn.Parameter(T["w"].clone())
    p.__dict__["data"] = R["w"].clone()  # torch.save writes it as the Parameter's state; torch.load setattrs it
    path = A.write_torch(tmp_path / "param.pth", {"w": p}, legacy=legacy)
    assert theirs(path)[1]["/'w'"][2] == R["w"].numpy().tobytes()
    assert_refused(path, "carries saved attributes", UnsafeCheckpointError)


# 6. _rebuild_tensor_v2 metadata --------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True])
def test_class6_tensor_metadata_is_refused(tmp_path, legacy):
    path = A.write_torch(tmp_path / "neg.pth", {"w": torch._neg_view(T["w"].clone())}, legacy=legacy)
    assert theirs(path)[1]["/'w'"][2] == (-T["w"]).numpy().tobytes()  # torch applies the neg bit
    assert_refused(path, "carries metadata", UnsafeCheckpointError)


# 7. String decoding --------------------------------------------------------------------------------


def test_class7_py2_strings_are_utf8_as_for_torch(tmp_path):
    trained, rand = members(T), members(R)
    raw = "0é".encode()
    pkl = dict(trained)["archive/data.pkl"].replace(_KEY0, b"U" + bytes([len(raw)]) + raw)  # SHORT_BINSTRING
    entries = [(n, pkl if n.endswith("data.pkl") else d) for n, d in trained if not n.endswith("/data/0")]
    entries += [("archive/data/0é", dict(rand)["archive/data/0"]),  # UTF-8: what torch reads
                ("archive/data/0Ã©", dict(trained)["archive/data/0"])]  # latin1: ckpttool before issue 19
    path = write(tmp_path / "strings.pth", entries)
    assert theirs(path)[1]["/'w'"][2] == R["w"].numpy().tobytes()
    assert_refused_or_same(path)
    with load_checkpoint(path) as ckpt:
        assert ckpt.array("w").tolist() == [-1.0] * 4


def test_class7_a_string_torch_cannot_decode_is_refused(tmp_path):
    trained = members(T)
    pkl = dict(trained)["archive/data.pkl"].replace(_KEY0, b"U\x02\xff\xfe")
    entries = [(n, pkl if n.endswith("data.pkl") else d) for n, d in trained]
    entries.append(("archive/data/\xff\xfe", dict(trained)["archive/data/0"]))  # its latin1 reading
    path = write(tmp_path / "latin1.pth", entries)
    assert theirs(path)[0] == "refused"
    with pytest.raises(CheckpointFormatError):
        load_checkpoint(path)


# Compatibility: what torch loads and ckpttool now reads as torch does ---------------------------------


def test_legacy_big_endian_sys_info_is_ignored_as_by_torch(tmp_path):
    parts = A.legacy_parts(A.legacy_bytes())
    assert parts[2].count(b"\x88") == 1  # sys_info's little_endian: True
    parts[2] = parts[2].replace(b"\x88", b"\x89")  # NEWTRUE -> NEWFALSE: "big-endian"
    path = tmp_path / "big.pt"
    path.write_bytes(b"".join(parts))
    assert theirs(path)[0] == "loaded"
    assert_refused_or_same(path)
    assert ours(path)[0] == "loaded"


def test_compressed_storages_are_refused(tmp_path):
    path = tmp_path / "deflated.pth"
    path.write_bytes(A.build_zip(members(T), zipfile.ZIP_DEFLATED))
    assert theirs(path, mmap=True)[1]["/'w'"][2] != T["w"].numpy().tobytes()  # mmap reads it raw
    assert_refused(path, "is compressed")

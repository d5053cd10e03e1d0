"""The issue-19 reader differentials as files: each built the way an attacker (or a buggy exporter)
would, with "trained" values T = 7 where ckpttool used to look and "random" values R = -1 (or a
payload) where torch looks. Used by tests/reliability/test_reader_differentials.py and
benchmarks/scanner_comparison.py.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import _attacks as A
import torch

T = {"w": torch.full((4,), 7.0)}  # what ckpttool was made to judge
R = {"w": torch.full((4,), -1.0)}  # what torch loads
KEY0 = b"X\x01\x00\x00\x000"  # BINUNICODE '0': the storage key in torch's data.pkl


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
            assert data.count(KEY0) == 1
            raw = key.encode()
            data = data.replace(KEY0, b"X" + len(raw).to_bytes(4, "little") + raw)
        out.append((name.replace("/data/0", f"/data/{key}"), data))
    return out


def payload_pickle(marker: Path, size: int = 0) -> bytes:
    """A pickle that runs ``os.system`` (touching ``marker``) on load, padded after its STOP to ``size`` bytes."""
    data = pickle.dumps({"w": A.payloads(marker)["os.system"].obj}, protocol=2)
    return data + b"\0" * max(size - len(data), 0)


# 1. torch reads the folder of the first central-directory entry
def folders(path: Path) -> Path:
    trained, rand = members(T), members(R)
    version = next(d for n, d in trained if n.endswith("/version"))
    entries = [("a/version", version)]
    entries += [(n.replace("archive/", "a/x/"), d) for n, d in trained]  # read by ckpttool before issue 19
    entries += [(n.replace("archive/", "a/"), d) for n, d in rand if not n.endswith("/version")]  # torch reads
    return write(path, entries)


# 2. torch looks names up ignoring case
def data_pkl_case(path: Path) -> Path:
    trained, rand = members(T), rekeyed(members(R), "1")
    shout = [("archive/DATA.PKL", dict(rand)["archive/data.pkl"])]
    return write(path, shout + trained + [("archive/data/1", dict(rand)["archive/data/1"])])


def byteorder_case(path: Path) -> Path:
    return write(path, [("archive/BYTEORDER", b"big"), *members(T)])


def storage_case(path: Path) -> Path:
    trained = members(T)
    return write(path, [*trained[:4], ("archive/Data/0", dict(members(R))["archive/data/0"]), *trained[4:]])


# 3. torch reads the central directory at the end record's absolute offset
def joined(path: Path) -> Path:
    path.write_bytes(A.build_zip(members(R)) + A.build_zip(members(T)))
    return path


def appended(path: Path) -> Path:
    path.write_bytes(A.build_zip(members(T)) + b"appended" * 8)
    return path


# 4. hidden payloads: a pickle torch (or another loader) reads must be scanned
def payload_case(path: Path, marker: Path) -> Path:
    # (with this many members, miniz's binary search over the sorted names lands on DATA.PKL)
    return write(path, [("archive/DATA.PKL", payload_pickle(marker)), *members(T), ("archive/data/1", bytes(16))])


def payload_prepended(path: Path, marker: Path) -> Path:
    # the same layout as the trained archive, so that its directory sits where the end record points
    evil = [(n, payload_pickle(marker, len(d)) if n.endswith("data.pkl") else d) for n, d in members(T)]
    path.write_bytes(A.build_zip(evil) + A.build_zip(members(T)))
    return path


def payload_extra_pkl(path: Path, marker: Path) -> Path:
    return write(path, [*members(T), ("archive/extra.PKL", payload_pickle(marker))])


def payload_record(path: Path, marker: Path) -> Path:
    return write(path, [*members(T), ("archive/model_args", payload_pickle(marker))])


# 5. torch applies a Parameter's saved state with setattr
def parameter_state(path: Path, legacy: bool = False) -> Path:
    p = torch.nn.Parameter(T["w"].clone())
    p.__dict__["data"] = R["w"].clone()  # torch.save writes it as the Parameter's state
    return A.write_torch(path, {"w": p}, legacy=legacy)


# 6. torch applies _rebuild_tensor_v2's metadata
def neg_metadata(path: Path, legacy: bool = False) -> Path:
    return A.write_torch(path, {"w": torch._neg_view(T["w"].clone())}, legacy=legacy)


# 7. torch decodes Python 2 strings as UTF-8
def utf8_key(path: Path) -> Path:
    trained, rand = members(T), members(R)
    raw = "0é".encode()
    pkl = dict(trained)["archive/data.pkl"].replace(KEY0, b"U" + bytes([len(raw)]) + raw)  # SHORT_BINSTRING
    entries = [(n, pkl if n.endswith("data.pkl") else d) for n, d in trained if not n.endswith("/data/0")]
    entries += [("archive/data/0é", dict(rand)["archive/data/0"]),  # UTF-8: what torch reads
                ("archive/data/0Ã©", dict(trained)["archive/data/0"])]  # latin1: ckpttool before issue 19
    return write(path, entries)


def undecodable_key(path: Path) -> Path:
    trained = members(T)
    pkl = dict(trained)["archive/data.pkl"].replace(KEY0, b"U\x02\xff\xfe")
    entries = [(n, pkl if n.endswith("data.pkl") else d) for n, d in trained]
    entries.append(("archive/data/\xff\xfe", dict(trained)["archive/data/0"]))  # its latin1 reading
    return write(path, entries)


# Compatibility
def legacy_big_endian(path: Path) -> Path:
    parts = A.legacy_parts(A.legacy_bytes())
    assert parts[2].count(b"\x88") == 1  # sys_info's little_endian: True
    parts[2] = parts[2].replace(b"\x88", b"\x89")  # NEWTRUE -> NEWFALSE: "big-endian"
    path.write_bytes(b"".join(parts))
    return path


def deflated(path: Path) -> Path:
    path.write_bytes(A.build_zip(members(T), zipfile.ZIP_DEFLATED))
    return path


# class -> the files of that class (builders take (path) or (path, marker))
CLASSES: dict[str, list[tuple[str, Callable]]] = {
    "1 folder": [("folders", folders)],
    "2 case": [("DATA.PKL", data_pkl_case), ("BYTEORDER", byteorder_case), ("Data/0", storage_case)],
    "3 directory": [("joined archives", joined)],
    "4 hidden payload": [("DATA.PKL payload", payload_case), ("prepended payload", payload_prepended)],
    "5 parameter state": [("zip", parameter_state), ("legacy", lambda p: parameter_state(p, legacy=True))],
    "6 metadata": [("zip", neg_metadata), ("legacy", lambda p: neg_metadata(p, legacy=True))],
    "7 strings": [("SHORT_BINSTRING key", utf8_key)],
}

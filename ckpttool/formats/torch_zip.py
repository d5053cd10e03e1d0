"""torch zip checkpoints (``torch.save`` default; ``.pt``, ``.pth``, ``.pth.tar``, ``.bin``, ``.ckpt``),
read without torch.

Layout: ``<prefix>/data.pkl`` (the object, storages as persistent ids ``('storage', type, key,
location, numel)``), ``<prefix>/data/<key>`` (raw bytes of each storage), ``<prefix>/byteorder``.
``data.pkl`` is read up to ``MAX_PICKLE_BYTES`` (a deflate bomb stops there), scanned, then
unpickled by our restricted unpickler. Each storage's claimed size is checked against its member
before any tensor is described; members stored uncompressed (torch's own writer) are memory-mapped,
others are inflated on demand up to their checked size.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
from pathlib import Path

import numpy as np

from ckpttool.errors import CheckpointFormatError
from ckpttool.formats import FIX, release_pages
from ckpttool.formats._pickles import load_one, open_with, scan_one
from ckpttool.formats.limits import MAX_PICKLE_BYTES, MAX_TENSORS, CheckpointLimitError
from ckpttool.formats.torch_tensors import PickledFile, StorageRef, TensorCounter
from ckpttool.formats.unpickler import storage_dtype

# signature, version, flags, method, time, date, crc, compressed size, size, name and extra lengths
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_ZIP64 = 0xFFFFFFFF


def open_torch_zip(path: Path) -> PickledFile:
    """Scan and unpickle a torch zip file's ``data.pkl`` into a ``PickledFile``.

    Raises:
        UnsafeCheckpointError: the pickle imports globals outside the allow-list, or builds
            something refused (nothing executed).
        CheckpointFormatError: not a torch zip, truncated, lying about sizes, or beyond a limit.
    """
    return open_with(path, _open)


def _open(path: Path, f: io.BufferedReader) -> PickledFile:
    size = os.fstat(f.fileno()).st_size
    zf = zipfile.ZipFile(f)
    infos = zf.infolist()
    if len(infos) > MAX_TENSORS + 64:
        raise CheckpointLimitError(f"it has {len(infos)} zip members, more than {MAX_TENSORS + 64}")
    if len(zf.NameToInfo) != len(infos):  # readers disagree on which copy of a name is meant
        raise CheckpointFormatError(f"it holds two zip members of the same name; {FIX}")
    pkls = [i for i in infos if i.filename == "data.pkl" or i.filename.endswith("/data.pkl")]
    if not pkls:
        raise CheckpointFormatError(f"it is a zip file but not a torch checkpoint (no data.pkl); {FIX}")
    prefix = pkls[0].filename[: -len("data.pkl")]
    if f"{prefix}version" not in zf.NameToInfo and f"{prefix}.data/version" not in zf.NameToInfo:
        raise CheckpointFormatError(f"it is a zip file but not a torch checkpoint (no version record); {FIX}")
    data = _read_capped(zf, pkls[0], MAX_PICKLE_BYTES)
    scan_one(path, data)
    # Other pickles are never unpickled by torch, but a file carrying a hidden payload is refused
    # rather than passed on as safe to a tool that would load it.
    for info in infos:
        if info.filename.endswith(".pkl") and info is not pkls[0]:
            try:
                scan_one(path, _read_capped(zf, info, MAX_PICKLE_BYTES))
            except ValueError as e:  # not a pickle at all: nothing that could run
                if isinstance(e, CheckpointFormatError):
                    raise
    members = {i.filename: i for i in infos if i.filename.startswith(f"{prefix}data/")}
    order = zf.NameToInfo.get(f"{prefix}byteorder")
    byteorder = ">" if order is not None and _read_capped(zf, order, 16).strip() == b"big" else "<"
    storages: dict[str, StorageRef] = {}

    def storage(pid: tuple) -> StorageRef:
        if len(pid) != 5:
            raise CheckpointFormatError("a storage reference has the wrong form for a zip checkpoint")
        _, storage_type, key, _location, numel = pid
        dtype = storage_dtype(storage_type)
        if not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise CheckpointFormatError("a storage reference is malformed")
        info = members.get(f"{prefix}data/{key}")
        if info is None:
            raise CheckpointFormatError(f"storage {key[:40]!r} has no data/{key[:40]} member; {FIX}")
        ref = StorageRef(key, dtype, numel)
        if info.file_size != ref.nbytes:
            raise CheckpointFormatError(
                f"storage {key[:40]!r} claims {numel} {dtype.name} elements ({ref.nbytes} bytes) but its member "
                f"holds {info.file_size} bytes; {FIX}"
            )
        known = storages.setdefault(key, ref)
        if known.nbytes != ref.nbytes:
            raise CheckpointFormatError(f"storage {key[:40]!r} is referenced with two sizes")
        return ref if known.dtype == ref.dtype else known

    obj = load_one(data, storage, TensorCounter())
    mapped = np.memmap(f, dtype=np.uint8, mode="r") if size else np.empty(0, np.uint8)

    def buffer(ref: StorageRef) -> np.ndarray:
        info = members[f"{prefix}data/{ref.key}"]
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size == info.file_size:
            start = _data_offset(f, info)
            if start + ref.nbytes > size:
                raise CheckpointFormatError(
                    f"{path}: storage {ref.key[:40]!r} reaches past the end of the file; {FIX}"
                )
            return mapped[start : start + ref.nbytes]
        raw = _read_capped(zf, info, ref.nbytes)
        if len(raw) != ref.nbytes:
            raise CheckpointFormatError(f"{path}: storage {ref.key[:40]!r} is truncated; {FIX}")
        return np.frombuffer(raw, dtype=np.uint8)

    def release(ref: StorageRef) -> None:
        info = members[f"{prefix}data/{ref.key}"]
        if info.compress_type == zipfile.ZIP_STORED:
            start = _data_offset(f, info)
            release_pages(mapped, start, start + ref.nbytes)

    def close() -> None:
        zf.close()
        f.close()

    return PickledFile(obj, byteorder, buffer, close, release)


def _read_capped(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> bytes:
    """A member's bytes, refusing (not inflating) past ``cap``: a deflate bomb stops here."""
    with zf.open(info) as member:
        data = member.read(cap + 1)
    if len(data) > cap:
        raise CheckpointLimitError(
            f"its member {info.filename[:60]!r} inflates to more than {cap} bytes (ckpttool's limit, see SECURITY.md)"
        )
    return data


def _data_offset(f: io.BufferedReader, info: zipfile.ZipInfo) -> int:
    header = os.pread(f.fileno(), _LOCAL_HEADER.size, info.header_offset)
    if len(header) != _LOCAL_HEADER.size:
        raise CheckpointFormatError(f"the zip entry of {info.filename[:60]!r} is truncated; {FIX}")
    signature, _, flags, method, _, _, _, csize, usize, name_len, extra_len = _LOCAL_HEADER.unpack(header)
    # The local header must agree with the central directory (torch's reader checks it too).
    allowed_c = (info.compress_size, _ZIP64, 0) if flags & 0x08 else (info.compress_size, _ZIP64)
    allowed_u = (info.file_size, _ZIP64, 0) if flags & 0x08 else (info.file_size, _ZIP64)
    sizes_ok = csize in allowed_c and usize in allowed_u
    if signature != b"PK\x03\x04" or method != info.compress_type or not sizes_ok:
        raise CheckpointFormatError(f"the zip entry of {info.filename[:60]!r} is corrupt; {FIX}")
    return info.header_offset + _LOCAL_HEADER.size + name_len + extra_len

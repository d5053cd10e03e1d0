"""torch zip checkpoints (``torch.save`` default; ``.pt``, ``.pth``, ``.pth.tar``, ``.bin``, ``.ckpt``),
read without torch.

Layout: ``<folder>/data.pkl`` (the object, storages as persistent ids ``('storage', type, key,
location, numel)``), ``<folder>/data/<key>`` (raw bytes of each storage), ``<folder>/byteorder``.
The members are found as torch finds them (``_Archive``); where another zip reader could find
others, the file is refused.
``data.pkl`` is read up to ``MAX_PICKLE_BYTES`` (a deflate bomb stops there), scanned, then
unpickled by our restricted unpickler. Each storage's claimed size is checked against its member
before any tensor is described; storages must be stored uncompressed (torch's own writer does, and
``torch.load(mmap=True)`` reads them in place) and are memory-mapped.
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
    archive = _Archive(f, zf, size)
    pkl = archive.record("data.pkl")
    # Every member that holds a pickle is scanned, first: torch unpickles only data.pkl (and with
    # weights_only, safely), but a file carrying a payload another loader would run is refused, and
    # named as such, rather than passed on as safe.
    for info in infos:
        if info is not pkl and archive.may_hold_pickle(zf, info):
            try:
                scan_one(path, _read_capped(zf, info, MAX_PICKLE_BYTES))
            except ValueError as e:  # not a pickle at all: nothing that could run
                if isinstance(e, CheckpointFormatError):
                    raise
    data = _read_capped(zf, pkl, MAX_PICKLE_BYTES) if pkl is not None else b""
    if pkl is not None:
        scan_one(path, data)
    if archive.ambiguous:
        raise CheckpointFormatError(archive.ambiguous)
    if pkl is None:
        raise CheckpointFormatError(f"it is a zip file but not a torch checkpoint (no data.pkl); {FIX}")
    if archive.record("version") is None and archive.record(".data/version") is None:
        raise CheckpointFormatError(f"it is a zip file but not a torch checkpoint (no version record); {FIX}")
    order = archive.record("byteorder")
    byteorder = "<"
    if order is not None:
        mark = _read_capped(zf, order, 16)
        if mark not in (b"little", b"big"):  # torch refuses these too
            raise CheckpointFormatError(f"its byteorder record says {mark[:16]!r}, not little or big; {FIX}")
        byteorder = ">" if mark == b"big" else "<"
    storages: dict[str, StorageRef] = {}
    members: dict[str, zipfile.ZipInfo] = {}  # storage key -> its member

    def storage(pid: tuple) -> StorageRef:
        if len(pid) != 5:
            raise CheckpointFormatError("a storage reference has the wrong form for a zip checkpoint")
        _, storage_type, key, _location, numel = pid
        dtype = storage_dtype(storage_type)
        if not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise CheckpointFormatError("a storage reference is malformed")
        info = archive.record(f"data/{key}")
        if info is None:
            raise CheckpointFormatError(f"storage {key[:40]!r} has no data/{key[:40]} member; {FIX}")
        ref = StorageRef(key, dtype, numel)
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            # torch's mmap=True reads a member's bytes in place: a compressed storage would be read raw
            raise CheckpointFormatError(
                f"storage {key[:40]!r} is compressed; torch.save stores storages uncompressed and "
                "torch.load(mmap=True) would read its compressed bytes as values; re-save it with torch.save"
            )
        members[key] = info
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
        start = _data_offset(f, members[ref.key])  # as torch's get_record_offset: from the local header
        if start + ref.nbytes > size:
            raise CheckpointFormatError(f"{path}: storage {ref.key[:40]!r} reaches past the end of the file; {FIX}")
        return mapped[start : start + ref.nbytes]

    def release(ref: StorageRef) -> None:
        start = _data_offset(f, members[ref.key])
        release_pages(mapped, start, start + ref.nbytes)

    def close() -> None:
        zf.close()
        f.close()

    return PickledFile(obj, byteorder, buffer, close, release, base=mapped if size else None)


class _Archive:
    """The members of a torch zip as torch's reader (PyTorchStreamReader on miniz) finds them.

    torch reads the central directory at the absolute offset the end record names, takes the folder
    of the *first* central-directory entry as the archive's folder, and looks records up in it by
    name ignoring ASCII case. Python's ``zipfile`` differs on each point (it shifts offsets for
    prepended data, and matches names exactly), so every file on which the two could disagree is
    refused here: the directory is not where the end record says, anything follows the end record,
    a name is cut short by a NUL, or two names are equal ignoring case.
    """

    def __init__(self, f: io.BufferedReader, zf: zipfile.ZipFile, size: int):
        end = zipfile._EndRecData(f)  # the end record Python's zipfile used (same search as miniz's)
        if end is None:
            raise CheckpointFormatError(f"its zip end record is missing; {FIX}")
        infos = zf.infolist()
        if zf.start_dir != end[zipfile._ECD_OFFSET]:
            raise CheckpointFormatError(
                "its zip central directory is not at the offset its end record names (data prepended, or two "
                f"archives joined): torch and other zip readers would read different members; {FIX}"
            )
        if end[zipfile._ECD_ENTRIES_TOTAL] != len(infos) or end[zipfile._ECD_ENTRIES_THIS_DISK] != len(infos):
            raise CheckpointFormatError(
                f"its zip end record counts {end[zipfile._ECD_ENTRIES_TOTAL]} members but its directory holds "
                f"{len(infos)}; {FIX}"
            )
        if end[zipfile._ECD_LOCATION] + zipfile.sizeEndCentDir + len(end[zipfile._ECD_COMMENT]) != size or end[
            zipfile._ECD_COMMENT
        ]:
            raise CheckpointFormatError(f"it has a zip comment or data after its zip end record; {FIX}")
        self._by_key: dict[bytes, zipfile.ZipInfo] = {}
        self.ambiguous: str | None = None  # refused once every pickle has been scanned
        for info in infos:
            if info.orig_filename != info.filename:
                raise CheckpointFormatError(
                    f"its zip member {info.orig_filename[:60]!r} has a NUL in its name; {FIX}"
                )
            key = _raw_name(info).lower()  # ASCII-only, as miniz compares names
            if key in self._by_key and self.ambiguous is None:
                self.ambiguous = (
                    f"it holds two zip members named {info.filename[:60]!r} (ignoring case): torch reads "
                    f"one of them, other readers the other; {FIX}"
                )
            self._by_key.setdefault(key, info)
        first = _raw_name(infos[0]) if infos else b""
        if b"/" not in first:
            raise CheckpointFormatError(f"its first zip member {first[:60]!r} is not in a folder; {FIX}")
        self.folder = first[: first.index(b"/") + 1]

    def record(self, name: str) -> zipfile.ZipInfo | None:
        """The member torch reads for record ``name`` (``data.pkl``, ``data/0``...), or None."""
        return self._by_key.get((self.folder + name.encode("utf-8", "surrogatepass")).lower())

    def may_hold_pickle(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
        """A ``.pkl`` member in any folder and any case, or a member outside the storages' folder that
        starts like a pickle (``torch.load(pickle_file=...)`` or another tool could read it as one)."""
        key = _raw_name(info).lower()
        if key.endswith(b".pkl"):
            return True
        if key.startswith(self.folder.lower() + b"data/") or info.file_size == 0:
            return False
        with zf.open(info) as member:
            return member.read(1) == b"\x80"  # PROTO: every pickle of protocol 2 and later


def _raw_name(info: zipfile.ZipInfo) -> bytes:
    """A member's name as stored (torch compares bytes; Python decoded them as UTF-8 or cp437)."""
    return info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437", "surrogateescape")


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

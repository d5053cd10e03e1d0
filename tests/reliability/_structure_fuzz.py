"""A structure-aware differential fuzzer: real small torch zip, legacy and safetensors files, mutated at
the level of their structure, each judged by ckpttool's reader and by the format's own loader.

Mutations (one to three per file, named in the outcome):
- zip: member order, names and case, folders (a second folder, ``./``, nested), duplicate members
  (same name or another case, other content), dropped members, extra fields (local, central, both,
  disagreeing), compression, prepended and appended data (junk or a whole other archive), the end
  record's directory offset, size and counts, a local name that differs from the central one, a
  comment, a NUL in a name, byteorder records, storages cut or grown;
- pickle (``data.pkl`` and the legacy object pickle): strings re-encoded (SHORT_BINSTRING as UTF-8
  or latin1, non-ASCII keys), memo (BINPUT widened, BINGET redirected, puts dropped), allowed globals
  swapped (storage classes, the rebuild functions, ``_rebuild_parameter_with_state``), integers of
  REDUCE arguments (offsets, sizes, strides, element counts), booleans, tensor metadata and state
  inserted, opcodes spliced in, deleted or duplicated;
- legacy: sys_info, the storage key list, element-count headers, trailing data;
- safetensors: header offsets, dtypes, shapes, order, duplicate names, metadata, padding, length.

Oracle (``check``): for a torch file, ``torch.load(weights_only=True)`` with and without
``mmap=True`` (``_parity``); for a safetensors file, ``safetensors.torch.load_file``. Whenever
ckpttool accepts a file, each oracle must refuse it or return the same name -> (dtype, shape, bytes)
mapping. ckpttool raising anything but its own typed error is a failure too.
"""

from __future__ import annotations

import io
import json
import pickletools
import random
import struct
import warnings
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from _attacks import legacy_parts
from _parity import ours, tensor_entry, theirs

from ckpttool.errors import CkptError

_U16, _U32 = struct.Struct("<H"), struct.Struct("<I")


@dataclass
class Member:
    name: str
    data: bytes
    deflate: bool = False
    extra: bytes = b""  # central and local, unless local_extra is set
    local_extra: bytes | None = None
    local_name: str | None = None  # differs from the central name when set


def write_zip(members: list[Member], comment: bytes = b"") -> bytes:
    """A zip written field by field (so that any field can disagree with the others)."""
    out, central = bytearray(), bytearray()
    for m in members:
        body = m.data
        if m.deflate:
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            body = c.compress(m.data) + c.flush()
        name = m.name.encode("utf-8", "surrogatepass")
        local_name = (m.local_name or m.name).encode("utf-8", "surrogatepass")
        local_extra = m.extra if m.local_extra is None else m.local_extra
        flags = 0x800 if any(b > 127 for b in name) else 0
        crc, method = zlib.crc32(m.data), 8 if m.deflate else 0
        offset = len(out)
        out += b"PK\x03\x04" + struct.pack("<HHHHHIIIHH", 20, flags, method, 0, 0x21, crc, len(body), len(m.data),
                                          len(local_name), len(local_extra)) + local_name + local_extra + body
        central += b"PK\x01\x02" + struct.pack("<HHHHHHIIIHHHHHII", 20, 20, flags, method, 0, 0x21, crc, len(body),
                                               len(m.data), len(name), len(m.extra), 0, 0, 0, 0, offset)
        central += name + m.extra
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, len(members), len(members), len(central), len(out),
                                      len(comment)) + comment
    return bytes(out + central + end)


def _members_of(data: bytes) -> list[Member]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [Member(i.filename, z.read(i), extra=i.extra) for i in z.infolist()]


def _seed_objects() -> list[object]:
    gen = torch.Generator().manual_seed(19)
    big = torch.randn(6, 5, generator=gen)
    p = torch.nn.Parameter(torch.randn(3, generator=gen))
    frozen = torch.nn.Parameter(torch.randn(2, 2, generator=gen), requires_grad=False)
    with_state = torch.nn.Parameter(torch.randn(3, generator=gen))
    with_state.__dict__["data"] = torch.randn(3, generator=gen)
    shared = torch.randn(8, generator=gen)
    return [
        {"w": torch.randn(4, 3, generator=gen), "b": torch.zeros(4)},
        {"state_dict": {"rows": big[1:3], "cols": big[:, 2], "t": big.t(), "h": big.bfloat16(),
                        "i": torch.arange(5), "m": torch.tensor([True, False, True])}, "epoch": 2},
        {"p": p, "frozen": frozen, "half": torch.randn(3, generator=gen).half()},
        {"n": torch._neg_view(torch.randn(3, generator=gen)), "s": with_state},  # refused until mutated
        {"x": shared, "y": shared[2:6], "z": shared.view(2, 4), "e": torch.zeros(0, 2)},
    ]


def _flat_tensors(obj: object) -> dict[str, torch.Tensor]:
    from _parity import flatten

    return {k.strip("/").replace("'", "") or "t": v.detach().resolve_neg().contiguous().clone()
            for k, v in flatten(obj, torch.is_tensor).items()}


# Allowed globals a mutation may swap in (as torch.save writes them, protocol 2).
_GLOBALS = [b"torch\nFloatStorage\n", b"torch\nHalfStorage\n", b"torch\nLongStorage\n", b"torch\nBFloat16Storage\n",
            b"torch\nBoolStorage\n", b"torch\nUntypedStorage\n", b"torch._utils\n_rebuild_tensor_v2\n",
            b"torch._utils\n_rebuild_tensor\n", b"torch._utils\n_rebuild_tensor_v3\n",
            b"torch._utils\n_rebuild_parameter\n", b"torch._utils\n_rebuild_parameter_with_state\n",
            b"collections\nOrderedDict\n", b"torch._tensor\n_rebuild_from_type_v2\n", b"torch\nfloat16\n"]
# Fragments that keep a pickle plausible: containers, metadata, state, strings in other encodings.
_FRAGMENTS = [b"}", b"]", b")", b"(", b"N", b"\x88", b"\x89", b"t", b"s", b"u", b"a", b"e", b"R", b"b", b"\x85",
              b"\x86", b"\x87", b"0", b"K\x00", b"K\x01", b"K\x04", b"J\xff\xff\xff\x7f", b"\x8a\x01\xff",
              b"}X\x03\x00\x00\x00neg\x88s", b"}X\x04\x00\x00\x00data", b"X\x01\x00\x00\x001", b"U\x010",
              b"U\x030\xc3\xa9", b"U\x02\xc3\xa9", b"X\x07\x00\x00\x00storage", b"X\x03\x00\x00\x00cpu",
              b"X\x04\x00\x00\x00cuda", b"q\x00", b"h\x00", b"h\x01", b"r\x00\x01\x00\x00", b"cos\nsystem\n"]


class StructureFuzzer:
    """Deterministic for a seed: ``next()`` gives ``(format, mutations, bytes)``."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        objects = _seed_objects()
        self.zips, self.legacy, self.safetensors = [], [], []
        for obj in objects:
            buf = io.BytesIO()
            torch.save(obj, buf)
            members = _members_of(buf.getvalue())
            for m in members:  # a random id per save: fixed, so that a seed gives the same files anywhere
                if m.name.endswith("serialization_id"):
                    m.data = b"0" * len(m.data)
            self.zips.append(members)
            buf = io.BytesIO()
            torch.save(obj, buf, _use_new_zipfile_serialization=False)
            self.legacy.append(_fixed_keys(buf.getvalue()))
            from safetensors.torch import save

            self.safetensors.append(save(_flat_tensors(obj)))

    def next(self) -> tuple[str, list[str], bytes]:
        kind = self.rng.choices(["zip", "legacy", "safetensors"], weights=[6, 2, 2])[0]
        return (kind, *getattr(self, f"_{kind}")())

    # -- zip -------------------------------------------------------------------------------------

    def _zip(self) -> tuple[list[str], bytes]:
        r = self.rng
        members = [Member(m.name, m.data, extra=m.extra) for m in r.choice(self.zips)]
        done: list[str] = []
        prefix, suffix, comment, patch = b"", b"", b"", None
        for _ in range(r.choice([1, 1, 2, 3])):
            op = r.choice(["order", "first", "case", "folder", "duplicate", "second", "drop", "extra", "deflate",
                           "prepend", "append", "end", "local_name", "comment", "nul", "byteorder", "storage",
                           "pickle", "pickle", "pickle", "other_pickle"])
            done.append(op)
            i = r.randrange(len(members)) if members else 0
            if not members:
                break
            m = members[i]
            if op == "order":
                r.shuffle(members)
            elif op == "first":
                members.insert(0, members.pop(i))
            elif op == "case":
                j = r.randrange(len(m.name))
                m.name = m.name[:j] + m.name[j:].swapcase() if r.random() < 0.3 else (
                    m.name[:j] + m.name[j].swapcase() + m.name[j + 1:])
            elif op == "folder":
                new = r.choice(["other/", "archive/x/", "./archive/", "ARCHIVE/", "", "archive//", "a/"])
                for k in r.sample(range(len(members)), r.randint(1, len(members))):
                    members[k].name = new + members[k].name.split("/", 1)[-1]
            elif op == "duplicate":
                other = r.choice(self.zips)
                twin = next((o for o in other if o.name.split("/", 1)[-1] == m.name.split("/", 1)[-1]), r.choice(other))
                name = m.name if r.random() < 0.4 else (m.name.upper() if r.random() < 0.5 else m.name.swapcase())
                members.insert(r.randrange(len(members) + 1), Member(name, twin.data))
            elif op == "second":
                folder = r.choice(["b/", "archive/x/", "archive2/", "Archive/"])
                extra = [Member(folder + o.name.split("/", 1)[-1], o.data) for o in r.choice(self.zips)]
                members = extra + members if r.random() < 0.5 else members + extra
            elif op == "drop":
                del members[i]
            elif op == "extra":
                junk = r.choice([b"", b"\x01\x00\x10\x00" + bytes(16), b"FB\x04\x00abcd", bytes(r.randrange(1, 9)),
                                 b"\x01\x00\x08\x00" + struct.pack("<Q", 1 << 40)])
                where = r.choice(["both", "local", "central"])
                if where == "both":
                    m.extra = junk
                elif where == "local":
                    m.local_extra = junk
                else:
                    m.extra, m.local_extra = junk, m.extra
            elif op == "deflate":
                m.deflate = True
            elif op == "prepend":
                prefix = r.choice([b"junk" * r.randrange(1, 9), write_zip(r.choice(self.zips))])
            elif op == "append":
                suffix = r.choice([b"\0" * r.randrange(1, 64), write_zip(r.choice(self.zips)), b"PK\x05\x06" + bytes(18)])
            elif op == "end":
                patch = (r.choice([8, 10, 12, 16]), r.choice([-64, -1, 1, 22, 64, 1 << 20]))
            elif op == "local_name":
                m.local_name = r.choice([m.name.upper(), m.name + "x", "archive/data.pkl"])
            elif op == "comment":
                comment = r.choice([b"c", b"PK\x05\x06" + bytes(18), bytes(30)])
            elif op == "nul":
                m.name = m.name + "\0x"
            elif op == "byteorder":
                order = next((o for o in members if o.name.lower().endswith("byteorder")), None)
                value = r.choice([b"big", b"little\n", b"BIG", b"", b"middle"])
                if order is None or r.random() < 0.3:
                    members.insert(r.randrange(len(members) + 1), Member(f"archive/{r.choice(['byteorder', 'BYTEORDER'])}", value))
                else:
                    order.data = value
            elif op == "storage":
                stores = [o for o in members if "/data/" in o.name]
                if stores:
                    s = r.choice(stores)
                    s.data = r.choice([s.data[: r.randrange(len(s.data) + 1)], s.data + bytes(r.choice([1, 4, 8])),
                                       bytes(len(s.data))])
            elif op in ("pickle", "other_pickle"):
                pkl = next((o for o in members if o.name.endswith("data.pkl")), None)
                if pkl is not None:
                    pkl.data = (mutate_pickle(r, pkl.data) if op == "pickle" else
                                next(o.data for o in r.choice(self.zips) if o.name.endswith("data.pkl")))
        data = prefix + write_zip(members, comment) + suffix
        if patch is not None:  # a field of the (last) end record
            end = data.rfind(b"PK\x05\x06")
            if end >= 0:
                at, delta = end + patch[0], patch[1]
                width = 2 if patch[0] in (8, 10) else 4
                fmt = _U16 if width == 2 else _U32
                value = (fmt.unpack_from(data, at)[0] + delta) % (1 << (8 * width))
                data = data[:at] + fmt.pack(value) + data[at + width:]
        return done, data

    # -- legacy ----------------------------------------------------------------------------------

    def _legacy(self) -> tuple[list[str], bytes]:
        r = self.rng
        parts = legacy_parts(r.choice(self.legacy))
        done = []
        for _ in range(r.choice([1, 1, 2])):
            op = r.choice(["sys_info", "object", "object", "keys", "count", "trailing", "truncate", "version"])
            done.append(op)
            if op == "sys_info":
                parts[2] = r.choice([parts[2].replace(b"\x88", b"\x89"), b"\x80\x02}q\x00.", b"\x80\x02N."])
            elif op == "object":
                parts[3] = mutate_pickle(r, parts[3])
            elif op == "keys":
                keys = pickletools_strings(parts[4])
                r.shuffle(keys)
                if keys and r.random() < 0.5:
                    keys.append(r.choice(keys))
                parts[4] = b"\x80\x02]q\x00(" + b"".join(b"X" + _U32.pack(len(k)) + k for k in keys) + b"e."
            elif op == "count":
                rest = bytearray(parts[5])
                if len(rest) >= 8:
                    struct.pack_into("<q", rest, 0, struct.unpack_from("<q", rest, 0)[0] + r.choice([-1, 1, 1 << 40]))
                parts[5] = bytes(rest)
            elif op == "trailing":
                parts[5] += r.choice([b"\0" * 8, b"\x80\x02cos\nsystem\nq\x00."])
            elif op == "truncate":
                parts[5] = parts[5][: r.randrange(len(parts[5]) + 1)]
            else:
                parts[1] = r.choice([b"\x80\x02M\xea\x03.", b"\x80\x02M\xe8\x03."])
        return done, b"".join(parts)

    # -- safetensors -----------------------------------------------------------------------------

    def _safetensors(self) -> tuple[list[str], bytes]:
        r = self.rng
        blob = r.choice(self.safetensors)
        n = struct.unpack_from("<Q", blob)[0]
        header, body = json.loads(blob[8 : 8 + n]), blob[8 + n :]
        names = [k for k in header if k != "__metadata__"]
        op = r.choice(["offsets", "dtype", "shape", "order", "duplicate", "metadata", "padding", "length", "body"])
        name = r.choice(names)
        text = None
        if op == "offsets":
            a, b = header[name]["data_offsets"]
            header[name]["data_offsets"] = r.choice([[a + 1, b + 1], [a, b - 2], [0, b - a], [a - 2, b - 2]])
        elif op == "dtype":
            header[name]["dtype"] = r.choice(["F16", "I32", "BF16", "U8", "F64", "BOOL", "I64"])
        elif op == "shape":
            shape = header[name]["shape"]
            header[name]["shape"] = r.choice([shape[::-1], [*shape, 1], [max(sum(shape), 1)], [0]])
        elif op == "order":
            items = list(header.items())
            r.shuffle(items)
            header = dict(items)
        elif op == "duplicate":
            other = r.choice(names)
            text = json.dumps(header)[:-1] + f", {json.dumps(name)}: {json.dumps(header[other])}" + "}"
        elif op == "metadata":
            header["__metadata__"] = r.choice([{"a": "b"}, {"a": 1}, "x"])
        elif op == "padding":
            text = json.dumps(header) + " " * r.randrange(1, 9)
        raw = (text or json.dumps(header)).encode()
        length = len(raw) + (r.choice([-1, 1, 7]) if op == "length" else 0)
        if op == "body":
            body = body[: r.randrange(len(body) + 1)] if r.random() < 0.5 else body + bytes(8)
        return [op], struct.pack("<Q", max(length, 0)) + raw + body


_ITEMSIZE = {"Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Bool": 1, "Double": 8, "Int": 4, "Byte": 1}


def _fixed_keys(data: bytes) -> bytes:
    """A legacy file made independent of the process that saved it: torch names each storage by the
    ``id()`` of the storage and stores them in that order; here they are renamed 0, 1, ... in order of
    first use, and stored in that order."""
    parts = legacy_parts(data)
    keys = pickletools_strings(parts[4])
    kind, memo, itemsize, order = "", {}, {}, []
    for op, arg, _ in pickletools.genops(parts[3]):  # the storage class named before each key
        if op.name == "GLOBAL":
            kind = str(arg).rpartition(" ")[2].removesuffix("Storage")
        elif op.name == "BINPUT" and kind:
            memo[arg] = kind
        elif op.name == "BINGET" and arg in memo:
            kind = memo[arg]
        elif op.name == "BINUNICODE" and str(arg).encode() in keys and str(arg).encode() not in itemsize:
            itemsize[str(arg).encode()] = _ITEMSIZE[kind]
            order.append(str(arg).encode())
    blocks, pos, rest = {}, 0, parts[5]
    for key in keys:
        n = int.from_bytes(rest[pos : pos + 8], "little")
        blocks[key], pos = rest[pos : pos + 8 + n * itemsize[key]], pos + 8 + n * itemsize[key]
    new = {key: str(i).encode() for i, key in enumerate(order)}
    for key in order:
        parts[3] = parts[3].replace(b"X" + _U32.pack(len(key)) + key + b"q", b"X" + _U32.pack(len(new[key])) + new[key] + b"q")
    parts[4] = b"\x80\x02]q\x00(" + b"".join(b"X" + _U32.pack(len(new[k])) + new[k] for k in order) + b"e."
    parts[5] = b"".join(blocks[k] for k in order) + rest[pos:]
    return b"".join(parts)


def pickletools_strings(data: bytes) -> list[bytes]:
    try:
        return [str(arg).encode() for op, arg, _ in pickletools.genops(data) if op.name == "BINUNICODE"]
    except ValueError:
        return []



def _ops(data: bytes) -> list[tuple[str, object, bytes]]:
    positions = [(op.name, arg, pos) for op, arg, pos in pickletools.genops(data)]
    ends = [p for _, _, p in positions[1:]] + [len(data)]
    return [(name, arg, data[pos:end]) for (name, arg, pos), end in zip(positions, ends, strict=True)]


def mutate_pickle(r: random.Random, data: bytes) -> bytes:
    """One structure-level edit of a protocol-2 pickle, opcode by opcode."""
    try:
        ops = _ops(data)
    except ValueError:
        return data
    raw = [b for _, _, b in ops]
    kind = r.choice(["string", "string", "memo", "global", "int", "int", "bool", "insert", "delete", "dup"])
    picks = {
        "string": [i for i, (n, _, _) in enumerate(ops) if n == "BINUNICODE"],
        "memo": [i for i, (n, _, _) in enumerate(ops) if n in ("BINPUT", "BINGET")],
        "global": [i for i, (n, _, _) in enumerate(ops) if n == "GLOBAL"],
        "int": [i for i, (n, _, _) in enumerate(ops) if n in ("BININT1", "BININT", "BININT2", "LONG1")],
        "bool": [i for i, (n, _, _) in enumerate(ops) if n in ("NEWTRUE", "NEWFALSE")],
    }.get(kind) or list(range(len(ops) - 1))
    if not picks:
        return data
    i = r.choice(picks)
    name, arg = ops[i][0], ops[i][1]
    if kind == "string" and name == "BINUNICODE":
        text = str(arg) + r.choice(["", "é", "\u00c3\u00a9", "X"])
        enc = r.choice(["utf-8", "latin-1", "unicode"])
        try:
            b = text.encode("utf-8" if enc == "unicode" else enc)
        except UnicodeEncodeError:
            b = text.encode("utf-8")
        raw[i] = b"X" + _U32.pack(len(b)) + b if enc == "unicode" or len(b) > 255 else b"U" + bytes([len(b)]) + b
    elif kind == "memo" and name in ("BINPUT", "BINGET"):
        if name == "BINPUT":
            raw[i] = r.choice([b"r" + _U32.pack(int(arg)), b"", b"q" + bytes([r.randrange(256)])])
        else:
            raw[i] = b"h" + bytes([max(int(arg) + r.choice([-2, -1, 1, 2]), 0) % 256])
    elif kind == "global" and name == "GLOBAL":
        raw[i] = b"c" + r.choice(_GLOBALS)
    elif kind == "int":
        value = r.choice([0, 1, 2, 3, 4, 5, 7, 8, 255, 1 << 16, (1 << 31) - 1, -1])
        raw[i] = b"K" + bytes([value]) if 0 <= value < 256 else b"J" + struct.pack("<i", value)
    elif kind == "bool":
        raw[i] = b"\x89" if name == "NEWTRUE" else b"\x88"
    elif kind == "insert":
        raw.insert(i, r.choice(_FRAGMENTS + [b"c" + g for g in _GLOBALS]))
    elif kind == "delete":
        del raw[i]
    else:
        raw.insert(i, raw[i])
    return b"".join(raw)


# -- the oracle ------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Counts of one fuzzing run."""

    files: int = 0
    ours: Counter = field(default_factory=Counter)  # loaded / refused
    torch: Counter = field(default_factory=Counter)  # loaded / refused, per oracle
    same: int = 0  # ckpttool loaded and every oracle that loaded returned the same tensors
    differences: list[str] = field(default_factory=list)
    by_format: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        return {"files": self.files, "differences": len(self.differences), "same": self.same,
                "ours": dict(self.ours), "oracle": dict(self.torch), "by_format": dict(self.by_format),
                "first_differences": self.differences[:20]}


def _safetensors_ours(path: Path):
    from ckpttool.formats.safetensors import SafetensorsFile

    try:
        st = SafetensorsFile(path)
    except CkptError as e:
        return "refused", e
    try:
        return "loaded", {f"/{t.name!r}": (t.dtype.name, t.shape, st.copy(t.name).tobytes()) for t in st.tensors}
    finally:
        st.close()


def _safetensors_theirs(path: Path):
    from safetensors.torch import load_file

    try:
        loaded = load_file(path)
    except Exception as e:  # noqa: BLE001 - the oracle refusing
        return "refused", e
    return "loaded", {f"/{k!r}": tensor_entry(v) for k, v in loaded.items()}


def check(path: Path, kind: str, mutations: list[str], tally: Tally) -> None:
    """Judge one file with ckpttool and the oracles; record the outcome (a difference is recorded, not raised)."""
    tally.files += 1
    tally.by_format[kind] += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "safetensors":
            mine, got = _safetensors_ours(path)
            oracles = {"safetensors": _safetensors_theirs(path)}
        else:
            mine, got = ours(path)
            oracles = {"torch": theirs(path), "torch-mmap": theirs(path, mmap=True)}
    tally.ours[mine] += 1
    for name, (outcome, _) in oracles.items():
        tally.torch[f"{name} {outcome}"] += 1
    if mine != "loaded":
        return
    for name, (outcome, expected) in oracles.items():
        if outcome == "loaded" and expected != got:
            tally.differences.append(f"{path.name} ({kind}: {'+'.join(mutations)}): {name} returns other tensors")
            return
    tally.same += 1

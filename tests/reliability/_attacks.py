"""Hostile and malformed checkpoint files, and the harness that feeds them to the loaders.

Shared by the reliability tests (``tests/reliability/test_*.py``) and the soak
(``benchmarks/reliability_soak.py``). Everything here writes real files with the real libraries
(torch, safetensors, zipfile, pickle) or with hand-assembled pickle opcodes; nothing in ckpttool
is mocked.

Every payload would create a marker file if it ever ran: ``os.system('touch M')``,
``subprocess.Popen(['touch', M])``, ``eval``/``exec`` of code that opens M, or
``touch_marker(M)`` below (a function of this very module, importable by an unpickler). A test
proves "nothing executed" by checking that no marker exists afterwards.
"""

from __future__ import annotations

import io
import json
import os
import random
import runpy
import signal
import struct
import subprocess
import webbrowser
import zipfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# -- payloads ---------------------------------------------------------------------------------------


def touch_marker(path: str) -> None:
    """What the fuzzers' GLOBAL opcodes point at: running it leaves evidence."""
    Path(path).touch()


class Reduce:
    """An object that pickles as ``func(*args)``: what a malicious checkpoint carries."""

    def __init__(self, func: Callable, *args: object):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class _GetattrChain:
    """Pickles as ``getattr(__import__('os'), 'system')``: the callable of an outer Reduce."""

    def __call__(self, *args: object) -> None:  # pickle insists that a reduce function be callable
        raise AssertionError("never called")

    def __reduce__(self):
        return getattr, (Reduce(__import__, "os"), "system")


@dataclass(frozen=True)
class Payload:
    """One attack: the object to pickle and the globals the refusal must name."""

    name: str
    obj: object
    globals: tuple[str, ...]  # every one must appear in the error message


def payloads(marker: Path) -> dict[str, Payload]:
    """The known attack patterns, each of which would touch ``marker`` if executed.

    ``webbrowser.open`` runs ``$BROWSER``; callers set ``BROWSER='touch %s'`` so that it would
    touch the marker too (see :func:`hostile_env`).
    """
    m = str(marker)
    code = f"open({m!r}, 'w').close()"
    return {
        "os.system": Payload("os.system", Reduce(os.system, f"touch {m}"), ("posix.system",)),
        "builtins.eval": Payload("builtins.eval", Reduce(eval, code), ("builtins.eval",)),
        "builtins.exec": Payload("builtins.exec", Reduce(exec, code), ("builtins.exec",)),
        "getattr-chain": Payload(
            "getattr-chain", Reduce(_GetattrChain(), f"touch {m}"), ("builtins.__import__", "builtins.getattr")
        ),
        "runpy._run_code": Payload("runpy._run_code", Reduce(runpy._run_code, code, {}), ("runpy._run_code",)),
        "subprocess.Popen": Payload(
            "subprocess.Popen", Reduce(subprocess.Popen, ["touch", m]), ("subprocess.Popen",)
        ),
        "subprocess.check_output": Payload(
            "subprocess.check_output", Reduce(subprocess.check_output, ["touch", m]), ("subprocess.check_output",)
        ),
        "webbrowser.open": Payload("webbrowser.open", Reduce(webbrowser.open, m), ("webbrowser.open",)),
        "own-module": Payload("own-module", Reduce(touch_marker, m), (f"{__name__}.touch_marker",)),
    }


def hostile_env(env: dict | None = None) -> dict:
    """An environment in which ``webbrowser.open(M)`` would run ``touch M``."""
    return {**(env if env is not None else os.environ), "BROWSER": "touch %s"}


# -- hand-assembled pickles -----------------------------------------------------------------------


def _str_op(text: str, protocol: int) -> bytes:
    raw = text.encode("utf-8")
    if protocol == 0:
        return b"V" + text.encode("raw-unicode-escape") + b"\n"
    return b"X" + struct.pack("<I", len(raw)) + raw


def global_call_pickle(module: str, name: str, args: tuple[str, ...], protocol: int, *, wrap: bool = True) -> bytes:
    """``{'state_dict': {}, 'x': module.name(*args)}`` assembled opcode by opcode.

    Protocols 0 and 2 import with GLOBAL (``c module\\n name\\n``); 4 and 5 with STACK_GLOBAL
    after two string pushes, memoised, as Python's own pickler writes them. With ``wrap=False``
    the pickle is the bare call.
    """
    out = bytearray()
    if protocol >= 2:
        out += bytes([0x80, protocol])
    if wrap:
        out += b"}" if protocol else b"(d"  # EMPTY_DICT / MARK DICT
        out += _str_op("state_dict", protocol) + (b"}" if protocol else b"(d") + b"s"  # SETITEM
        out += _str_op("x", protocol)
    if protocol >= 4:
        out += _str_op(module, protocol) + b"\x94" + _str_op(name, protocol) + b"\x94" + b"\x93\x94"
    else:
        out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"
    out += b"("  # MARK
    for a in args:
        out += _str_op(a, protocol)
    out += b"tR"  # TUPLE REDUCE
    if wrap:
        out += b"s"
    out += b"."
    return bytes(out)


def protocol_payload(marker: Path, protocol: int) -> tuple[bytes, str]:
    """An ``os.system('touch M')`` pickle of the given protocol, and the name the refusal must give."""
    return global_call_pickle("os", "system", (f"touch {marker}",), protocol), "os.system"


# -- files -----------------------------------------------------------------------------------------


def benign_state_dict():
    import torch

    gen = torch.Generator().manual_seed(0)
    return {"fc.weight": torch.randn(8, 4, generator=gen), "fc.bias": torch.zeros(8)}


def write_torch(path: Path, obj: object, *, legacy: bool = False, protocol: int = 2) -> Path:
    import torch

    kwargs = {"_use_new_zipfile_serialization": False} if legacy else {}
    torch.save(obj, path, pickle_protocol=protocol, **kwargs)
    return path


def rewrite_zip(src: Path, dst: Path, *, replace: dict[str, bytes] | None = None,
                add: dict[str, bytes] | None = None) -> Path:
    """Copy a torch zip, replacing members by their short name (``data.pkl`` matches ``x/data.pkl``)."""
    replace, add = replace or {}, add or {}
    with zipfile.ZipFile(src) as zin:
        members = [(n, zin.read(n)) for n in zin.namelist()]
    root = members[0][0].split("/")[0]
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for name, data in members:
            short = name.split("/", 1)[-1]
            zout.writestr(name, replace.get(short, data))
        for short, data in add.items():
            zout.writestr(f"{root}/{short}", data)
    return dst


def torch_zip_with_data_pkl(path: Path, data_pkl: bytes, scratch: Path) -> Path:
    """A real torch zip whose data.pkl is replaced by ``data_pkl``."""
    src = write_torch(scratch / f".src-{path.name}", {"w": benign_state_dict()["fc.bias"]})
    rewrite_zip(src, path, replace={"data.pkl": data_pkl})
    src.unlink()
    return path


def torch_zip_with_extra_pkl(path: Path, extra: bytes, scratch: Path, name: str = "extra.pkl") -> Path:
    """A benign, loadable torch zip carrying one more pickle member that torch never reads."""
    src = write_torch(scratch / f".src-{path.name}", benign_state_dict())
    rewrite_zip(src, path, add={name: extra})
    src.unlink()
    return path


def raw_safetensors(path: Path, header: dict | list | str | bytes, data: bytes = b"", *, length: int | None = None) -> Path:
    """A safetensors file from a header (dict, or JSON text for duplicates) and a data section."""
    if not isinstance(header, (str, bytes)):
        header = json.dumps(header)
    blob = header.encode() if isinstance(header, str) else header
    n = len(blob) if length is None else length
    path.write_bytes(struct.pack("<Q", n) + blob + data)
    return path


def valid_safetensors_bytes(seed: int = 0) -> bytes:
    """A small valid safetensors file with several dtypes (numpy only, no torch)."""
    rng = np.random.default_rng(seed)
    tensors = {
        "blocks.0.attn.qkv.weight": ("F32", rng.standard_normal((12, 8)).astype("<f4")),
        "blocks.0.norm1.weight": ("F16", np.ones(8, dtype="<f2")),
        "blocks.0.mlp.fc1.weight": ("BF16", (rng.integers(0, 1 << 16, (8, 8))).astype("<u2")),
        "pos_embed": ("F8_E4M3", rng.integers(0, 256, (1, 5, 8)).astype("u1")),
        "head.bias": ("I64", np.arange(3, dtype="<i8")),
        "mask": ("BOOL", np.array([True, False, True])),
    }
    header: dict = {"__metadata__": {"format": "pt"}}
    data = bytearray()
    for name, (code, arr) in tensors.items():
        raw = arr.tobytes()
        header[name] = {"dtype": code, "shape": list(arr.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob + bytes(data)


# -- running loaders on hostile input ---------------------------------------------------------------


class Hang(Exception):
    """An input that did not finish within its time bound."""


@contextmanager
def time_bound(seconds: float):
    """Raise :class:`Hang` in the main thread after ``seconds`` (SIGALRM; POSIX only)."""

    def on_alarm(signum, frame):
        raise Hang(f"no result within {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def load_fully(path: Path) -> int:
    """Every path a reader takes: open, list, read every array, then the torch-tensor loader.

    Returns the number of tensors read. Raises whatever the library raises.
    """
    from ckpttool.loading import load_checkpoint
    from ckpttool.torch_state import load_state_dict

    n = 0
    with load_checkpoint(path) as ckpt:
        for _info, array in ckpt.iter_arrays():
            n += int(array.size >= 0)
    load_state_dict(path)
    return n


@dataclass(frozen=True)
class Outcome:
    kind: str  # "loaded" | "clean" (a CkptError) | "crash" (any other exception) | "hang"
    detail: str


def classify(path: Path, *, seconds: float = 10.0) -> Outcome:
    """Feed one file to :func:`load_fully` under a time bound and say how it ended."""
    from ckpttool.errors import CkptError

    try:
        with time_bound(seconds):
            n = load_fully(path)
    except Hang as e:
        return Outcome("hang", str(e))
    except CkptError as e:
        return Outcome("clean", f"{type(e).__name__}: {str(e)[:160]}")
    except Exception as e:  # noqa: BLE001 - what we count
        return Outcome("crash", f"{type(e).__name__}: {str(e)[:300]}")
    return Outcome("loaded", f"{n} tensors")


# -- mutators (used by hypothesis strategies in the tests and by the soak's plain-random loop) -------

# Opcodes a mutated pickle may be spliced from: structure, memo, persistent ids and hostile globals.
def opcode_alphabet(marker: Path) -> list[bytes]:
    m = str(marker)
    return [
        b"}", b"]", b")", b"(", b"N", b"\x88", b"\x89", b"t", b"l", b"d", b"s", b"u", b"a", b"e", b"R", b"b",
        b"0", b"1", b"2", b".", b"\x85", b"\x86", b"\x87", b"Q", b"P0\n", b"\x94", b"\x93", b"\x81", b"\x92",
        b"q\x00", b"q\x01", b"h\x00", b"h\x01", b"r\x00\x00\x00\x00", b"j\x00\x00\x00\x00", b"g0\n", b"p0\n",
        b"K\x07", b"M\xff\xff", b"J\xff\xff\xff\x7f", b"\x8a\x08" + b"\xff" * 7 + b"\x7f", b"I99999999999\n",
        b"X\x05\x00\x00\x00torch", b"X\x07\x00\x00\x00storage", b"X\x04\x00\x00\x00cpu", b"\x8c\x011",
        b"X\xff\xff\xff\x7f", b"\x8d" + struct.pack("<Q", 1 << 62), b"B\x00\x00\x00\x10", b"C\x04abcd",
        b"ctorch._utils\n_rebuild_tensor_v2\n", b"ctorch\nFloatStorage\n", b"ccollections\nOrderedDict\n",
        b"ctorch\nDoubleStorage\n", b"c_codecs\nencode\n", b"cbuiltins\nset\n",
        b"cos\nsystem\n", b"cbuiltins\neval\n", b"c_attacks\ntouch_marker\n",
        _str_op(f"touch {m}", 2), _str_op(m, 2), _str_op(f"open({m!r},'w')", 2),
        b"X\x02\x00\x00\x00os" + b"X\x06\x00\x00\x00system\x93",
    ]


def splice_pickle(seed_ops: list[bytes], inserts: list[tuple[int, bytes]], deletes: list[int]) -> bytes:
    """Rebuild a pickle from its opcodes with some removed and some inserted."""
    ops = [op for i, op in enumerate(seed_ops) if i not in set(deletes)]
    for pos, op in inserts:
        ops.insert(pos % (len(ops) + 1), op)
    return b"".join(ops)


def pickle_ops(data: bytes) -> list[bytes]:
    """Split a pickle into the raw bytes of each opcode (with its argument)."""
    import pickletools

    positions = [pos for _op, _arg, pos in pickletools.genops(data)]
    positions.append(len(data))
    return [data[a:b] for a, b in zip(positions, positions[1:], strict=False)]


def torch_zip_bytes(protocol: int = 2) -> bytes:
    buf = io.BytesIO()
    import torch

    torch.save(benign_state_dict(), buf, pickle_protocol=protocol)
    return buf.getvalue()


def legacy_bytes() -> bytes:
    buf = io.BytesIO()
    import torch

    torch.save(benign_state_dict(), buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def legacy_parts(data: bytes) -> list[bytes]:
    """A legacy torch stream cut into its five pickles (magic, protocol, sys info, object, keys) and the rest."""
    import pickletools

    f = io.BytesIO(data)
    parts = []
    for _ in range(5):
        start = f.tell()
        for _op in pickletools.genops(f):
            pass
        parts.append(data[start : f.tell()])
    parts.append(data[f.tell() :])
    return parts


def zip_members(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(n, z.read(n)) for n in z.namelist()]


def build_zip(members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in members:
            z.writestr(name, data)
    return buf.getvalue()


def flip_bytes(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for pos, value in edits:
        if out:
            out[pos % len(out)] = value & 0xFF
    return bytes(out)


@dataclass
class Mutator:
    """Plain-random mutation of the three formats (the soak's loop; the tests use hypothesis)."""

    marker: Path
    rng: random.Random

    def __post_init__(self):
        self.st = valid_safetensors_bytes()
        self.zip = torch_zip_bytes()
        self.zip4 = torch_zip_bytes(protocol=4)
        self.legacy = legacy_bytes()
        self.members = zip_members(self.zip)
        self.data_pkl_ops = pickle_ops(dict(self.members)[next(n for n, _ in self.members if n.endswith("data.pkl"))])
        self.alphabet = opcode_alphabet(self.marker)

    def _edits(self, n: int, size: int) -> list[tuple[int, int]]:
        return [(self.rng.randrange(max(size, 1)), self.rng.randrange(256)) for _ in range(n)]

    def safetensors(self) -> bytes:
        r = self.rng
        kind = r.randrange(5)
        if kind == 0:  # bytes anywhere
            return flip_bytes(self.st, self._edits(r.randint(1, 8), len(self.st)))
        if kind == 1:  # bytes in the header only
            n = struct.unpack("<Q", self.st[:8])[0]
            edits = [(8 + p % n, v) for p, v in self._edits(r.randint(1, 4), n)]
            return flip_bytes(self.st, edits)
        if kind == 2:  # length prefix lies
            n = struct.unpack("<Q", self.st[:8])[0]
            delta = r.choice([-9, -1, 1, 7, 1 << 20, 1 << 40, -n])
            return struct.pack("<Q", max(n + delta, 0)) + self.st[8:]
        if kind == 3:  # truncation
            return self.st[: r.randrange(len(self.st))]
        return self._header_mutation()

    def _header_mutation(self) -> bytes:
        r = self.rng
        n = struct.unpack("<Q", self.st[:8])[0]
        header = json.loads(self.st[8 : 8 + n])
        data = self.st[8 + n :]
        names = [k for k in header if k != "__metadata__"]
        name = r.choice(names)
        field = r.choice(["dtype", "shape", "data_offsets", "__metadata__", "dup", "entry"])
        weird = r.choice([-1, 0, 1, 1 << 40, 10**12, 2**64, 3.5, "F32", "", None, [], [1, 2, 3], {"a": 1},
                          [0, 1 << 62], [1 << 62, 0], [-4, 4], ["0", "4"], [True, 4], "\u0000"])
        if field == "dtype":
            header[name]["dtype"] = r.choice(["F4", "f32", "I128", "Q", weird])
        elif field == "shape":
            header[name]["shape"] = r.choice([[10**12], [1 << 31, 1 << 31], [-1], [0], [2**64], weird])
        elif field == "data_offsets":
            header[name]["data_offsets"] = r.choice([[0, 0], [0, len(data) + 4], [3, 7], weird])
        elif field == "__metadata__":
            header["__metadata__"] = r.choice([{"a": 1}, [], "x", {"a": None}, {"a": {"b": "c"}}, weird])
        elif field == "entry":
            header[name] = weird
        else:  # duplicate a name with other offsets: JSON text with the key twice
            text = json.dumps(header)
            extra = json.dumps({name: {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}})[1:-1]
            return struct.pack("<Q", len(text) + len(extra) + 1) + (text[:-1] + ", " + extra + "}").encode() + data
        blob = json.dumps(header).encode()
        return struct.pack("<Q", len(blob)) + blob + data

    def pickle_bytes(self) -> bytes:
        r = self.rng
        inserts = [(r.randrange(len(self.data_pkl_ops) + 1), r.choice(self.alphabet)) for _ in range(r.randint(0, 6))]
        deletes = [r.randrange(len(self.data_pkl_ops)) for _ in range(r.randint(0, 3))]
        return splice_pickle(self.data_pkl_ops, inserts, deletes)

    def torch_zip(self) -> bytes:
        r = self.rng
        kind = r.randrange(6)
        members = list(self.members)
        if kind == 0:  # pickle opcodes of data.pkl (the zip itself stays valid)
            members = [(n, self.pickle_bytes() if n.endswith("data.pkl") else d) for n, d in members]
            return build_zip(members)
        if kind == 1:  # raw bytes of the zip
            base = r.choice([self.zip, self.zip4])
            return flip_bytes(base, self._edits(r.randint(1, 8), len(base)))
        if kind == 2:  # drop / rename / duplicate members
            i = r.randrange(len(members))
            op = r.randrange(3)
            if op == 0:
                del members[i]
            elif op == 1:
                members[i] = (members[i][0] + "x", members[i][1])
            else:
                members.append((members[i][0], b"\x80\x02}."))
            return build_zip(members)
        if kind == 3:  # storages shorter / longer than claimed
            members = [(n, d[: r.randrange(len(d) + 1)] + bytes(r.randrange(3) * 8) if "/data/" in n else d)
                       for n, d in members]
            return build_zip(members)
        if kind == 4:  # deflate-compressed members (torch writes them stored)
            return build_zip(members, zipfile.ZIP_DEFLATED)
        return self.zip[: r.randrange(len(self.zip))]

    def legacy_file(self) -> bytes:
        r = self.rng
        kind = r.randrange(3)
        if kind == 0:
            return flip_bytes(self.legacy, self._edits(r.randint(1, 8), len(self.legacy)))
        if kind == 1:
            return self.legacy[: r.randrange(len(self.legacy))]
        # splice opcodes into the object pickle (the 4th); the others and the storages are kept
        parts = legacy_parts(self.legacy)
        ops = pickle_ops(parts[3])
        inserts = [(r.randrange(len(ops) + 1), r.choice(self.alphabet)) for _ in range(r.randint(1, 4))]
        deletes = [r.randrange(len(ops)) for _ in range(r.randint(0, 2))]
        parts[3] = splice_pickle(ops, inserts, deletes)
        return b"".join(parts)

    def next(self) -> tuple[str, bytes]:
        kind = self.rng.choice(["safetensors", "torch-zip", "torch-legacy"])
        return kind, {"safetensors": self.safetensors, "torch-zip": self.torch_zip,
                      "torch-legacy": self.legacy_file}[kind]()

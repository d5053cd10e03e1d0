"""List runs from their folders' records, optionally only those that started from a given init.

Example:
    >>> records = list_runs("runs", init="3fa2b1")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ckpttool.errors import InvalidArgumentError
from pruning_runner import records as rec

_HEX = re.compile(r"^[0-9a-fA-F]{4,64}$")


@dataclass(frozen=True)
class RunRecord:
    """One run as its records describe it."""

    path: str  # run folder
    init_path: str  # init file the run started from
    init_sha256: str  # its sha256 when the gate checked it
    verdict: str  # its verdict
    method: str
    dataset: str
    target: str
    states_done: int  # states with a summary entry
    states_total: int
    best_test_acc: float | None  # best test accuracy at best validation over the states
    status: str  # running | finished | interrupted | failed
    started: str | None

    def to_dict(self) -> dict:
        return asdict(self)


def printable(text: str) -> str:
    """``text`` with control and other non-printable characters escaped (``\\x1b``): safe on one terminal line."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


class RunRecordError(ValueError):
    """A run folder whose records cannot be read as a run (garbled or hostile JSON)."""


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise RunRecordError(f"{path.name} is not readable JSON ({type(e).__name__})") from e


def _field(d: dict, key: str, kinds: type | tuple[type, ...], where: str, default=None):
    """``d[key]`` when it has one of ``kinds`` (bools are not numbers); missing -> ``default``."""
    if key not in d:
        return default
    v = d[key]
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds):
        raise RunRecordError(f"{where} field {key!r} is a {type(v).__name__}")
    return v


def read_states(folder: Path) -> list[dict]:
    """summary.json's per-state entries, each checked (no summary yet: none).

    Raises:
        RunRecordError: summary.json is garbled or its entries are not state records.
    """
    path = folder / rec.SUMMARY
    if not path.exists():
        return []
    summary = _read_json(path)
    if not isinstance(summary, dict):
        raise RunRecordError(f"{rec.SUMMARY} is a {type(summary).__name__}, not an object")
    states = _field(summary, "states", list, rec.SUMMARY, default=[])
    out = []
    for s in states:
        if not isinstance(s, dict):
            raise RunRecordError(f"{rec.SUMMARY} holds a state entry that is a {type(s).__name__}")
        for key in ("state", "kept_heads", "total_heads", "kept_neurons", "total_neurons", "params"):
            _field(s, key, int, f"{rec.SUMMARY} state")
        for key in ("best_val_acc", "test_acc_at_best_val"):
            v = _field(s, key, (int, float), f"{rec.SUMMARY} state")
            if v is not None and not math.isfinite(v):
                raise RunRecordError(f"{rec.SUMMARY} state field {key!r} is not finite")
        out.append(s)
    return out


def read_run(folder: Path) -> RunRecord | None:
    """The record of one run folder; None when it holds no run.json (not a run folder).

    Raises:
        RunRecordError: run.json or summary.json exists but is not a run's record.
    """
    path = folder / rec.RUN
    if not path.exists():
        return None
    info = _read_json(path)
    if not isinstance(info, dict):
        raise RunRecordError(f"{rec.RUN} is a {type(info).__name__}, not an object")
    init = _field(info, "init", dict, rec.RUN)
    if init is None:
        raise RunRecordError(f"{rec.RUN} has no 'init' record")
    states = read_states(folder)
    accs = [s["test_acc_at_best_val"] for s in states if s.get("test_acc_at_best_val") is not None]
    return RunRecord(
        path=str(folder),
        init_path=_field(init, "path", str, "init", ""),
        init_sha256=_field(init, "sha256", str, "init", ""),
        verdict=_field(init, "verdict", str, "init", ""),
        method=_field(info, "method", str, rec.RUN, ""),
        dataset=_field(info, "dataset", str, rec.RUN, ""),
        target=_field(info, "target", str, rec.RUN, ""),
        states_done=len(states),
        states_total=_field(info, "states", int, rec.RUN, 0),
        best_test_acc=max(accs) if accs else None,
        status=_field(info, "status", str, rec.RUN, "unknown"),
        started=_field(info, "started", (str, type(None)), rec.RUN),
    )


def resolve_init_filter(init: str | None) -> str | None:
    """A file -> its sha256; a hex string -> itself (prefix match); None -> None."""
    if init is None:
        return None
    p = Path(init)
    if p.is_file():
        from ckpttool.hashing import file_sha256

        return file_sha256(p)
    if _HEX.match(init):
        return init.lower()
    raise InvalidArgumentError(f"--init {init!r} is neither an existing file nor a sha256 (prefix of >= 4 hex digits)")


@dataclass(frozen=True)
class RunScan:
    """What a scan of a runs folder found."""

    runs: tuple[RunRecord, ...]  # readable runs, oldest first
    unreadable: tuple[tuple[str, str], ...]  # (folder, why) of folders with a run.json that is not a run's


def scan_runs(root: str | Path = "runs", *, init: str | None = None) -> RunScan:
    """Runs under ``root`` (each sub-folder with a run.json), oldest first; filtered by init file or sha.

    A folder whose records are garbled is reported in ``unreadable`` and never hides the others.

    Raises:
        InvalidArgumentError: ``root`` is not a folder, or ``init`` is neither a file nor hex.
    """
    root = Path(root)
    if not root.is_dir():
        raise InvalidArgumentError(f"runs folder {root} does not exist; pass --root DIR")
    want = resolve_init_filter(init)
    out, bad = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            r = read_run(folder)
        except RunRecordError as e:
            bad.append((str(folder), str(e)))
            continue
        if r is None:
            continue
        if want is not None and not r.init_sha256.lower().startswith(want):
            continue
        out.append(r)
    return RunScan(tuple(sorted(out, key=lambda r: (r.started or "", r.path))), tuple(bad))


def list_runs(root: str | Path = "runs", *, init: str | None = None) -> list[RunRecord]:
    """The readable runs of :func:`scan_runs` (unreadable folders left out).

    Raises:
        InvalidArgumentError: ``root`` is not a folder, or ``init`` is neither a file nor hex.
    """
    return list(scan_runs(root, init=init).runs)

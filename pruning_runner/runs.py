"""List runs from their folders' records, optionally only those that started from a given init.

Example:
    >>> records = list_runs("runs", init="3fa2b1")  # doctest: +SKIP
"""

from __future__ import annotations

import json
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


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_run(folder: Path) -> RunRecord | None:
    """The record of one run folder, or None when it holds no readable run.json."""
    info = _read(folder / rec.RUN)
    if not isinstance(info, dict) or "init" not in info:
        return None
    summary = _read(folder / rec.SUMMARY) or {}
    states = summary.get("states") or []
    accs = [s.get("test_acc_at_best_val") for s in states if s.get("test_acc_at_best_val") is not None]
    init = info.get("init", {})
    return RunRecord(
        path=str(folder),
        init_path=init.get("path", ""),
        init_sha256=init.get("sha256", ""),
        verdict=init.get("verdict", ""),
        method=info.get("method", ""),
        dataset=info.get("dataset", ""),
        target=info.get("target", ""),
        states_done=len(states),
        states_total=int(info.get("states") or 0),
        best_test_acc=max(accs) if accs else None,
        status=info.get("status", "unknown"),
        started=info.get("started"),
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


def list_runs(root: str | Path = "runs", *, init: str | None = None) -> list[RunRecord]:
    """Runs under ``root`` (each sub-folder with a run.json), oldest first; filtered by init file or sha.

    Raises:
        InvalidArgumentError: ``root`` is not a folder, or ``init`` is neither a file nor hex.
    """
    root = Path(root)
    if not root.is_dir():
        raise InvalidArgumentError(f"runs folder {root} does not exist; pass --root DIR")
    want = resolve_init_filter(init)
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        r = read_run(folder)
        if r is None:
            continue
        if want is not None and not r.init_sha256.lower().startswith(want):
            continue
        out.append(r)
    return sorted(out, key=lambda r: (r.started or "", r.path))

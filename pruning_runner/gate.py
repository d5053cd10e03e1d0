"""The gate: a run starts only from an init whose verdict is acceptable.

- ``pretrained``: accepted.
- ``random``: refused unless ``allow_random`` (a random start on purpose).
- ``partial``: refused unless ``allow_partial`` (``allow_random`` alone is not enough).
- ``corrupt``: always refused.

Example:
    >>> decide_gate("random", allow_random=True, allow_partial=False) is None
    True
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ckpttool.errors import CheckpointFormatError, CheckpointNotFoundError, GateRefusedError


@dataclass(frozen=True)
class InitRecord:
    """What the run records about its init."""

    path: str  # as given, resolved to an absolute path
    sha256: str  # of the bytes the gate judged and the run loaded (read once)
    verdict: str  # pretrained | random | partial | inconclusive | corrupt
    reason: str  # the verdict's one sentence of evidence
    untouched_groups: tuple[str, ...]  # partial: the groups that look untouched
    metadata: dict  # the file's metadata (architecture, provenance)

    def to_dict(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "verdict": self.verdict, "reason": self.reason,
                "untouched_groups": list(self.untouched_groups)}


def decide_gate(verdict: str, *, allow_random: bool, allow_partial: bool) -> str | None:
    """Why ``verdict`` is refused (a phrase with the way out), or None when the run may start."""
    if verdict == "pretrained":
        return None
    if verdict == "random":
        return None if allow_random else "pass --allow-random to start from a random init on purpose"
    if verdict == "inconclusive":
        return None if allow_random else ("the verdict cannot tell whether this init is trained (too small or "
                                          "featureless); pass --allow-random to start from it anyway")
    if verdict == "partial":
        if allow_partial:
            return None
        return ("some groups look untouched; --allow-random does not accept a partial init, "
                "pass --allow-partial if this is intended, or regenerate the init")
    return "a corrupt init is always refused; regenerate it (ckpttool generate)"


@dataclass(frozen=True)
class CheckedInit:
    """An init read once: its record and the very tensors that were judged and hashed."""

    record: InitRecord
    state_dict: dict  # name -> torch.Tensor, for the model
    metadata: dict  # the file's metadata (architecture, provenance)


_CHUNK = 1 << 20


def _copy_hashing(src: Path, dst: Path) -> str:
    """Copy ``src`` to ``dst`` in one read of ``src``, returning the sha256 of exactly the bytes copied."""
    if not src.exists():
        raise CheckpointNotFoundError(f"checkpoint {src} does not exist; check the path")
    if src.is_dir():
        raise CheckpointFormatError(f"{src} is a folder, not a checkpoint file; pass one of the checkpoint files inside it")
    digest = hashlib.sha256()
    fd = os.open(src, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # opening a FIFO must not wait for a writer
    with os.fdopen(fd, "rb") as fin:
        if not stat.S_ISREG(os.fstat(fin.fileno()).st_mode):  # a FIFO or device would never end
            raise CheckpointFormatError(f"{src} is not a regular file; pass a checkpoint file")
        with open(dst, "wb") as fout:
            while chunk := fin.read(_CHUNK):
                digest.update(chunk)
                fout.write(chunk)
    return digest.hexdigest()


def _refuse_sharded(src: Path) -> None:
    """The gate copies ONE file and judges the copy; a sharded model (an index and its shards) is not
    supported here: refuse it by name rather than judge an index copied without its shards."""
    from ckpttool.errors import InvalidArgumentError
    from ckpttool.sharded import is_shard_index

    if src.is_dir() or is_shard_index(src):
        raise InvalidArgumentError(
            f"--init takes one checkpoint file, and {src} is a {'folder' if src.is_dir() else 'sharded model index'}; "
            "the runner's inits are single files (`ckpttool generate` writes one)")


def read_checked_init(path: str | Path, *, allow_random: bool = False, allow_partial: bool = False) -> CheckedInit:
    """Read ``path`` ONCE, then judge, hash and load those same bytes; refuse them unless the verdict is acceptable.

    The file is copied, hashed on the way, into a private temporary folder; the verdict, the recorded
    sha256 and the tensors the model is built from all come from that copy. A file replaced on disk
    meanwhile (a concurrent ``generate --force``, a ``restore``) can therefore never be trained from
    without having been verified: the run uses and records what was judged.

    Raises:
        GateRefusedError: (exit 1) verdict not accepted; ``.evidence`` holds the verdict's dict.
        CheckpointNotFoundError, CheckpointFormatError, UnsafeCheckpointError: unreadable init (exit 2).
        InvalidArgumentError: a folder or a sharded model's index (the gate reads single files).
    """
    from ckpttool.digest import weights_digest
    from ckpttool.torch_state import load_state_dict
    from ckpttool.verify import verify_file

    src = Path(path)
    _refuse_sharded(src)
    with tempfile.TemporaryDirectory(prefix="ckpttool-init-") as tmp:
        copy = Path(tmp) / src.name  # the same name: formats are told apart by their suffix too
        sha = _copy_hashing(src, copy)
        report = verify_file(copy, expect="any")
        v = report.verdict
        record = InitRecord(
            path=str(src.resolve()),
            sha256=sha,
            verdict=v.verdict,
            reason=v.reason,
            untouched_groups=tuple(v.untouched_groups),
            metadata=dict(getattr(report, "metadata", {}) or {}),
        )
        why = decide_gate(v.verdict, allow_random=allow_random, allow_partial=allow_partial)
        if why is not None:
            untouched = f" (untouched: {', '.join(v.untouched_groups)})" if v.untouched_groups else ""
            raise GateRefusedError(
                f"refused init {path}: verdict {v.verdict}{untouched} - {v.reason.rstrip('.')}; {why}",
                evidence=v.to_dict(),
            )
        state_dict = load_state_dict(copy)
        if weights_digest(state_dict) != report.weights_digests[0]:  # the tensors loaded are those judged
            raise CheckpointFormatError(
                f"{path}: the tensors loaded for the run differ from those verified (weights digest); "
                "this is a ckpttool bug, report it with the file"
            )
    return CheckedInit(record=record, state_dict=state_dict, metadata=dict(record.metadata))


def check_init(path: str | Path, *, allow_random: bool = False, allow_partial: bool = False) -> InitRecord:
    """Verify ``path`` and refuse it unless its verdict is acceptable (see :func:`read_checked_init`).

    Raises:
        GateRefusedError: (exit 1) verdict not accepted; ``.evidence`` holds the verdict's dict.
        CheckpointNotFoundError, CheckpointFormatError, UnsafeCheckpointError: unreadable init (exit 2).
    """
    return read_checked_init(path, allow_random=allow_random, allow_partial=allow_partial).record

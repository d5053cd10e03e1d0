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

from dataclasses import dataclass
from pathlib import Path

from ckpttool.errors import GateRefusedError


@dataclass(frozen=True)
class InitRecord:
    """What the run records about its init."""

    path: str  # as given, resolved to an absolute path
    sha256: str  # of the file on disk when the gate checked it
    verdict: str  # pretrained | random | partial | corrupt
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
    if verdict == "partial":
        if allow_partial:
            return None
        return ("some groups look untouched; --allow-random does not accept a partial init, "
                "pass --allow-partial if this is intended, or regenerate the init")
    return "a corrupt init is always refused; regenerate it (ckpttool generate)"


def check_init(path: str | Path, *, allow_random: bool = False, allow_partial: bool = False) -> InitRecord:
    """Verify ``path`` and refuse it unless its verdict is acceptable.

    Raises:
        GateRefusedError: (exit 1) verdict not accepted; ``.evidence`` holds the verdict's dict.
        CheckpointNotFoundError, CheckpointFormatError, UnsafeCheckpointError: unreadable init (exit 2).
    """
    from ckpttool.verify import verify_file

    report = verify_file(Path(path), expect="any")
    v = report.verdict
    record = InitRecord(
        path=str(Path(path).resolve()),
        sha256=report.sha256,
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
    return record

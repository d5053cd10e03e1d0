"""Typed errors. Each also subclasses the matching built-in, and carries the exit code the CLI uses.

Exit codes: 2 = the input could not be read, was refused as unsafe, or the arguments were wrong;
1 = it was checked, and the check failed. The CLI root turns a ``CkptError`` into one line on stderr.
"""

from __future__ import annotations


class CkptError(Exception):
    """Base of every error ckpttool raises on purpose. ``exit_code`` is what the CLI exits with."""

    exit_code: int = 2


class CheckpointNotFoundError(CkptError, FileNotFoundError):
    """A path that should hold a checkpoint (or a folder of them) does not exist or holds none."""


class CheckpointFormatError(CkptError, ValueError):
    """The file exists but is not a readable checkpoint: empty, truncated, garbage, no tensors."""


class UnsafeCheckpointError(CkptError, PermissionError):
    """A pickle asks for globals outside the allow-list. Never loaded, nothing executed."""


class InvalidArgumentError(CkptError, ValueError):
    """A user-supplied option or value is wrong (unknown arch, bad rule, rate outside (0, 1)...)."""


class OutputError(CkptError, OSError):
    """Writing failed (unwritable folder, disk full, destination exists). Nothing half-written remains."""


class ManifestError(CkptError, ValueError):
    """A manifest (init_model/MANIFEST.json or a backup manifest) is unreadable. It is never overwritten."""


class WeightsUnavailableError(CkptError, FileNotFoundError):
    """Pretrained weights could not be obtained (download failed, not cached offline, file missing)."""


class DatasetError(CkptError, ValueError):
    """A dataset could not be read: folder missing, checksum mismatch, unreadable or unsafe file, failed download."""


class VerdictMismatchError(CkptError):
    """A checked result does not match what was asked (e.g. `generate --init pretrained` built random)."""

    exit_code = 1

    def __init__(self, message: str, evidence: object | None = None):
        super().__init__(message)
        self.evidence = evidence


class UnexpectedWeightsError(VerdictMismatchError):
    """``ckpttool.require``: weights are not what the training script expects. ``verdict`` (also
    ``evidence``) is the ``Verdict`` that says what they are; ``expected`` is what was asked."""

    def __init__(self, message: str, *, verdict: object, expected: str):
        super().__init__(message, evidence=verdict)
        self.verdict = verdict
        self.expected = expected


class GateRefusedError(VerdictMismatchError):
    """The pruning runner refused an init whose verdict is not acceptable."""


class RunInterruptedError(CkptError):
    """A pruning run was stopped by Ctrl-C after writing a checkpoint; the message says how to resume."""

    exit_code = 130


class ResourceExhaustedError(CkptError, MemoryError):
    """The accelerator ran out of memory; the message suggests a smaller batch size."""


class BatchFailedError(CkptError):
    """Some files of a batch (``generate --all``) failed; the others were written. Exits with the
    worst failure's code."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


class ShardIndexError(CheckpointFormatError):
    """A sharded checkpoint's index (``model.safetensors.index.json``...) and its shards disagree, or the
    index is unreadable or names a file outside its folder. Nothing is judged: the model is one unit."""


class LfsPointerError(CheckpointFormatError):
    """The file is a Git LFS pointer, not the checkpoint: the repository was checked out without its LFS
    content. ``pointer`` (a ``ckpttool.formats.lfs_pointer.LfsPointer``) has the content's sha256 and size."""

    def __init__(self, message: str, pointer: object | None = None):
        super().__init__(message)
        self.pointer = pointer

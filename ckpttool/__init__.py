"""ckpttool: init checkpoints that are what their names say.

Kept import-light: nothing here imports torch or timm, so `ckpttool verify` starts fast. The public
API is re-exported by name and imported on first use.

Example:
    >>> import ckpttool
    >>> report = ckpttool.verify_file("init_model/vit_small_cifar10_pretrained_init.pth.tar")  # doctest: +SKIP
    >>> report.verdict.verdict, report.passed  # doctest: +SKIP
    ('pretrained', True)
    >>> ckpttool.require(model, expect="pretrained")  # in a training script; raises if it is not  # doctest: +SKIP
"""

from __future__ import annotations

import importlib

from ckpttool.errors import (
    CheckpointFormatError,
    CheckpointNotFoundError,
    CkptError,
    DatasetError,
    GateRefusedError,
    InvalidArgumentError,
    LfsPointerError,
    ManifestError,
    OutputError,
    ResourceExhaustedError,
    RunInterruptedError,
    UnexpectedWeightsError,
    UnsafeCheckpointError,
    VerdictMismatchError,
    WeightsUnavailableError,
)

__version__ = "0.1.0"

# public name -> module that holds it (imported lazily by __getattr__)
_LAZY = {
    "load_checkpoint": "ckpttool.loading",
    "load_state_dict": "ckpttool.torch_state",
    "find_checkpoints": "ckpttool.loading",
    "Checkpoint": "ckpttool.loading",
    "TensorInfo": "ckpttool.loading",
    "save_checkpoint": "ckpttool.saving",
    "file_sha256": "ckpttool.hashing",
    "weights_digest": "ckpttool.digest",
    "file_weights_digests": "ckpttool.digest",
    "checkpoint_weights_digest": "ckpttool.digest",
    "TensorStats": "ckpttool.verdict.stats",
    "compute_tensor_stats": "ckpttool.verdict.stats",
    "compute_checkpoint_stats": "ckpttool.verdict.stats",
    "Verdict": "ckpttool.verdict",
    "judge": "ckpttool.verdict",
    "FileReport": "ckpttool.verify",
    "VerifyRun": "ckpttool.verify",
    "verify_file": "ckpttool.verify",
    "verify_paths": "ckpttool.verify",
    "judge_file": "ckpttool.verify",
    "require": "ckpttool.guard",
    "judge_state_dict": "ckpttool.guard",
    "InspectReport": "ckpttool.inspection",
    "inspect_file": "ckpttool.inspection",
    "GenerateRequest": "ckpttool.generate",
    "GeneratedInit": "ckpttool.generate",
    "generate_init": "ckpttool.generate",
    "BackupRecord": "ckpttool.backup",
    "backup_file": "ckpttool.backup",
    "list_backups": "ckpttool.backup",
    "restore_backup": "ckpttool.backup",
    "ManifestCheck": "ckpttool.manifest",
    "check_manifest": "ckpttool.manifest",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ckpttool' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "CheckpointFormatError",
    "CheckpointNotFoundError",
    "CkptError",
    "DatasetError",
    "GateRefusedError",
    "InvalidArgumentError",
    "LfsPointerError",
    "ManifestError",
    "OutputError",
    "ResourceExhaustedError",
    "RunInterruptedError",
    "UnexpectedWeightsError",
    "UnsafeCheckpointError",
    "VerdictMismatchError",
    "WeightsUnavailableError",
    *_LAZY,
]

"""ckpttool: init checkpoints that are what their names say.

Kept import-light: nothing here imports torch or timm, so `ckpttool verify` starts fast.
Public API is re-exported from the modules that hold it.
"""

__version__ = "0.1.0"

from ckpttool.errors import (  # noqa: E402
    CheckpointFormatError,
    CheckpointNotFoundError,
    CkptError,
    GateRefusedError,
    InvalidArgumentError,
    ManifestError,
    OutputError,
    UnsafeCheckpointError,
    VerdictMismatchError,
    WeightsUnavailableError,
)

__all__ = [
    "CheckpointFormatError",
    "CheckpointNotFoundError",
    "CkptError",
    "GateRefusedError",
    "InvalidArgumentError",
    "ManifestError",
    "OutputError",
    "UnsafeCheckpointError",
    "VerdictMismatchError",
    "WeightsUnavailableError",
]

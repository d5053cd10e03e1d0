"""Safe loading of pickle-based torch checkpoints: scan first, then ``torch.load(weights_only=True)``.

The stance (the same as timm's ``_torch_load``): nothing pickled is ever executed and there is
no unsafe fallback. Before loading we list the globals the pickle would import, statically, and
refuse with one line naming every global outside the allow-list. torch's weights-only unpickler
is the actual safety net; the scan exists to give a complete, readable message.

Allow-list: torch's weights-only defaults plus ``argparse.Namespace`` (training scripts store
their arguments) and numpy scalars, arrays and dtypes (metrics such as ``best_acc``).
"""

from __future__ import annotations

import _compat_pickle
import functools
import io
import logging
import pickle
import pickletools
import re
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any

from ckpttool._formats import TORCH_ZIP, one_line
from ckpttool.errors import CheckpointFormatError, UnsafeCheckpointError

logger = logging.getLogger(__name__)

# First pickle of a legacy (non-zip) torch.save stream.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
# A legacy stream holds: magic, protocol version, sys info, the object, the storage keys.
_LEGACY_PICKLES = 5

_FIX = "the file is truncated or corrupt; re-download or regenerate it"

# Exceptions torch / pickle / zipfile raise on bad input; each becomes one of our typed errors.
_LOAD_ERRORS = (
    pickle.UnpicklingError,
    RuntimeError,
    EOFError,
    ValueError,
    OSError,
    zipfile.BadZipFile,
    struct.error,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    OverflowError,
    MemoryError,
    AssertionError,  # torch's loader asserts on malformed persistent ids and storage keys
)

_STRING_OPS = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
)
_INT_OPS = frozenset({"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"})
_UNRESOLVED = "<unresolved STACK_GLOBAL>"


def unsafe_message(path: Path, names: set[str] | list[str]) -> str:
    """The one-line refusal that names every unsafe global (sorted)."""
    return (
        f"refused to load {path}: it imports unsafe globals {', '.join(sorted(names))} "
        "(ckpttool never executes pickled code; re-save the checkpoint with only tensors, "
        "e.g. torch.save(model.state_dict()))"
    )


@functools.cache
def extra_safe_globals() -> tuple[Any, ...]:
    """Entries for ``torch.serialization.safe_globals`` beyond torch's defaults (with numpy 1/2 aliases)."""
    import argparse

    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    entries: list[Any] = [
        (argparse.Namespace, "argparse.Namespace"),
        (np.ndarray, "numpy.ndarray"),
        (np.dtype, "numpy.dtype"),
    ]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        for fn in ("_reconstruct", "scalar"):
            entries.append((getattr(multiarray, fn), f"{module}.{fn}"))
    dtypes = getattr(np, "dtypes", None)
    for name in dir(dtypes) if dtypes is not None else ():
        cls = getattr(dtypes, name)
        if name.endswith("DType") and isinstance(cls, type):
            entries.append((cls, f"numpy.dtypes.{name}"))
    return tuple(entries)


def py3_name(dotted: str) -> str:
    """Python 3's name for a GLOBAL written by protocol 2 (``__builtin__.eval`` -> ``builtins.eval``).

    The unpicklers (Python's and torch's weights-only one) apply this mapping to GLOBAL opcodes,
    so it is the name that would actually be imported.
    """
    module, _, attr = dotted.rpartition(".")
    if (module, attr) in _compat_pickle.NAME_MAPPING:
        module, attr = _compat_pickle.NAME_MAPPING[(module, attr)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{attr}"


def _unsafe(found: set[str]) -> set[str]:
    """The globals outside the allow-list (torch's weights-only defaults plus ours)."""
    allowed = {name for _, name in extra_safe_globals()}
    try:
        from torch import _weights_only_unpickler as wou

        allowed |= set(wou._get_allowed_globals()) | set(wou._get_user_allowed_globals())
    except (ImportError, AttributeError):  # private API moved: torch's unpickler still guards
        logger.debug("torch's weights-only allow-list is not reachable; trusting torch.* names in the scan")
        allowed |= {g for g in found if g.startswith("torch.")}
        allowed |= {"collections.OrderedDict", "_codecs.encode", "builtins.set", "builtins.bytearray"}
    return found - allowed


def scan_pickle(stream: io.BufferedIOBase) -> tuple[set[str], int]:
    """Statically list the globals one pickle imports, without executing it.

    Reads one pickle (up to its STOP opcode) from ``stream`` with ``pickletools.genops``. GLOBAL and
    INST carry the name; STACK_GLOBAL takes module and name from the two preceding pushes, which
    may come from the memo, so string pushes and memo puts/gets are tracked.

    Returns:
        The global names (``module.name``) and the largest element count a persistent id
        (a storage reference) claims, for a size check before torch allocates anything.

    Raises:
        ValueError: the pickle is malformed or truncated (from ``pickletools``).
    """
    found: set[str] = set()
    pushed: list[object] = []
    memo: dict[int, object] = {}
    last_int = 0
    largest_storage = 0
    for op, arg, _pos in pickletools.genops(stream):
        name = op.name
        if name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            found.add(py3_name(f"{module}.{attr}"))
        elif name == "STACK_GLOBAL":
            module, attr = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
            ok = isinstance(module, str) and isinstance(attr, str)
            found.add(f"{module}.{attr}" if ok else _UNRESOLVED)
        if name in _STRING_OPS:
            pushed.append(arg)
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = pushed[-1] if pushed else None
        elif name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(arg))
        elif op.stack_after:
            pushed.append(None)
        if name in _INT_OPS and isinstance(arg, int):
            last_int = arg
        elif name in ("BINPERSID", "PERSID"):
            largest_storage = max(largest_storage, last_int)
        if len(pushed) > 64:
            del pushed[:-8]
    return found, largest_storage


class _BoundedReader:
    """A binary file whose ``read(n)`` never asks for more than what is left of the file.

    A pickle opcode may claim any length (BINUNICODE8: 2**64 bytes); a plain ``read(n)`` of a
    buffered file allocates n bytes before finding out that the file is shorter.
    """

    def __init__(self, f: io.BufferedReader, size: int):
        self._f, self._size = f, size

    def read(self, n: int = -1) -> bytes:
        left = max(self._size - self._f.tell(), 0)
        return self._f.read(left if n is None or n < 0 else min(n, left))

    def readline(self) -> bytes:
        return self._f.readline()

    def tell(self) -> int:
        return self._f.tell()

    def seek(self, pos: int) -> int:
        return self._f.seek(pos)


def _scan_legacy(path: Path) -> tuple[set[str], int, bool]:
    """Scan every pickle of a legacy stream. Returns (globals, largest storage, is_torch_stream)."""
    found: set[str] = set()
    largest = 0
    with open(path, "rb") as raw:
        f = _BoundedReader(raw, path.stat().st_size)
        first = list(pickletools.genops(f))
        is_torch = any(op.name.startswith("LONG") and arg == _LEGACY_MAGIC for op, arg, _ in first)
        f.seek(0)
        for _ in range(_LEGACY_PICKLES if is_torch else 1):
            globals_, claimed = scan_pickle(f)
            found |= globals_
            largest = max(largest, claimed)
    return found, largest, is_torch


def _scan_zip(path: Path) -> set[str]:
    """Globals of a torch zip's data.pkl: torch's own scanner, or ours where it gives up (protocol 4+).

    Any other ``*.pkl`` member is scanned too: torch never unpickles it, but a file carrying a
    hidden payload is refused rather than passed on as safe to a tool that would load it.
    """
    from torch.serialization import get_unsafe_globals_in_checkpoint

    unsafe: set[str] | None
    try:
        unsafe = {py3_name(g) for g in get_unsafe_globals_in_checkpoint(path)}
    except pickle.UnpicklingError:
        logger.debug("torch's global scan failed on %s; using pickletools", path)
        unsafe = None
    with zipfile.ZipFile(path) as z:
        members = z.namelist()
        names = [n for n in members if n == "data.pkl" or n.endswith("/data.pkl")]
        if unsafe is None:
            if not names:
                raise CheckpointFormatError(
                    f"{path} is a zip file but not a torch checkpoint (no data.pkl); {_FIX}"
                )
            with z.open(names[0]) as member:
                found, _ = scan_pickle(io.BytesIO(member.read()))
            unsafe = _unsafe(found)
        for name in members:
            if name.endswith(".pkl") and name not in names[:1]:
                try:
                    with z.open(name) as member:
                        found, _ = scan_pickle(member)
                except ValueError:  # not a pickle at all: nothing that could run
                    continue
                unsafe |= _unsafe(found)
    return unsafe


def _refusal_from_torch(path: Path, error: Exception) -> Exception:
    """Turn torch's multi-line weights-only refusal into our one-line typed error."""
    text = str(error)
    names = set(re.findall(r"GLOBAL ([\w.]+)", text))
    if names:
        return UnsafeCheckpointError(unsafe_message(path, names))
    reason = next(
        (
            line.strip()
            for line in text.splitlines()
            if line.strip()
            and not line.startswith(("Weights only load failed", "Please file", "Check the documentation"))
        ),
        one_line(error),
    )
    reason = reason.removeprefix("WeightsUnpickler error:").strip() or one_line(error)
    return CheckpointFormatError(
        f"{path} cannot be read by torch's weights-only unpickler ({reason}); "
        "re-save it with torch.save(model.state_dict())"
    )


def load_torch_object(path: Path, fmt: str, *, mmap: bool) -> object:
    """Load a torch.save file safely: refuse unsafe globals first, then ``torch.load(weights_only=True)``.

    Args:
        path: the file.
        fmt: ``"torch-zip"`` or ``"torch-legacy"`` (from ``detect_format``).
        mmap: memory-map tensor data (zip files only; keeps memory bounded).

    Returns:
        Whatever the file holds (usually a dict), with tensors on the CPU.

    Raises:
        UnsafeCheckpointError: the pickle imports globals outside the allow-list (nothing executed).
        CheckpointFormatError: truncated, corrupt, or not a torch.save file.
    """
    import torch
    from torch.serialization import safe_globals

    with safe_globals(list(extra_safe_globals())):
        try:
            if fmt == TORCH_ZIP:
                unsafe = _scan_zip(path)
            else:
                found, largest, is_torch = _scan_legacy(path)
                unsafe = _unsafe(found)
        except (CheckpointFormatError, UnsafeCheckpointError):
            raise
        except _LOAD_ERRORS as e:
            raise CheckpointFormatError(
                f"{path} is not a readable torch checkpoint ({one_line(e)}); {_FIX}"
            ) from e
        if unsafe:
            raise UnsafeCheckpointError(unsafe_message(path, unsafe))
        if fmt != TORCH_ZIP:
            if not is_torch:
                raise CheckpointFormatError(
                    f"{path} is a plain pickle, not a torch.save checkpoint; re-save it with "
                    "torch.save(model.state_dict())"
                )
            size = path.stat().st_size
            if largest > size:
                raise CheckpointFormatError(
                    f"{path} claims a tensor of {largest} elements but the file has only {size} bytes; {_FIX}"
                )
        try:
            return _torch_load(torch, path, mmap=mmap and fmt == TORCH_ZIP)
        except pickle.UnpicklingError as e:
            raise _refusal_from_torch(path, e) from e
        except _LOAD_ERRORS as e:
            raise CheckpointFormatError(
                f"{path} is not a readable torch checkpoint ({one_line(e)}); {_FIX}"
            ) from e


def _torch_load(torch, path: Path, *, mmap: bool) -> object:
    with warnings.catch_warnings():
        # torch warns about pickle protocols > 2, then fails with its own error, which we report.
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        if str(path).endswith(".safetensors"):
            # torch.load sends a path named *.safetensors to safetensors; a file object it reads
            # by content (mmap needs a path, so this odd case loads into memory).
            with open(path, "rb") as f:
                return torch.load(f, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)

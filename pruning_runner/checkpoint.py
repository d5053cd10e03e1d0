"""Run checkpoints: plain tensors and primitives only (loadable with ``weights_only=True``), written
atomically by a background thread so the training loop does not wait for the disk.

Example:
    >>> writer = CheckpointWriter()  # doctest: +SKIP
    >>> writer.submit(Path("runs/x/checkpoint.pt"), payload); writer.close()  # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ckpttool._atomic import atomic_write
from ckpttool.errors import CheckpointFormatError

FORMAT_VERSION = 1


def to_cpu(obj: Any) -> Any:
    """Deep copy of nested dicts/lists with every tensor detached and copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_cpu(v) for v in obj]
    return obj


def capture_rng() -> dict[str, Any]:
    """Every RNG state that could influence the run, as tensors / plain types."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> str | None:
    """Restore what :func:`capture_rng` saved. Returns a note when CUDA RNG states were left out."""
    torch.set_rng_state(state["torch"].to(torch.uint8))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" not in state:
        return None
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return restore_cuda_rng(list(state["cuda"]), available, torch.cuda.set_rng_state)


def restore_cuda_rng(states: list[torch.Tensor], available: int,
                     set_state: Callable[[torch.Tensor, int], None]) -> str | None:
    """Restore the saved CUDA RNG states of the devices this machine has (``set_state(state, index)``).

    A checkpoint saved where more GPUs were visible holds more states than exist here: those are
    left out (restoring them would fail), and the returned note says which.
    """
    for i in range(min(len(states), available)):
        set_state(states[i].to(torch.uint8), i)
    if len(states) <= available:
        return None
    restored = f"devices 0-{available - 1}" if available > 1 else ("device 0" if available else "none")
    left = f"{available}-{len(states) - 1}" if len(states) - available > 1 else f"{available}"
    return (f"the checkpoint holds CUDA RNG states of {len(states)} devices, {available} visible here: "
            f"restored {restored}, left out device(s) {left}")


def _serialise(payload: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


class CheckpointWriter:
    """Writes one checkpoint at a time in a background thread; ``submit`` waits for the previous one."""

    def __init__(self, background: bool = True):
        self.background = background
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, path: Path, payload: dict[str, Any]) -> None:
        """Queue ``payload`` (already on the CPU, see :func:`to_cpu`) for an atomic write to ``path``."""
        self.wait()
        if not self.background:
            self._write(path, payload)
            return
        self._thread = threading.Thread(target=self._run, args=(path, payload), name="ckpt-writer", daemon=True)
        self._thread.start()

    def _run(self, path: Path, payload: dict[str, Any]) -> None:
        try:
            self._write(path, payload)
        except BaseException as e:  # re-raised in the main thread by wait()
            self._error = e

    @staticmethod
    def _write(path: Path, payload: dict[str, Any]) -> None:
        data = _serialise(payload)
        with atomic_write(path, "wb") as f:
            f.write(data)

    def wait(self) -> None:
        """Block until the pending write is on disk; re-raise its error."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    close = wait


def load_run_checkpoint(path: Path) -> dict[str, Any]:
    """Read a run checkpoint with ``weights_only=True``, after ckpttool's own reader checked it."""
    from ckpttool.formats.dispatch import check_torch_file

    try:
        if path.exists():
            check_torch_file(path)  # the same scan, storage checks and limits as every other torch file
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise CheckpointFormatError(f"no checkpoint in run folder: {path} is missing; start a new run") from e
    except Exception as e:  # a truncated / foreign file
        raise CheckpointFormatError(
            f"cannot read run checkpoint {path}: {_first_line(e)}; it is damaged or not written by run-prune "
            "(no unsafe fallback); restore it or start a new run"
        ) from e
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointFormatError(f"{path} is not a run-prune checkpoint (format {FORMAT_VERSION})")
    return payload


def _first_line(err: BaseException) -> str:
    """The informative line of a (possibly many-line) torch.load error, so the CLI prints one line."""
    text = str(err)
    if "WeightsUnpickler error:" in text:  # torch's weights_only refusal: the reason follows the marker
        text = text.split("WeightsUnpickler error:", 1)[1]
    line = next((s.strip() for s in text.splitlines() if s.strip()), type(err).__name__)
    return line if len(line) <= 200 else line[:197] + "..."


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """safetensors file with metadata JSON under ``__metadata__['ckpttool']`` (atomic)."""
    from safetensors.torch import save

    data = save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()},
                metadata={"ckpttool": json.dumps(metadata or {})})
    with atomic_write(path, "wb") as f:
        f.write(data)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))

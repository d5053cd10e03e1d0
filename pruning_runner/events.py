"""Progress events the loop reports to a listener (the CLI renders them; the library never prints).

Example:
    >>> seen = []
    >>> listener = seen.append  # any callable taking one event
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Listener = Callable[[Any], None]


@dataclass(frozen=True)
class RunStarted:
    run_dir: str
    states: int
    epochs: int
    device: str
    resumed: bool
    init: dict  # path, sha256, verdict
    head_reinitialised: bool
    world_size: int = 1


@dataclass(frozen=True)
class EpochStarted:
    state: int
    epoch: int
    steps: int  # batches in this epoch on this rank
    start_step: int = 0  # > 0 when resuming mid-epoch


@dataclass(frozen=True)
class StepDone:
    state: int
    epoch: int
    step: int  # batches done in this epoch


@dataclass(frozen=True)
class EpochEnded:
    metrics: dict  # one metrics.jsonl line


@dataclass(frozen=True)
class StateEnded:
    result: dict  # one summary.json "states" entry


@dataclass(frozen=True)
class RunFinished:
    run_dir: str
    states: list = field(default_factory=list)  # summary entries
    final_model: str | None = None  # path of final_compact.safetensors


def null_listener(event: Any) -> None:
    """Listener that ignores every event."""

"""Run configuration: one frozen dataclass, loaded from TOML and overridden by command-line flags.

Example:
    >>> cfg = resolve_config(None, {"init": "a.safetensors", "dataset": "digits", "method": "refill",
    ...                             "target": "head", "rate": 0.2, "states": 3, "epochs": 2})
    >>> cfg.method
    'refill'
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ckpttool.errors import InvalidArgumentError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

DATASETS = ("cifar10", "cifar100", "digits", "synthetic")
METHODS = ("refill", "rsst")
TARGETS = ("head", "mlp", "both")
CRITERIA = ("magnitude", "l2", "taylor", "remain")
RANKINGS = ("layer", "global")
REWINDS = ("lt", "rewind_lt")
REG_SCHEDULES = ("x", "x2", "x3", "exp", "exp_custom_exponents")
OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("cosine", "multistep")
DEVICES = ("auto", "cpu", "cuda")
# Fewer validation images make "the best-validation epoch" noise: below 100 one image is more than a
# point of accuracy and the standard error of an accuracy near 50% exceeds 5 points, more than epochs
# of one state usually differ. CIFAR's default is 5,000.
MIN_VAL_SIZE = 100


@dataclass(frozen=True)
class RunConfig:
    """Everything a pruning run needs. Saved resolved as ``config.toml`` in the run folder."""

    # --- input ---
    init: str | None = None  # init checkpoint path (gated by its verdict)
    allow_random: bool = False  # accept a `random` verdict on purpose
    allow_partial: bool = False  # accept a `partial` verdict (only with allow_random)
    arch: str | None = None  # timm name when the init carries no metadata
    img_size: int | None = None  # model input size (metadata or flag; default 32)
    patch_size: int | None = None  # patch size (metadata or flag)
    # --- data ---
    dataset: str | None = None  # cifar10 | cifar100 | digits | synthetic
    data: str | None = None  # dataset folder (cifar); None = library default
    download: bool = False  # allow downloading the dataset
    synthetic_size: int | None = None  # images per split for `synthetic`
    val_size: int | None = None  # validation images held out of train (>= MIN_VAL_SIZE); None = loader default
    # --- pruning ---
    method: str | None = None  # refill | rsst
    target: str | None = None  # head | mlp | both
    rate: float | None = None  # fraction of the remaining groups removed per prune (compounding)
    final_sparsity: float | None = None  # alternative to rate: fraction removed after the last state
    states: int | None = None  # pruning states, state 0 dense
    epochs: int | None = None  # training epochs per state
    criterion: str = "magnitude"  # magnitude | l2 | taylor | remain
    ranking: str = "layer"  # layer (same fraction per block) | global (scores normalised per block)
    min_heads_per_layer: int = 1  # never fewer heads in a block (neurons: never fewer than 1)
    taylor_batches: int = 4  # batches used to accumulate |w * dL/dw|
    rewind: str = "lt"  # lt (to the init) | rewind_lt (to epoch `rewind_epoch` of state 0)
    rewind_epoch: int = 1  # epochs of state 0 after which the rewind snapshot is taken
    reg_max: float = 1.0  # RSST: final lambda of the gradient penalty
    reg_schedule: str = "x"  # RSST: lambda growth over a whole state
    reg_exponent: float = 2.0  # RSST: p of exp_custom_exponents
    compact_between_states: bool = True  # train each state on a physically smaller model
    # --- optimisation ---
    optimizer: str = "adamw"  # sgd | adamw
    lr: float | None = None  # peak learning rate; None = 1e-3 (adamw) / 0.05 (sgd)
    batch_size: int = 128  # global batch size
    schedule: str = "cosine"  # cosine | multistep (x0.1 at 50% and 75%)
    warmup_epochs: float = 0.0  # linear warm-up at the start of every state
    weight_decay: float = 0.05  # on matrices only
    label_smoothing: float = 0.0
    momentum: float = 0.9  # sgd only
    seed: int = 0  # data order, augmentation and new weights; recorded in run.json
    # --- execution ---
    deterministic: bool = False  # deterministic algorithms only, no TF32 (reproducible GPU runs, slower)
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # bf16 autocast (CUDA only; fp32 master weights)
    compile: bool = False  # torch.compile the training model (recompiled after compaction)
    compile_backend: str = "inductor"  # torch.compile backend (e.g. eager, aot_eager for debugging)
    eval_batch_size: int = 1024  # evaluation batch size
    checkpoint_every: int = 1  # epochs between checkpoints (0 = only at state ends)
    out: str | None = None  # run folder; None = runs/<UTC time>_<method>_<dataset>

    @property
    def resolved_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1e-3 if self.optimizer == "adamw" else 0.05

    @property
    def prune_rate(self) -> float:
        """Fraction of the remaining groups removed at each prune."""
        if self.rate is not None:
            return self.rate
        if self.final_sparsity is None or self.states is None or self.states < 2:
            return 0.0
        return 1.0 - (1.0 - self.final_sparsity) ** (1.0 / (self.states - 1))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in fields(RunConfig)}
_REQUIRED = ("init", "dataset", "method", "target", "states", "epochs")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML file of RunConfig keys (dashes or underscores). Unknown keys are an error."""
    p = Path(path)
    if not p.is_file():
        raise InvalidArgumentError(f"config file not found: {p}")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InvalidArgumentError(f"config file {p} is not valid TOML: {e}") from e
    return _normalise_keys(raw, source=str(p))


def _field_kind(annotation: str) -> tuple[type, str]:
    """(python type, phrase) a field accepts, from its annotation (``"float | None"`` -> float)."""
    for name, kind, phrase in (("bool", bool, "true or false"), ("int", int, "an integer"),
                               ("float", float, "a number"), ("str", str, "a string")):
        if name in annotation.replace("None", "").split(" | ")[0]:
            return kind, phrase
    raise TypeError(f"unsupported config annotation {annotation}")  # a bug in RunConfig, not user input


_KINDS = {name: _field_kind(str(f.type)) for name, f in _FIELDS.items()}


def _check_type(key: str, value: Any, *, source: str) -> None:
    """A TOML value of the wrong type (``lr = "fast"``) is a usage error, not a traceback later."""
    kind, phrase = _KINDS[key]
    if value is None and "None" in str(_FIELDS[key].type):
        return
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise InvalidArgumentError(
            f"{key.replace('_', '-')} = {shown} in {source} must be {phrase}, got a {type(value).__name__}"
        )


def _normalise_keys(raw: dict[str, Any], *, source: str) -> dict[str, Any]:
    out = {}
    for k, v in raw.items():
        key = k.replace("-", "_")
        if key not in _FIELDS:
            raise InvalidArgumentError(f"unknown key {k!r} in {source}; known keys: {', '.join(sorted(_FIELDS))}")
        _check_type(key, v, source=source)
        out[key] = v
    return out


def resolve_config(config_file: str | Path | None, overrides: dict[str, Any]) -> RunConfig:
    """Merge: defaults < TOML file < flags (``overrides``, only those given). Validates the result.

    Raises:
        InvalidArgumentError: a value is unknown or out of range, or a required key is missing.
    """
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(load_config_file(config_file))
    values.update(_normalise_keys({k: v for k, v in overrides.items() if v is not None}, source="flags"))
    cfg = RunConfig(**values)
    validate_config(cfg)
    return cfg


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidArgumentError(f"unknown {name.replace('_', '-')} {value!r}; choose one of: {', '.join(choices)}")


def validate_config(cfg: RunConfig) -> None:
    """Check every value up front, so no run folder is made for a run that cannot start."""
    for key in _REQUIRED:
        if getattr(cfg, key) is None:
            raise InvalidArgumentError(f"--{key.replace('_', '-')} is required (flag or config file)")
    _choice("dataset", cfg.dataset, DATASETS)
    _choice("method", cfg.method, METHODS)
    _choice("target", cfg.target, TARGETS)
    _choice("criterion", cfg.criterion, CRITERIA)
    _choice("ranking", cfg.ranking, RANKINGS)
    _choice("rewind", cfg.rewind, REWINDS)
    _choice("reg_schedule", cfg.reg_schedule, REG_SCHEDULES)
    _choice("optimizer", cfg.optimizer, OPTIMIZERS)
    _choice("schedule", cfg.schedule, LR_SCHEDULES)
    _choice("device", cfg.device, DEVICES)
    if not isinstance(cfg.states, int) or cfg.states < 1:
        raise InvalidArgumentError(f"--states must be an integer >= 1, got {cfg.states!r}")
    if not isinstance(cfg.epochs, int) or cfg.epochs < 1:
        raise InvalidArgumentError(f"--epochs must be an integer >= 1, got {cfg.epochs!r}")
    if cfg.rate is not None and cfg.final_sparsity is not None:
        raise InvalidArgumentError("give either --rate or --final-sparsity, not both")
    if cfg.states > 1 and cfg.rate is None and cfg.final_sparsity is None:
        raise InvalidArgumentError("--rate or --final-sparsity is required when --states > 1")
    for name in ("rate", "final_sparsity"):
        v = getattr(cfg, name)
        if v is not None and not (isinstance(v, (int, float)) and 0.0 < float(v) < 1.0):
            raise InvalidArgumentError(f"--{name.replace('_', '-')} must lie strictly between 0 and 1, got {v!r}")
    if cfg.val_size is not None:
        check_val_size(cfg.val_size, "--val-size")
    if cfg.min_heads_per_layer < 1:
        raise InvalidArgumentError(f"--min-heads-per-layer must be >= 1, got {cfg.min_heads_per_layer}")
    if cfg.rewind == "rewind_lt" and not (0 <= cfg.rewind_epoch <= cfg.epochs):
        raise InvalidArgumentError(
            f"--rewind-epoch must lie in 0..{cfg.epochs} (epochs of state 0), got {cfg.rewind_epoch}"
        )
    if not (cfg.reg_max >= 0 and math.isfinite(cfg.reg_max)):
        raise InvalidArgumentError(f"--reg-max must be a finite number >= 0, got {cfg.reg_max}")
    if cfg.reg_exponent <= 0:
        raise InvalidArgumentError(f"--reg-exponent must be > 0, got {cfg.reg_exponent}")
    for name in ("batch_size", "eval_batch_size", "taylor_batches"):
        if getattr(cfg, name) < 1:
            raise InvalidArgumentError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.lr is not None and not cfg.lr > 0:
        raise InvalidArgumentError(f"--lr must be > 0, got {cfg.lr}")
    if not cfg.compile_backend:
        raise InvalidArgumentError("--compile-backend must name a torch.compile backend, e.g. inductor")
    if cfg.checkpoint_every < 0:
        raise InvalidArgumentError(f"--checkpoint-every must be >= 0, got {cfg.checkpoint_every}")
    if not 0 <= cfg.label_smoothing < 1:
        raise InvalidArgumentError(f"--label-smoothing must lie in [0, 1), got {cfg.label_smoothing}")


def check_val_size(val_size: int, what: str) -> None:
    """Refuse a validation split too small for its best epoch to mean anything (see MIN_VAL_SIZE)."""
    if val_size < MIN_VAL_SIZE:
        raise InvalidArgumentError(
            f"{what} {val_size} is below the minimum of {MIN_VAL_SIZE} validation images: the best-validation "
            f"epoch would be noise; hold out at least {MIN_VAL_SIZE} (CIFAR's default is 5,000)"
        )


def config_to_toml(cfg: RunConfig) -> str:
    """The resolved configuration as TOML (None values are left out)."""
    lines = []
    for key, value in cfg.to_dict().items():
        if value is None:
            continue
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'

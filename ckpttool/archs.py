"""Architecture and dataset names: research short names, timm names with tags, and suggestions.

``vit_tiny``/``vit_small``/``vit_base`` are the research code's names for timm's
``vit_{tiny,small,base}_patch16_224``. Any timm model name works too, optionally with a pretrained
tag (``vit_small_patch16_224.augreg_in21k_ft_in1k``). An unknown name is an
:class:`InvalidArgumentError` that suggests the closest names from timm's registry.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from ckpttool.errors import InvalidArgumentError

SHORT_NAMES = {
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
}
DATASETS = {"cifar10": 10, "cifar100": 100}
_SAFE_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True)
class ArchSpec:
    """A resolved architecture."""

    requested: str  # what the user typed
    label: str  # used in default file names: the short name as given, or the timm name
    model_name: str  # timm model name without tag
    tag: str | None  # pretrained tag: explicit, or timm's default for the model; None if it has none

    @property
    def full_name(self) -> str:
        return f"{self.model_name}.{self.tag}" if self.tag else self.model_name


@dataclass(frozen=True)
class DatasetSpec:
    """A resolved classification target."""

    name: str  # "cifar10", "cifar100", or a label for --num-classes
    num_classes: int  # classes of the fresh head


def suggest_names(name: str, *, n: int = 5) -> list[str]:
    """The closest known model names (short names first), by difflib ratio."""
    import timm

    pool = list(SHORT_NAMES) + timm.list_models()
    return difflib.get_close_matches(name, pool, n=n, cutoff=0.5)


def resolve_arch(name: str) -> ArchSpec:
    """Turn a short name, timm name, or ``name.tag`` into an :class:`ArchSpec`.

    Raises:
        InvalidArgumentError: unknown model or tag; the message lists the closest names.

    Example:
        >>> resolve_arch("vit_small").full_name
        'vit_small_patch16_224.augreg_in21k_ft_in1k'
    """
    import timm
    from timm.models import get_pretrained_cfg, split_model_name_tag

    text = (name or "").strip()
    if not text:
        raise InvalidArgumentError("--arch is empty; pass e.g. vit_small or a timm model name")
    if text in SHORT_NAMES:
        model_name, tag, label = SHORT_NAMES[text], None, text
    else:
        model_name, tag = split_model_name_tag(text)
        tag = tag or None
        label = text
    if not timm.is_model(model_name):
        close = suggest_names(text)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `timm.list_models()`"
        raise InvalidArgumentError(f"unknown architecture {text!r}{hint}")
    if tag is not None:
        tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{model_name}.*")]
        if tag not in tags:
            close = difflib.get_close_matches(tag, tags, n=5, cutoff=0.3) or tags[:8]
            known = f"; known tags: {', '.join(close)}" if close else f"; {model_name} has no pretrained tags"
            raise InvalidArgumentError(f"unknown pretrained tag {tag!r} for {model_name}{known}")
    else:
        cfg = get_pretrained_cfg(model_name, allow_unregistered=False)
        tag = getattr(cfg, "tag", None) or None
    return ArchSpec(requested=text, label=label, model_name=model_name, tag=tag)


def resolve_dataset(dataset: str | None, num_classes: int | None = None) -> DatasetSpec:
    """``cifar10``/``cifar100``, or any label together with ``num_classes`` (>= 1).

    Raises:
        InvalidArgumentError: unknown dataset without ``num_classes``, ``num_classes`` < 1, or a
            known dataset with a different ``num_classes``.

    Example:
        >>> resolve_dataset("cifar100")
        DatasetSpec(name='cifar100', num_classes=100)
    """
    if num_classes is not None and num_classes < 1:
        raise InvalidArgumentError(f"--num-classes must be >= 1, got {num_classes}")
    if dataset is None:
        if num_classes is None:
            raise InvalidArgumentError("pass --dataset cifar10|cifar100, or --num-classes N")
        return DatasetSpec(name=f"{num_classes}cls", num_classes=num_classes)
    key = dataset.strip().lower()
    if key in DATASETS:
        if num_classes is not None and num_classes != DATASETS[key]:
            raise InvalidArgumentError(
                f"--dataset {key} has {DATASETS[key]} classes but --num-classes is {num_classes}; "
                f"drop one, or name the dataset differently")
        return DatasetSpec(name=key, num_classes=DATASETS[key])
    if num_classes is None:
        close = difflib.get_close_matches(key, list(DATASETS), n=2, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise InvalidArgumentError(
            f"unknown dataset {dataset!r}; {hint}known: {', '.join(DATASETS)}; "
            f"for another dataset pass --num-classes N")
    if not _SAFE_LABEL.match(dataset):
        raise InvalidArgumentError(f"dataset label {dataset!r} must be letters, digits, '_', '-', '.' or '+'")
    return DatasetSpec(name=dataset, num_classes=num_classes)

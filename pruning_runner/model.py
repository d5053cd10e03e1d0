"""Build the timm ViT a run trains, from the init's metadata (or flags), and load the init strictly.

Example:
    >>> spec = ModelSpec(arch="vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10)
    >>> model = create_vit(spec)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ckpttool.errors import InvalidArgumentError

log = logging.getLogger(__name__)

# metadata keys passed to timm.create_model when present (tiny test models use them)
_MODEL_KWARGS = ("embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias", "class_token", "global_pool")
_LIST_LIMIT = 8


@dataclass(frozen=True)
class ModelSpec:
    """What is needed to rebuild the model. Saved in run records and compact exports."""

    arch: str  # timm model name (e.g. vit_small_patch16_224)
    img_size: int  # input resolution
    patch_size: int | None  # patch size (None = the arch's own)
    num_classes: int  # classifier outputs (the dataset's)
    model_kwargs: dict = field(default_factory=dict)  # extra timm kwargs (embed_dim, depth, ...)

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "img_size": self.img_size,
            "patch_size": self.patch_size,
            "num_classes": self.num_classes,
            "model_kwargs": dict(self.model_kwargs),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        return cls(
            arch=str(d["arch"]),
            img_size=int(d["img_size"]),
            patch_size=None if d.get("patch_size") is None else int(d["patch_size"]),
            num_classes=int(d["num_classes"]),
            model_kwargs=dict(d.get("model_kwargs") or {}),
        )


def parse_init_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """Flatten checkpoint metadata: a safetensors ``__metadata__`` holds ``{"ckpttool": "<json>"}``,
    a torch file the dict itself. Returns plain values (JSON strings decoded where possible)."""
    out: dict[str, Any] = {}
    for k, v in (metadata or {}).items():
        if k == "ckpttool":
            inner = v
            if isinstance(v, str):
                try:
                    inner = json.loads(v)
                except ValueError:
                    inner = {}
            if isinstance(inner, dict):
                out.update(parse_init_metadata(inner))
            continue
        out[k] = v
    for k, v in list(out.items()):
        if isinstance(v, str) and v[:1] in "[{0123456789-tfn" and k not in ("arch", "timm_name"):
            try:
                out[k] = json.loads(v)
            except ValueError:
                pass
    return out


def resolve_model_spec(
    metadata: dict[str, Any],
    *,
    num_classes: int,
    arch: str | None = None,
    img_size: int | None = None,
    patch_size: int | None = None,
) -> ModelSpec:
    """Model spec from init metadata (``timm_name`` or ``arch``, ``img_size``, ``patch_size``), else flags.

    Flags fill what the metadata lacks; where both give a value and they differ, that is an error.
    """
    md = parse_init_metadata(metadata)
    # generate writes the timm name as timm_model (arch is the short label, e.g. vit_tiny)
    md_arch = md.get("timm_name") or md.get("timm_model") or md.get("arch")
    for name, flag, mval in (("arch", arch, md_arch), ("img-size", img_size, md.get("img_size")),
                             ("patch-size", patch_size, md.get("patch_size"))):
        if flag is not None and mval is not None and str(flag) != str(mval):
            raise InvalidArgumentError(
                f"--{name} {flag} contradicts the init's metadata ({mval}); drop the flag or use another init"
            )
    final_arch = md_arch or arch
    if not final_arch:
        raise InvalidArgumentError("the init carries no architecture metadata; give --arch (a timm ViT name)")
    from ckpttool.archs import resolve_arch

    final_arch = resolve_arch(str(final_arch)).model_name  # short names (vit_small) and name.tag too
    kwargs = {}
    if isinstance(md.get("model_kwargs"), dict):
        kwargs.update(md["model_kwargs"])
    for k in _MODEL_KWARGS:
        if k in md:
            kwargs[k] = md[k]
    size = md.get("img_size", img_size)
    patch = md.get("patch_size", patch_size)
    return ModelSpec(
        arch=str(final_arch),
        img_size=int(size) if size is not None else 32,
        patch_size=int(patch) if patch is not None else None,
        num_classes=int(num_classes),
        model_kwargs=kwargs,
    )


def create_vit(spec: ModelSpec, *, device: torch.device | str | None = None) -> nn.Module:
    """A randomly initialised timm ViT for ``spec`` (fp32; CPU, or ``device="meta"`` for shapes only).

    EVA attention is converted to timm's ``AttentionRope`` with the same weights (see
    :mod:`pruning_runner.blocks`), so every model the runner trains or exports can lose heads.

    Raises:
        InvalidArgumentError: unknown timm name, or not a ViT with ``blocks[i].attn``.
    """
    import timm

    from pruning_runner.blocks import convert_eva_attention_

    kwargs = dict(spec.model_kwargs)
    kwargs["img_size"] = spec.img_size
    if spec.patch_size is not None:
        kwargs["patch_size"] = spec.patch_size
    try:
        with torch.device(device) if device is not None else contextlib.nullcontext():
            model = timm.create_model(spec.arch, pretrained=False, num_classes=spec.num_classes, **kwargs)
    except RuntimeError as e:
        raise InvalidArgumentError(f"unknown timm model {spec.arch!r}: {e}") from e
    except (TypeError, ValueError, AssertionError) as e:
        raise InvalidArgumentError(f"cannot build {spec.arch!r} with {kwargs}: {e}") from e
    blocks = getattr(model, "blocks", None)
    if blocks is None or not len(blocks) or not hasattr(blocks[0], "attn"):
        raise InvalidArgumentError(f"{spec.arch!r} is not a ViT with attention blocks (blocks[i].attn)")
    return convert_eva_attention_(model)


@dataclass(frozen=True)
class InitLoad:
    """What happened when the init was loaded."""

    head_reinitialised: bool  # the init's classifier did not fit the dataset and was re-initialised
    init_num_classes: int | None  # classes of the init's head (None if it had none)


def _fmt_keys(keys: list[str]) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - _LIST_LIMIT} more)" if len(keys) > _LIST_LIMIT else ""
    return ", ".join(keys[:_LIST_LIMIT]) + more


def load_init_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], *, source: str) -> InitLoad:
    """Load ``state_dict`` strictly into ``model``; only a classifier of another class count is re-initialised.

    Raises:
        InvalidArgumentError: missing, unexpected or shape-mismatched keys (listed, sorted).
    """
    from pruning_runner.blocks import convert_eva_state_dict

    expected = model.state_dict()
    state_dict = convert_eva_state_dict(state_dict, set(expected))  # EVA's q_bias / v_bias -> attn.qkv.bias
    head_names = {n for n in expected if n.startswith("head.")}
    sd = dict(state_dict)
    init_classes = None
    reinit = False
    head_w = sd.get("head.weight")
    if head_w is not None:
        init_classes = int(head_w.shape[0])
    if head_names and (not all(n in sd for n in head_names)
                       or any(tuple(sd[n].shape) != tuple(expected[n].shape) for n in head_names)):
        reinit = True
        for n in head_names:
            sd.pop(n, None)
    missing = [n for n in expected if n not in sd and not (reinit and n in head_names)]
    unexpected = [n for n in sd if n not in expected]
    mismatched = [
        f"{n} {tuple(sd[n].shape)} vs model {tuple(expected[n].shape)}"
        for n in sd
        if n in expected and tuple(sd[n].shape) != tuple(expected[n].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {_fmt_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {_fmt_keys(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatch {len(mismatched)}: {_fmt_keys(mismatched)}")
        raise InvalidArgumentError(
            f"init {source} does not fit the model ({'; '.join(parts)}); "
            "check --arch/--img-size/--patch-size or the init's metadata"
        )
    with torch.no_grad():
        for n, t in expected.items():
            if n in sd:
                t.copy_(sd[n].to(dtype=t.dtype))
    if reinit:
        log.info("classifier head re-initialised: init has %s classes, dataset %s", init_classes,
                 expected["head.weight"].shape[0] if "head.weight" in expected else "?")
    return InitLoad(head_reinitialised=reinit, init_num_classes=init_classes)

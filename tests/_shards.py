"""Sharded checkpoints for tests, written as transformers / huggingface_hub write them: shard files
plus an index whose ``weight_map`` maps each tensor to its shard. Real safetensors and torch files."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"


def save_shards(folder: Path, state_dict: Mapping, *, fmt: str = "safetensors",
                groups: Sequence[Sequence[str]] | None = None, max_shard_size: int | str = "5GB") -> Path:
    """Write ``state_dict`` as shards into ``folder``; returns the index.

    ``groups``: the tensor-name prefixes of each shard, in shard order (a name goes to the first that matches);
    without it huggingface_hub's own ``split_torch_state_dict_into_shards`` cuts at ``max_shard_size``.
    ``fmt``: ``safetensors`` (``model-0000i-of-0000n.safetensors``) or ``bin`` (torch.save).
    """
    from huggingface_hub import split_torch_state_dict_into_shards

    folder.mkdir(parents=True, exist_ok=True)
    ext = "safetensors" if fmt == "safetensors" else "bin"
    stem = "model" if fmt == "safetensors" else "pytorch_model"
    if groups is None:
        split = split_torch_state_dict_into_shards(dict(state_dict), filename_pattern=stem + "{suffix}." + ext,
                                                   max_shard_size=max_shard_size)
        files = split.filename_to_tensors
    else:
        n = len(groups)
        names = [f"{stem}-{i + 1:05d}-of-{n:05d}.{ext}" for i in range(n)]
        files = {name: [] for name in names}
        for k in state_dict:  # the first group whose prefixes match
            files[names[next(i for i, g in enumerate(groups) if k.startswith(tuple(g)))]].append(k)
    weight_map = {}
    for name, keys in files.items():
        save_file({k: state_dict[k].contiguous() for k in keys}, folder / name, fmt)
        weight_map.update(dict.fromkeys(keys, name))
    index = folder / (SAFETENSORS_INDEX if fmt == "safetensors" else BIN_INDEX)
    write_index(index, dict(sorted(weight_map.items())))  # transformers sorts the map by tensor name
    return index


def save_file(tensors: Mapping, path: Path, fmt: str = "safetensors") -> None:
    if fmt == "safetensors":
        from safetensors.torch import save_file as save_st

        save_st(dict(tensors), str(path))
    else:
        import torch

        torch.save(dict(tensors), path)


def write_index(path: Path, weight_map: Mapping, **extra) -> Path:
    path.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": dict(weight_map), **extra}))
    return path


def load_tensors(path: Path) -> dict:
    """A safetensors file's tensors, copied out of its mapping (so the file may be rewritten)."""
    from safetensors.torch import load_file

    return {k: v.clone() for k, v in load_file(str(path)).items()}

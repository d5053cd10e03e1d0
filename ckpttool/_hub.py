"""The one module that imports huggingface_hub: locate and fetch pretrained weight files.

We download the weight file ourselves (``hf_hub_download``: its own progress bar, its own cache,
``HF_HUB_OFFLINE``) rather than letting ``timm.create_model(pretrained=True)`` do it, so that we
know the exact file, its commit and its sha256 for provenance, can pin ``--revision``, and turn
every failure into a :class:`WeightsUnavailableError`. Nothing here ever falls back to random
weights: that silent fallback is the bug this tool exists to prevent.

``HF_HUB_OFFLINE`` and ``HF_HUB_CACHE`` are read at call time (huggingface_hub reads them once at
import), so a process can point at a prepared cache after importing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ckpttool.errors import WeightsUnavailableError

# timm's hub repos hold these; safetensors first (no pickle), the .bin is loaded by our safe loader.
DEFAULT_FILENAMES = ("model.safetensors", "pytorch_model.bin")
_FIX = "run once with network access to fill the cache, or pass --weights-file PATH"


@dataclass(frozen=True)
class HubWeights:
    """A weight file obtained from the Hugging Face hub (or its local cache)."""

    repo_id: str  # e.g. "timm/vit_small_patch16_224.augreg_in21k_ft_in1k"
    filename: str  # file inside the repo
    revision: str | None  # what was asked for (branch, tag or commit); None = the default branch
    commit: str | None  # the commit the cached file belongs to, when the cache layout tells
    path: Path  # local file in the cache

    def to_dict(self) -> dict:
        return {"repo_id": self.repo_id, "filename": self.filename, "revision": self.revision,
                "commit": self.commit}


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value now."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_cache_dir() -> str | None:
    """The cache folder from the environment now (``HF_HUB_CACHE``, else ``HF_HOME/hub``), or None."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def resolve_hub_source(pretrained_cfg) -> tuple[str, str | None, tuple[str, ...]]:
    """(repo_id, revision embedded in the id, filenames to try) from a timm pretrained cfg.

    Raises:
        WeightsUnavailableError: the cfg names no hub repo (timm would need a URL we do not fetch).
    """
    hub_id = getattr(pretrained_cfg, "hf_hub_id", None) if pretrained_cfg is not None else None
    name = getattr(pretrained_cfg, "architecture", None) or "this model"
    tag = getattr(pretrained_cfg, "tag", None)
    full = f"{name}.{tag}" if tag else name
    if not hub_id:
        raise WeightsUnavailableError(
            f"timm lists no Hugging Face hub weights for {full}; pass --weights-file PATH")
    repo_id, _, embedded_rev = hub_id.partition("@")
    filename = getattr(pretrained_cfg, "hf_hub_filename", None)
    if not filename or filename == "pytorch_model.bin":
        names = DEFAULT_FILENAMES
    elif filename.endswith(".bin"):  # prefer the safetensors twin timm would look for
        names = (filename[: -len(".bin")] + ".safetensors", filename)
    else:
        names = (filename,)
    return repo_id, embedded_rev or None, names


def download_weights(repo_id: str, *, revision: str | None = None,
                     filenames: tuple[str, ...] = DEFAULT_FILENAMES) -> HubWeights:
    """Fetch the first of ``filenames`` that the repo has (from the cache when offline).

    Args:
        repo_id: hub repository, e.g. ``timm/vit_small_patch16_224.augreg_in21k_ft_in1k``.
        revision: branch, tag or commit to pin; None = the default branch.
        filenames: candidates in order of preference.

    Raises:
        WeightsUnavailableError: not cached while offline, download failed, repo/revision/file
            missing. One line naming the repo and file, and the fix.

    Example:
        >>> w = download_weights("timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k")  # doctest: +SKIP
        >>> w.path.name
        'model.safetensors'
    """
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError as e:  # pragma: no cover - it is a declared dependency
        raise WeightsUnavailableError(
            "huggingface_hub is not installed; `pip install huggingface_hub`, or pass --weights-file PATH") from e

    offline = is_offline()
    cache_dir = hub_cache_dir()
    where = f"{repo_id}" + (f"@{revision}" if revision else "")
    not_cached: list[str] = []
    for filename in filenames:
        try:
            local = hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                                    local_files_only=offline)
        except LocalEntryNotFoundError:
            not_cached.append(filename)
            continue
        except RevisionNotFoundError as e:
            raise WeightsUnavailableError(
                f"revision {revision!r} not found in {repo_id}; pass an existing branch, tag or commit") from e
        except EntryNotFoundError:
            continue  # the repo does not have this file: try the next candidate
        except RepositoryNotFoundError as e:
            raise WeightsUnavailableError(
                f"hub repository {repo_id} not found (or gated); pass --weights-file PATH") from e
        except (HfHubHTTPError, OSError, ValueError) as e:
            raise WeightsUnavailableError(
                f"could not download {where}/{filename}: {_first_line(e)}; {_FIX}") from e
        local_path = Path(local)
        return HubWeights(repo_id=repo_id, filename=filename, revision=revision,
                          commit=_commit_from_cache_path(local_path, filename), path=local_path)
    if not_cached:
        mode = "HF_HUB_OFFLINE is set and " if offline else "the hub could not be reached and "
        from huggingface_hub.constants import HF_HUB_CACHE

        cache = cache_dir or HF_HUB_CACHE
        raise WeightsUnavailableError(
            f"pretrained weights {where}/{not_cached[0]} unavailable: {mode}the file is not in {cache}; {_FIX}")
    raise WeightsUnavailableError(
        f"{where} has none of {', '.join(filenames)}; pass --weights-file PATH")


def _commit_from_cache_path(path: Path, filename: str) -> str | None:
    # Cache layout: .../models--org--name/snapshots/<commit>/<filename>
    parts = path.parts
    depth = len(Path(filename).parts)
    if len(parts) > depth + 1 and parts[-depth - 2] == "snapshots":
        return parts[-depth - 1]
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__

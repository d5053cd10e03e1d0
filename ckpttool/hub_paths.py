"""``hf://ORG/REPO[@REVISION][/FILE]``: hub references that `verify` (and others) accept as paths.

With ``/FILE``, that file of the repo; without, the repo's model: its weight files found the way
transformers and timm find them (``ckpttool._hub.REPO_WEIGHT_FILES``: a shard index first, then the
single file), a sharded model with every shard. Hub repo ids are exactly two segments, ``ORG/REPO``,
so whatever follows them is the file. Parsing is pure; :func:`resolve_hub_path` downloads through
huggingface_hub into its cache (its progress bar on stderr, its resumable downloads) via
``ckpttool._hub`` and returns the local file (a sharded model: its index, with the shards beside it
in the same cache snapshot), so that the caller verifies it like any other path. Neither torch nor
timm is imported here: this works in a light install.

A revision containing ``/`` (``refs/pr/1``) is written percent-encoded: ``@refs%2Fpr%2F1``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from ckpttool.errors import InvalidArgumentError

SCHEME = "hf://"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")  # the hub's org and repo name rules
_REVISION = re.compile(r"^[A-Za-z0-9._/-]{1,255}$")


@dataclass(frozen=True)
class HubPath:
    """A parsed ``hf://`` reference."""

    repo_id: str  # "org/name"
    revision: str | None  # branch, tag or commit; None = the default branch
    filename: str | None  # path inside the repo; None = the repo's model (its weight files, found)

    def __str__(self) -> str:
        rev = f"@{self.revision.replace('/', '%2F')}" if self.revision else ""
        return f"{SCHEME}{self.repo_id}{rev}" + (f"/{self.filename}" if self.filename else "")


def is_hub_path(value: object) -> bool:
    """True for strings that start with ``hf://``."""
    return isinstance(value, str) and value.startswith(SCHEME)


def parse_hub_path(value: str) -> HubPath:
    """Split ``hf://ORG/REPO[@REVISION][/FILE]``.

    Raises:
        InvalidArgumentError: not of that form (the message shows the form and an example).

    Example:
        >>> parse_hub_path("hf://timm/resnet18.a1_in1k@main/model.safetensors")
        HubPath(repo_id='timm/resnet18.a1_in1k', revision='main', filename='model.safetensors')
        >>> parse_hub_path("hf://timm/resnet18.a1_in1k")
        HubPath(repo_id='timm/resnet18.a1_in1k', revision=None, filename=None)
    """
    form = ("expected hf://ORG/REPO[@REVISION][/FILE], e.g. "
            "hf://timm/vit_small_patch16_224.augreg_in21k_ft_in1k/model.safetensors")
    if not is_hub_path(value):
        raise InvalidArgumentError(f"{value!r} is not a hub path; {form}")
    parts = value[len(SCHEME):].split("/")
    if len(parts) < 2 or not all(parts):
        raise InvalidArgumentError(f"{value!r}: {form}")
    org, name_rev, file_parts = parts[0], parts[1], parts[2:]
    name, _, revision = name_rev.partition("@")
    revision = unquote(revision) if revision else None
    if not _NAME.match(org) or not _NAME.match(name):
        raise InvalidArgumentError(f"{value!r}: {org}/{name} is not a valid hub repo id; {form}")
    if not file_parts and _looks_like_a_file(name):  # hf://ORG/FILE: the repo was left out
        raise InvalidArgumentError(f"{value!r}: {name} is a file name, not a repo name; {form}")
    if revision is not None and (not _REVISION.match(revision) or ".." in revision):
        raise InvalidArgumentError(f"{value!r}: revision {revision!r} is not a valid branch, tag or commit")
    if any(p in (".", "..") for p in file_parts) or any("\\" in p for p in file_parts):
        raise InvalidArgumentError(f"{value!r}: the file path must stay inside the repo (no '.', '..' or '\\')")
    return HubPath(f"{org}/{name}", revision, "/".join(file_parts) or None)


def _looks_like_a_file(name: str) -> bool:
    from ckpttool.loading import CHECKPOINT_SUFFIXES
    from ckpttool.sharded import INDEX_SUFFIXES

    return name.lower().endswith(CHECKPOINT_SUFFIXES + INDEX_SUFFIXES)


def resolve_hub_path(value: str | HubPath):
    """Download (or, with ``HF_HUB_OFFLINE=1``, look up) a hub file, or a repo's model; returns
    ``ckpttool._hub.HubWeights`` with the local cached path, the resolved commit and the file's sha256
    (a sharded model: its index's, with ``shards``).

    Raises:
        InvalidArgumentError: a malformed reference.
        WeightsUnavailableError: the download failed or the file is not there (one line, with the fix).
    """
    from ckpttool import _hub

    ref = value if isinstance(value, HubPath) else parse_hub_path(value)
    if ref.filename is None:
        return _hub.download_model(ref.repo_id, revision=ref.revision)
    return _hub.download_file(ref.repo_id, ref.filename, revision=ref.revision)

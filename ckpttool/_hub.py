"""The one module that imports huggingface_hub: locate and fetch files from the Hugging Face hub.

We download the weight file ourselves (``hf_hub_download``: its own progress bar, its own cache,
resumable downloads, ``HF_HUB_OFFLINE``) rather than letting ``timm.create_model(pretrained=True)``
do it, so that we know the exact file, its commit and its sha256 for provenance, can pin
``--revision``, and turn every failure into a :class:`WeightsUnavailableError` whose one line says
what happened and what to do. Nothing here ever falls back to random weights: that silent fallback
is the bug this tool exists to prevent.

What huggingface_hub checks and what we add: it compares the received size with the advertised
one; we also compare the file's sha256 with the advertised LFS ETag (the blob name in its cache),
so a body of the right size but the wrong content is refused and removed from the cache.

``HF_HUB_OFFLINE``, ``HF_HUB_CACHE`` and ``HF_ENDPOINT`` are read at call time (huggingface_hub
reads them once at import), so a process can point at a prepared cache after importing. The
download timeout (``HF_HUB_DOWNLOAD_TIMEOUT``) is huggingface_hub's, read at its import.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ckpttool.errors import WeightsUnavailableError

# timm's hub repos hold these; safetensors first (no pickle), the .bin is loaded by our safe loader.
DEFAULT_FILENAMES = ("model.safetensors", "pytorch_model.bin")
# A repo's model, as transformers and timm look for it: each format's shard index before its single file.
REPO_WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json",
                     "pytorch_model.bin")
# What else the caller can do, named in each error: an option of the command that asked. `generate`
# (download_weights) takes --weights-file; a hf:// path (download_file: verify and the other
# commands that take one) can be replaced by a local copy.
WEIGHTS_FILE_FIX = "pass --weights-file PATH"
LOCAL_COPY_FIX = "pass a local copy of the file instead of the hf:// path"
_AUTH = ("log in with `hf auth login` (or set HF_TOKEN to a token with read access) and accept the "
         "model's terms on its hub page")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SIZE_MISMATCH = re.compile(r"should be of size (\d+) but has size (\d+)")


@dataclass(frozen=True)
class HubWeights:
    """A file obtained from the Hugging Face hub (or its local cache)."""

    repo_id: str  # e.g. "timm/vit_small_patch16_224.augreg_in21k_ft_in1k"
    filename: str  # file inside the repo
    revision: str | None  # what was asked for (branch, tag or commit); None = the default branch
    commit: str | None  # the commit the cached file belongs to (what the hub resolved the revision to)
    path: Path  # local file in the cache
    sha256: str = ""  # of the local file
    # A sharded model (``filename`` is its index): every shard, from the index's commit, beside it in the cache.
    shards: tuple[HubWeights, ...] = ()

    def to_dict(self) -> dict:
        out = {"repo_id": self.repo_id, "filename": self.filename, "revision": self.revision,
               "commit": self.commit, "sha256": self.sha256}
        if self.shards:
            out["shards"] = [{"filename": s.filename, "sha256": s.sha256} for s in self.shards]
        return out


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


def hub_endpoint() -> str | None:
    """``HF_ENDPOINT`` now (a mirror or a local hub), or None for huggingface.co."""
    value = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/")
    return value or None


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
        WeightsUnavailableError: not cached while offline, download failed (dropped, stalled,
            truncated, altered), repo/revision/file missing, gated. One line naming the repo and
            file, and the fix. Nothing is left in the cache under the file's name.

    Example:
        >>> w = download_weights("timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k")  # doctest: +SKIP
        >>> w.path.name
        'model.safetensors'
    """
    where = f"{repo_id}" + (f"@{revision}" if revision else "")
    not_cached: list[str] = []
    for filename in filenames:
        got = _fetch(repo_id, filename, revision, not_cached, WEIGHTS_FILE_FIX)
        if got is not None:
            return got
    if not_cached:
        raise _not_cached_error(where, not_cached[0], WEIGHTS_FILE_FIX)
    raise WeightsUnavailableError(
        f"{where} has none of {', '.join(filenames)}; {WEIGHTS_FILE_FIX}")


def download_file(repo_id: str, filename: str, *, revision: str | None = None) -> HubWeights:
    """Fetch one file of a hub repo into the huggingface_hub cache (progress bar on stderr).

    Raises:
        WeightsUnavailableError: as :func:`download_weights`; also when the repo lacks the file.

    Example:
        >>> download_file("timm/resnet18.a1_in1k", "model.safetensors").commit  # doctest: +SKIP
        '491b427b45c94c7fb0e78b5474cc919aff584bbf'
    """
    where = f"{repo_id}" + (f"@{revision}" if revision else "")
    not_cached: list[str] = []
    got = _fetch(repo_id, filename, revision, not_cached, LOCAL_COPY_FIX)
    if got is not None:
        return got
    if not_cached:
        raise _not_cached_error(where, filename, LOCAL_COPY_FIX)
    raise WeightsUnavailableError(
        f"{where} has no file {filename!r} (the hub answered 404 for it); check the file name in the repo")


def download_model(repo_id: str, *, revision: str | None = None) -> HubWeights:
    """Fetch a repo's model: the first of ``REPO_WEIGHT_FILES`` it has, and for a shard index every
    shard it names (each pinned to the commit the index came from, so a branch that moves meanwhile
    cannot mix two saves), one ``hf_hub_download`` per file.

    One file at a time rather than ``snapshot_download(allow_patterns=...)``: the shard names are
    known only once the index is read, a pattern could fetch files the index does not name, and
    each file goes through the same fault mapping and sha256 check as a single file.

    Raises:
        WeightsUnavailableError: as :func:`download_file`; also when the repo has none of the files
            (the message names them) or lacks a shard its index names.
        ShardIndexError: the downloaded index is broken or names a file outside the repo.

    Example:
        >>> download_model("org/llama-shards").shards[0].filename  # doctest: +SKIP
        'model-00001-of-00002.safetensors'
    """
    from ckpttool.sharded import is_shard_index, read_shard_index

    where = _where(repo_id, revision)
    not_cached: list[str] = []
    for filename in REPO_WEIGHT_FILES:
        got = _fetch(repo_id, filename, revision, not_cached, LOCAL_COPY_FIX)
        if got is None:
            continue
        if not is_shard_index(filename):
            return got
        shards = []
        for name in read_shard_index(got.path).shards:
            shard = _fetch(repo_id, name, got.commit or revision, not_cached, LOCAL_COPY_FIX)
            if shard is None:
                if not_cached:
                    raise _not_cached_error(_where(repo_id, got.commit or revision), name, LOCAL_COPY_FIX)
                raise WeightsUnavailableError(
                    f"{where} has {filename} but not the shard {name!r} it names (the hub answered 404 for it); "
                    "the repo is incomplete; tell its owners, or pass a local copy of the model")
            shards.append(shard)
        return replace(got, shards=tuple(shards))
    looked_for = ", ".join(REPO_WEIGHT_FILES)
    if not_cached:
        raise _not_cached_error(where, None, LOCAL_COPY_FIX, what=f"none of {looked_for} is")
    raise WeightsUnavailableError(
        f"{where} has none of {looked_for} (the weight files transformers and timm look for); "
        f"name its weight file: hf://{where}/FILE")


# -- internals ------------------------------------------------------------------------------------

def _fetch(repo_id: str, filename: str, revision: str | None, not_cached: list[str],
           fix: str) -> HubWeights | None:
    """One file; None when the repo does not have it (or, offline, when it is not cached). ``fix``:
    the alternative each error names (``WEIGHTS_FILE_FIX`` or ``LOCAL_COPY_FIX``)."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    except ImportError as e:  # pragma: no cover - it is a declared dependency
        raise WeightsUnavailableError(
            f"huggingface_hub is not installed; `pip install huggingface_hub`, or {fix}") from e

    offline = is_offline()
    try:
        local = hf_hub_download(repo_id, filename, revision=revision, cache_dir=hub_cache_dir(),
                                endpoint=hub_endpoint(), local_files_only=offline)
    except LocalEntryNotFoundError as e:
        if offline:
            not_cached.append(filename)  # another candidate may be cached
            return None
        raise _translate(e, repo_id, filename, revision, fix) from e
    except EntryNotFoundError as e:
        if _status(e) in (401, 403):
            raise _translate(e, repo_id, filename, revision, fix) from e
        return None  # the repo does not have this file
    except (*_transport_errors(), OSError, ValueError) as e:
        raise _translate(e, repo_id, filename, revision, fix) from e
    local_path = Path(local)
    sha = _check_blob(local_path, repo_id, filename, revision)
    return HubWeights(repo_id=repo_id, filename=filename, revision=revision,
                      commit=_commit_from_cache_path(local_path, filename), path=local_path, sha256=sha)


def _check_blob(path: Path, repo_id: str, filename: str, revision: str | None) -> str:
    """sha256 of the downloaded file; compared with the hub's LFS ETag, which names the cached blob.

    huggingface_hub checks the size only: a body of the right length but other bytes (a broken
    proxy, a bad mirror, disk corruption) would otherwise be used. A mismatch removes the blob and
    its snapshot entry, so the next run downloads again instead of reusing the bad copy.
    """
    from ckpttool.hashing import file_sha256

    sha = file_sha256(path)
    blob = path.resolve()
    etag = blob.name
    if path.is_symlink() and _SHA256.match(etag) and etag != sha:
        for p in (path, blob):
            try:
                p.unlink()
            except OSError:
                pass
        raise WeightsUnavailableError(
            f"downloaded {_where(repo_id, revision)}/{filename} does not match the hub's sha256: got {sha}, "
            f"the hub advertised {etag} (the transfer was altered; the bad copy was removed from the cache); "
            "run again, and check any proxy or HF_ENDPOINT mirror in between")
    return sha


def _translate(e: BaseException, repo_id: str, filename: str, revision: str | None,
               fix: str) -> WeightsUnavailableError:
    """One clear line for whatever huggingface_hub or its HTTP stack raised."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{_where(repo_id, revision)}/{filename}"
    host = hub_endpoint() or constants.ENDPOINT
    cause = _root_cause(e)
    status = _status(cause)
    if isinstance(cause, GatedRepoError) or status in (401, 403) and not isinstance(cause, RevisionNotFoundError):
        return WeightsUnavailableError(
            f"hub repository {repo_id} is gated or private (HTTP {status}) and this request was not allowed: "
            f"{_AUTH}, then run again; or {fix}")
    if isinstance(cause, RepositoryNotFoundError):
        return WeightsUnavailableError(
            f"hub repository {repo_id} not found on {host} (HTTP {status}); check the model name and tag, "
            f"or, if it is private, {_AUTH}; or {fix}")
    if isinstance(cause, RevisionNotFoundError):
        return WeightsUnavailableError(
            f"revision {revision!r} not found in {repo_id}; pass an existing branch, tag or commit")
    if status is not None:
        return WeightsUnavailableError(
            f"the hub at {host} answered HTTP {status} for {where}; nothing was written; "
            f"try again later, or {fix}")
    kind = _transport_kind(cause)
    if kind == "timeout":
        return WeightsUnavailableError(
            f"download of {where} from {host} stalled: no data for {constants.HF_HUB_DOWNLOAD_TIMEOUT} s "
            "(HF_HUB_DOWNLOAD_TIMEOUT), also after huggingface_hub's retries; nothing was written; "
            "run again when the network is back (the download resumes)")
    if kind == "network":
        return WeightsUnavailableError(
            f"connection to {host} failed or dropped while downloading {where}, also after huggingface_hub's "
            f"retries ({_first_line(cause)}); nothing was written; run again when the network is back "
            "(the download resumes)")
    m = _SIZE_MISMATCH.search(str(cause))
    if m:
        return WeightsUnavailableError(
            f"download of {where} is incomplete: received {m[2]} bytes, the hub advertised {m[1]}; "
            "nothing was written; run again")
    if isinstance(e, LocalEntryNotFoundError):
        return WeightsUnavailableError(
            f"could not download {where} from {host} and it is not in the cache: {_first_line(cause)}; "
            f"{_refill(fix)}")
    return WeightsUnavailableError(f"could not download {where}: {_first_line(cause)}; {_refill(fix)}")


def _root_cause(e: BaseException) -> BaseException:
    """The most telling exception in the chain: huggingface_hub wraps HTTP and network failures in
    LocalEntryNotFoundError / ValueError with the original as ``__cause__``."""
    seen = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if _status(cur) is not None or _transport_kind(cur) is not None:
            return cur
        cur = cur.__cause__ or cur.__context__
    return e


def _status(e: BaseException) -> int | None:
    response = getattr(e, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def _transport_errors() -> tuple[type[BaseException], ...]:
    """HTTP-stack exception bases of whichever stack this huggingface_hub uses (httpx2, httpx or requests)."""
    found: list[type[BaseException]] = []
    for module, names in (("httpx2", ("HTTPError", "InvalidURL", "StreamError")),
                          ("httpx", ("HTTPError", "InvalidURL", "StreamError")),
                          ("requests", ("RequestException",)), ("urllib3.exceptions", ("HTTPError",))):
        mod = _maybe_import(module)
        found += [getattr(mod, n) for n in names if mod is not None and isinstance(getattr(mod, n, None), type)]
    return tuple(found)


def _transport_kind(e: BaseException) -> str | None:
    """'timeout' | 'network' | None, by class name across httpx2 / httpx / requests / urllib3."""
    names = {c.__name__ for c in type(e).__mro__}
    module = type(e).__module__.split(".")[0]
    if module not in {"httpx2", "httpx", "httpcore", "requests", "urllib3", "socket", "builtins"}:
        return None
    if names & {"TimeoutException", "Timeout", "TimeoutError", "ReadTimeoutError"}:
        return "timeout"
    if names & {"NetworkError", "RemoteProtocolError", "ProtocolError", "ConnectError", "ConnectionError",
                "ChunkedEncodingError", "ProxyError", "NewConnectionError"}:
        return "network"
    return None


def _maybe_import(name: str):
    import importlib
    import sys

    if name.split(".")[0] not in sys.modules:  # only stacks huggingface_hub actually loaded
        return None
    try:
        return importlib.import_module(name)
    except ImportError:  # pragma: no cover
        return None


def _refill(fix: str) -> str:
    return f"run once with network access to fill the cache, or {fix}"


def _not_cached_error(where: str, filename: str | None, fix: str, *,
                      what: str = "the file is not") -> WeightsUnavailableError:
    from huggingface_hub.constants import HF_HUB_CACHE

    cache = hub_cache_dir() or HF_HUB_CACHE
    name = where if filename is None else f"{where}/{filename}"
    return WeightsUnavailableError(
        f"pretrained weights {name} unavailable: HF_HUB_OFFLINE is set and {what} "
        f"in {cache}; {_refill(fix)}")


def _where(repo_id: str, revision: str | None) -> str:
    return repo_id + (f"@{revision}" if revision else "")


def _commit_from_cache_path(path: Path, filename: str) -> str | None:
    # Cache layout: .../models--org--name/snapshots/<commit>/<filename>
    parts = path.parts
    depth = len(Path(filename).parts)
    if len(parts) > depth + 1 and parts[-depth - 2] == "snapshots":
        return parts[-depth - 1]
    return None


def _first_line(e: BaseException) -> str:
    text = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return text[0] if text else type(e).__name__


# -- remote reads (verify --remote) ----------------------------------------------------------------

@dataclass(frozen=True)
class RemoteFile:
    """A hub file read in place, by HTTP range requests (``verify hf://... --remote``)."""

    repo_id: str
    filename: str
    commit: str | None  # the commit the hub resolved the revision to
    size: int
    url: str  # where its bytes are served (after the hub's redirect to its storage)


def remote_file(repo_id: str, filename: str, *, revision: str | None = None) -> RemoteFile | None:
    """Locate a hub file without downloading it (one HEAD request); None when the repo lacks it.

    Raises:
        WeightsUnavailableError: offline (nothing remote can be read), the repo or revision does not
            exist, access is refused, or the network failed; one line saying what to do.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError

    fix = "drop --remote to download the files instead"
    if is_offline():
        raise WeightsUnavailableError(
            f"{_where(repo_id, revision)}: --remote reads the hub and HF_HUB_OFFLINE is set; unset it, or {fix}")
    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=hub_endpoint())
    try:
        meta = get_hf_file_metadata(url)
    except EntryNotFoundError as e:
        if _status(e) in (401, 403):
            raise _translate(e, repo_id, filename, revision, fix) from e
        return None
    except (*_transport_errors(), OSError, ValueError) as e:
        raise _translate(e, repo_id, filename, revision, fix) from e
    if meta.size is None:
        raise WeightsUnavailableError(f"{_where(repo_id, revision)}/{filename}: the hub did not say its size; {fix}")
    return RemoteFile(repo_id, filename, meta.commit_hash, int(meta.size), meta.location or url)


def read_range(f: RemoteFile, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of a remote file: one HTTP range request (a few retries on transient faults).

    Raises:
        WeightsUnavailableError: the request failed, or the server did not return exactly those bytes.
    """
    from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, http_backoff

    fix = "drop --remote to download the files instead"
    try:
        r = http_backoff("GET", f.url, headers={**build_hf_headers(), "range": f"bytes={start}-{end - 1}"},
                         max_retries=2, base_wait_time=0.5, max_wait_time=2)
        hf_raise_for_status(r)
    except (*_transport_errors(), OSError, ValueError) as e:
        raise _translate(e, f.repo_id, f.filename, f.commit, fix) from e
    data = r.content
    if r.status_code != 206 or len(data) != end - start:
        raise WeightsUnavailableError(
            f"{f.repo_id}/{f.filename}: the server answered a range request for {end - start} bytes with "
            f"{len(data)} (HTTP {r.status_code}); it does not serve ranges; {fix}")
    return data

"""A local Hugging Face hub for tests: standard library only, two threaded HTTP servers.

It answers what ``huggingface_hub.hf_hub_download`` asks, the way huggingface.co does for a file
stored with LFS:

- the hub (``HF_ENDPOINT``): ``HEAD|GET /{org}/{name}/resolve/{revision}/{file}`` answers ``302``
  with ``X-Repo-Commit`` (the resolved commit), ``X-Linked-Etag`` (the file's sha256),
  ``X-Linked-Size`` and ``Location`` pointing at the CDN. Errors carry the ``X-Error-Code``
  header the client maps to its exception types (``RepoNotFound``, ``RevisionNotFound``,
  ``EntryNotFound``, ``GatedRepo``).
- the CDN (another port, so another origin: the client does not follow the redirect for
  metadata and drops the auth header, as with the real CDN): ``GET /blobs/{sha256}`` with
  ``Content-Length`` and ``Range`` support (``206`` + ``Content-Range``), which the client uses to
  resume a dropped download.

Faults are set per test on :attr:`LocalHub.fault` and apply to CDN downloads (of the blobs in
:attr:`LocalHub.fault_blobs` only, when set; ``hub_fault`` to the hub's metadata answers). Every
request is logged in :attr:`LocalHub.requests`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_BLOB = re.compile(r"^/blobs/(?P<sha>[0-9a-f]{64})$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")

# CDN faults (LocalHub.fault):
FAULTS = (
    None,
    "drop",  # send half the body, then close the connection; every later request is closed unanswered
    "drop_once",  # the first download drops half-way; later (Range) requests are served: the client resumes
    "stall",  # send half the body, then send nothing more (every later request stalls too)
    "short",  # serve a truncated file with its own, consistent Content-Length (less than advertised)
    "corrupt",  # serve the advertised number of bytes, but not the advertised content (sha256 differs)
    "500",  # the CDN answers 500
)
HUB_FAULTS = (None, "500", "401", "403")  # hub metadata answers: server error, or gated (401/403)


@dataclass
class Repo:
    """A model repository: refs (branch -> commit) and each commit's files."""

    refs: dict[str, str]
    commits: dict[str, dict[str, bytes]]
    gated: bool = False


@dataclass
class LocalHub:
    """Hub + CDN servers on 127.0.0.1. Use as a context manager or call start()/stop()."""

    repos: dict[str, Repo] = field(default_factory=dict)
    fault: str | None = None
    fault_blobs: set[str] | None = None  # when set, CDN faults hit only these blobs (sha256s): one shard
    hub_fault: str | None = None
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range)

    def __post_init__(self) -> None:
        self._release = threading.Event()  # wakes stalled handlers on stop()
        self._faulted = False
        self._lock = threading.Lock()
        self._hub = _server(self, _HubHandler)
        self._cdn = _server(self, _CdnHandler)
        self._threads: list[threading.Thread] = []
        self._sha256: dict[int, tuple[bytes, str]] = {}  # id(blob) -> (blob, its sha256)

    # -- repository content ------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: dict[str, bytes], *, commit: str, branch: str = "main",
                 gated: bool = False) -> None:
        """Create ``repo_id`` whose ``branch`` points at ``commit`` holding ``files``."""
        self.repos[repo_id] = Repo(refs={branch: commit}, commits={commit: dict(files)}, gated=gated)

    def add_commit(self, repo_id: str, files: dict[str, bytes], *, commit: str, branch: str | None = None) -> None:
        """Add a commit to an existing repo, optionally moving ``branch`` to it."""
        repo = self.repos[repo_id]
        repo.commits[commit] = dict(files)
        if branch is not None:
            repo.refs[branch] = commit

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._hub.server_address[1]}"

    @property
    def cdn(self) -> str:
        return f"http://127.0.0.1:{self._cdn.server_address[1]}"

    def start(self) -> LocalHub:
        for srv in (self._hub, self._cdn):
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._release.set()
        for srv in (self._hub, self._cdn):
            srv.shutdown()
            srv.server_close()
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def reset(self) -> None:
        """No repos, no faults, no request log: a fresh hub on the same ports."""
        self.repos.clear()
        self.fault = self.hub_fault = self.fault_blobs = None
        self.requests.clear()
        self._faulted = False

    def downloads(self) -> list[tuple[str, str, str | None]]:
        """The CDN GETs so far."""
        return [r for r in self.requests if r[1].startswith("/blobs/")]

    # -- lookups used by the handlers ---------------------------------------------------------
    def sha256_of(self, data: bytes) -> str:
        """sha256 of a blob, computed once per blob (range requests ask for the same blobs often)."""
        known = self._sha256.get(id(data))
        if known is None or known[0] is not data:
            known = self._sha256[id(data)] = (data, hashlib.sha256(data).hexdigest())
        return known[1]

    def blob(self, sha: str) -> bytes | None:
        for repo in self.repos.values():
            for files in repo.commits.values():
                for data in files.values():
                    if self.sha256_of(data) == sha:
                        return data
        return None


def hub_env(hub: LocalHub | None, home: Path, **extra: str) -> dict[str, str]:
    """A clean environment for a client process: this hub, a private cache under ``home``, no token, no
    proxy, short timeouts."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING_FACE", "TRANSFORMERS_")) and "proxy" not in k.lower()}
    env.update(HF_HOME=str(home / "hf-home"), HF_HUB_CACHE=str(home / "hf-cache"), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_IMPLICIT_TOKEN="1", HF_HUB_DOWNLOAD_TIMEOUT="1", HF_HUB_ETAG_TIMEOUT="5",
               NO_PROXY="127.0.0.1,localhost", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", COLUMNS="200")
    if hub is not None:
        env["HF_ENDPOINT"] = hub.endpoint
    env.update(extra)
    return env


def _server(hub: LocalHub, handler: type) -> ThreadingHTTPServer:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    srv.hub = hub  # type: ignore[attr-defined]
    return srv


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    @property
    def hub(self) -> LocalHub:
        return self.server.hub  # type: ignore[attr-defined]

    def log_message(self, format, *args):  # noqa: A002 - keep test output clean
        pass

    def _head(self, status: int, headers: dict[str, str], length: int) -> None:
        """Status line and headers; one request per connection."""
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(length))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self._head(status, headers, len(body))
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _error(self, status: int, code: str | None, message: str, extra: dict[str, str] | None = None) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, headers, json.dumps({"error": message}).encode())


class _HubHandler(_Handler):
    def do_HEAD(self):  # noqa: N802 - http.server naming
        self._resolve()

    def do_GET(self):  # noqa: N802
        self._resolve()

    def _resolve(self) -> None:
        hub = self.hub
        hub.requests.append((self.command, self.path, self.headers.get("Range")))
        m = _RESOLVE.match(self.path.split("?")[0])
        if m is None:
            return self._error(404, None, "Not Found")
        repo_id, rev, filename = m["repo"], unquote(m["rev"]), unquote(m["file"])
        repo = hub.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        if hub.hub_fault == "500":
            return self._error(500, None, "Internal Error - We're working hard to fix this as soon as possible!",
                               {"Retry-After": "0"})
        if repo.gated or hub.hub_fault in ("401", "403"):
            status = 403 if hub.hub_fault == "403" else 401
            return self._error(status, "GatedRepo", f"Access to model {repo_id} is restricted. You must have "
                                                    "access to it and be authenticated to access it. Please log in.")
        commit = repo.refs.get(rev, rev if rev in repo.commits else None)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        data = repo.commits[commit].get(filename)
        if data is None:
            return self._error(404, "EntryNotFound", f"{filename} does not exist on \"{rev}\"",
                               {"X-Repo-Commit": commit})
        sha = hub.sha256_of(data)
        self._send(302, {
            "X-Repo-Commit": commit,
            "X-Linked-Etag": f'"{sha}"',
            "X-Linked-Size": str(len(data)),
            "ETag": f'"{hashlib.sha1(data).hexdigest()}"',  # git's pointer-file id; the client prefers X-Linked-Etag
            "Location": f"{hub.cdn}/blobs/{sha}",
        })


class _CdnHandler(_Handler):
    def do_GET(self):  # noqa: N802
        hub = self.hub
        rng = self.headers.get("Range")
        hub.requests.append(("GET", self.path, rng))
        m = _BLOB.match(self.path.split("?")[0])
        data = hub.blob(m["sha"]) if m else None
        if data is None:
            return self._error(404, None, "NoSuchKey")
        fault = hub.fault if hub.fault_blobs is None or m["sha"] in hub.fault_blobs else None
        with hub._lock:
            first = not hub._faulted
            hub._faulted = hub._faulted or fault is not None
        if fault == "500":
            return self._error(500, None, "Internal Server Error")
        if fault in ("drop", "stall") and not first:
            if fault == "drop":
                return self._hang_up()
            hub._release.wait(30)
            return self._hang_up()
        if fault == "short":
            data = data[: len(data) // 2]
        elif fault == "corrupt":
            data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
        start, end = 0, len(data) - 1
        status = 200
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        if rng and (r := _RANGE.match(rng)) and fault not in ("short", "corrupt"):
            start = int(r[1])
            end = int(r[2]) if r[2] else len(data) - 1
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        body = data[start: end + 1]
        self._head(status, headers, len(body))
        if fault in ("drop", "drop_once", "stall") and first:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if fault == "stall":
                hub._release.wait(30)
            return self._hang_up()
        self.wfile.write(body)

    def _hang_up(self) -> None:
        """Close the TCP connection at once, mid-response or before any answer."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

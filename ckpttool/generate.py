"""Build init checkpoints from timm, check what was built, and write them safely.

Flow: resolve the architecture and dataset -> obtain the weights (hub via ``_hub``, a local file via
the safe loader, or timm's own random init under a seed) -> ``timm.create_model`` (timm's own
``checkpoint_filter_fn`` resamples patch and position embeddings to ``img_size``/``patch_size``)
-> compare every built tensor with the source (``pretrained`` / ``resampled`` / ``fresh``) -> run
the verdict on the built tensors -> refuse if it is not what was asked -> under a lock: back up the
old file, write atomically, update ``MANIFEST.json``.

There is no fallback from ``pretrained`` to random weights: an unavailable download is a
:class:`WeightsUnavailableError` and nothing is written.

Example:
    >>> from ckpttool.generate import GenerateRequest, generate_init
    >>> result = generate_init(GenerateRequest(arch="vit_small", dataset="cifar10",
    ...                                        img_size=32, patch_size=4))  # doctest: +SKIP
    >>> result.built.verdict.verdict, result.built.origin_counts()
    ('pretrained', {'pretrained': 148, 'resampled': 2, 'fresh': 2})
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckpttool.archs import ArchSpec, DatasetSpec, resolve_arch, resolve_dataset
from ckpttool.errors import (
    InvalidArgumentError,
    OutputError,
    VerdictMismatchError,
    WeightsUnavailableError,
)
from ckpttool.guard import judge_state_dict

INITS = ("pretrained", "random")
WEIGHT_INITS = ("", "jax", "jax_nlhb", "moco")  # timm ViT init modes ('' = timm's default)
ORIGINS = ("pretrained", "resampled", "fresh")
MATRIX_ARCHS = ("vit_tiny", "vit_small", "vit_base")
MATRIX_DATASETS = ("cifar10", "cifar100")
DEFAULT_OUT_DIR = Path("init_model")
DEFAULT_SUFFIX = ".pth.tar"
OUTPUT_SUFFIXES = (".safetensors", ".pth.tar", ".pth", ".pt")
_OPTION_OF_KWARG = {"img_size": "--img-size", "patch_size": "--patch-size", "weight_init": "--weight-init",
                    "num_classes": "--num-classes"}
_SHOW = 5  # names listed in one-line messages before "(+N more)"


@dataclass(frozen=True)
class GenerateRequest:
    """What to build and where to put it (one file)."""

    arch: str  # vit_tiny | vit_small | vit_base | any timm name, optionally "name.tag"
    dataset: str | None = None  # cifar10 | cifar100 | any label when num_classes is given
    init: str = "pretrained"  # pretrained | random
    num_classes: int | None = None  # overrides the dataset's class count (fresh head of this size)
    img_size: int | None = None  # input size; pretrained position embeddings are resampled to it
    patch_size: int | None = None  # ViT patch size; pretrained patch embeddings are resampled to it
    revision: str | None = None  # hub branch/tag/commit to pin (pretrained from the hub only)
    weights_file: Path | None = None  # local .safetensors/.pth instead of the hub (pretrained only)
    seed: int = 0  # torch.manual_seed before create_model: random init and fresh heads are reproducible
    weight_init: str | None = None  # timm ViT init mode for --init random: '', jax, jax_nlhb, moco
    model_kwargs: tuple[tuple[str, Any], ...] = ()  # extra timm create_model kwargs (e.g. depth), as items
    out: Path | None = None  # destination; default: out_dir/{arch}_{dataset}_{init}_init.pth.tar
    out_dir: Path = DEFAULT_OUT_DIR  # folder for the default name (holds MANIFEST.json and backup_old/)
    force: bool = False  # replace an existing destination (backed up first)


@dataclass(frozen=True)
class TensorOrigin:
    """Where one built tensor came from."""

    name: str
    origin: str  # "pretrained" (equal to the source) | "resampled" (source reshaped) | "fresh" (timm init)
    shape: tuple[int, ...]
    source_shape: tuple[int, ...] | None  # shape in the source weights, None if absent
    head: bool  # classifier head (fresh on purpose when the class count changes)

    def to_dict(self) -> dict:
        return {"name": self.name, "origin": self.origin, "shape": list(self.shape),
                "source_shape": list(self.source_shape) if self.source_shape is not None else None,
                "head": self.head}


@dataclass(frozen=True)
class WeightsSource:
    """Provenance of the weights: hub file, local file, or a seeded random init."""

    kind: str  # "hub" | "file" | "random"
    repo_id: str | None = None  # hub
    filename: str | None = None  # hub: file in the repo
    revision: str | None = None  # hub: as requested
    commit: str | None = None  # hub: commit of the cached file
    path: str | None = None  # the local file read (hub cache path or --weights-file)
    sha256: str | None = None  # of that file
    seed: int | None = None  # torch seed used for create_model (random parts)
    weight_init: str | None = None  # random: timm init mode

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def describe(self) -> str:
        if self.kind == "hub":
            rev = self.commit or self.revision or "default branch"
            return f"hub {self.repo_id}/{self.filename} @ {rev}"
        if self.kind == "file":
            return f"file {self.path}"
        mode = self.weight_init or "default"
        return f"timm random init (seed {self.seed}, weight-init {mode})"


@dataclass(frozen=True)
class BuiltInit:
    """A built state dict, before anything is written, with what is known about it."""

    arch: ArchSpec
    dataset: DatasetSpec
    init: str  # what was asked
    img_size: int | tuple[int, ...] | None  # the model's input size (None for models without one)
    patch_size: int | tuple[int, ...] | None
    model_kwargs: Mapping[str, Any]
    source: WeightsSource
    origins: tuple[TensorOrigin, ...]  # model order
    unused_source_tensors: tuple[str, ...]  # source tensors no model tensor came from (head excluded)
    verdict: Any  # ckpttool.verdict.Verdict of the built tensors (head excluded)
    state_dict: dict = field(repr=False, compare=False)  # name -> torch.Tensor

    def origin_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(ORIGINS, 0)
        for o in self.origins:
            counts[o.origin] += 1
        return counts

    def not_pretrained(self) -> tuple[TensorOrigin, ...]:
        return tuple(o for o in self.origins if o.origin != "pretrained")

    def metadata(self) -> dict:
        """Provenance stored in the file and the manifest: plain types only."""
        return {
            "tool": "ckpttool generate",
            "arch": self.arch.label,
            "timm_model": self.arch.model_name,
            "timm_tag": self.arch.tag,
            "init": self.init,
            "dataset": self.dataset.name,
            "num_classes": self.dataset.num_classes,
            "img_size": _plain(self.img_size),
            "patch_size": _plain(self.patch_size),
            "model_kwargs": {k: _plain(v) for k, v in self.model_kwargs.items()},
            "source": self.source.to_dict(),
            "origins": self.origin_counts(),
            "not_pretrained": {o.name: o.origin for o in self.not_pretrained()},
            "unused_source_tensors": list(self.unused_source_tensors),
            "verdict": self.verdict.verdict,
            "verdict_reason": self.verdict.reason,
            "versions": library_versions(),
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        }


@dataclass(frozen=True)
class GeneratedInit:
    """A file written by :func:`generate_init`."""

    path: Path
    sha256: str
    size: int
    built: BuiltInit
    backup: Any  # ckpttool.backup.BackupRecord of the replaced file, or None
    manifest: Path  # the MANIFEST.json that now pins it
    metadata: Mapping[str, Any]  # what was stored in the file

    def to_dict(self) -> dict:
        b = self.built
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "size": self.size,
            "arch": b.arch.label,
            "timm_model": b.arch.full_name,
            "dataset": b.dataset.name,
            "num_classes": b.dataset.num_classes,
            "init": b.init,
            "source": b.source.to_dict(),
            "origins": b.origin_counts(),
            "not_pretrained": [o.to_dict() for o in b.not_pretrained()],
            "unused_source_tensors": list(b.unused_source_tensors),
            "verdict": b.verdict.to_dict(),
            "backup": self.backup.to_dict() if self.backup is not None else None,
            "manifest": str(self.manifest),
        }


@dataclass(frozen=True)
class GenerateProgress:
    """A progress event of :func:`generate_matrix`."""

    index: int  # 0-based position in the matrix
    total: int
    request: GenerateRequest
    stage: str  # "start" | "done" | "failed"
    result: GeneratedInit | None = None
    error: str | None = None  # the one-line message when stage == "failed"


@dataclass(frozen=True)
class GenerateFailure:
    """A file of a batch that was not written, and why."""

    request: GenerateRequest
    path: Path | None  # the destination it would have had (None if the request itself was invalid)
    error: str  # the one-line message
    kind: str  # the error class name, e.g. "WeightsUnavailableError"
    exit_code: int  # what this failure alone would exit with

    def to_dict(self) -> dict:
        return {"arch": self.request.arch, "dataset": self.request.dataset, "init": self.request.init,
                "path": str(self.path) if self.path is not None else None, "error": self.error, "kind": self.kind}


@dataclass(frozen=True)
class BatchOutcome:
    """What :func:`generate_each` wrote and what failed."""

    written: tuple[GeneratedInit, ...]
    failed: tuple[GenerateFailure, ...]

    @property
    def exit_code(self) -> int:
        """0 when every file was written, else the worst failure's exit code."""
        return max((f.exit_code for f in self.failed), default=0)


# -- public functions -----------------------------------------------------------------------------

def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the built tensors."""
    import numpy
    import safetensors
    import timm
    import torch

    import ckpttool

    return {"ckpttool": ckpttool.__version__, "torch": torch.__version__, "timm": timm.__version__,
            "safetensors": safetensors.__version__, "numpy": numpy.__version__}


def resolve_output_path(request: GenerateRequest, arch: ArchSpec | None = None,
                        dataset: DatasetSpec | None = None) -> Path:
    """The destination: ``--out``, or ``out_dir/{arch}_{dataset}_{init}_init.pth.tar``.

    Raises:
        InvalidArgumentError: the suffix is not one we write.
    """
    if request.out is not None:
        out = Path(request.out)
        if not out.name.endswith(OUTPUT_SUFFIXES):
            raise InvalidArgumentError(
                f"--out {out}: unsupported suffix; use one of {', '.join(OUTPUT_SUFFIXES)}")
        return out
    arch = arch or resolve_arch(request.arch)
    dataset = dataset or resolve_dataset(request.dataset, request.num_classes)
    return Path(request.out_dir) / f"{arch.label}_{dataset.name}_{request.init}_init{DEFAULT_SUFFIX}"


def build_init(request: GenerateRequest) -> BuiltInit:
    """Build the state dict a request describes, compare it with its source and judge it.

    Writes nothing.

    Raises:
        InvalidArgumentError: bad arch/dataset/option combination, or weights that do not fit.
        WeightsUnavailableError: pretrained weights could not be obtained.
    """
    _check_request(request)
    arch = resolve_arch(request.arch)
    dataset = resolve_dataset(request.dataset, request.num_classes)
    extra = dict(request.model_kwargs)
    kwargs = {**extra, "num_classes": dataset.num_classes}
    if request.img_size is not None:
        kwargs["img_size"] = request.img_size
    if request.patch_size is not None:
        kwargs["patch_size"] = request.patch_size

    import torch

    if request.init == "random":
        if request.weight_init is not None:
            kwargs["weight_init"] = request.weight_init
        torch.manual_seed(request.seed)
        model = _create_model(arch.model_name, arch, kwargs, pretrained=False)
        source_sd: dict = {}
        source = WeightsSource(kind="random", seed=request.seed, weight_init=request.weight_init or "")
    else:
        _dry_build(arch, kwargs)  # argument errors before a long download
        source_sd, source = _load_source(request, arch)
        overlay: dict[str, Any] = {"state_dict": source_sd}
        head_names = _classifier_names(arch)
        head_rows = next((source_sd[f"{c}.weight"].shape[0] for c in head_names if f"{c}.weight" in source_sd), None)
        if head_rows is not None:
            overlay["num_classes"] = int(head_rows)  # timm keeps the head only if the class count matches
        torch.manual_seed(request.seed)
        try:
            model = _create_model(arch.full_name, arch, kwargs, pretrained=True, overlay=overlay)
        except (RuntimeError, KeyError, ValueError) as e:
            raise _fit_error(arch, kwargs, source, source_sd, cause=e) from e
        if isinstance(getattr(model, "pretrained_cfg", None), dict):
            model.pretrained_cfg.pop("state_dict", None)  # do not keep a second copy alive
    state_dict = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    heads = _head_tensor_names(model, state_dict)
    img_size, patch_size = _input_geometry(model)
    del model
    origins = _compare_origins(state_dict, source_sd, heads, request.init)
    unused = tuple(sorted(k for k in source_sd if k not in state_dict and not _is_head_name(k, heads)))
    if request.init == "pretrained" and unused:
        raise _fit_error(arch, kwargs, source, source_sd, unused=unused, model_sd=state_dict)
    return BuiltInit(
        arch=arch, dataset=dataset, init=request.init, img_size=img_size, patch_size=patch_size,
        model_kwargs=extra, source=source, origins=origins, unused_source_tensors=unused,
        verdict=judge_state_dict(state_dict), state_dict=state_dict,
    )


def check_built(built: BuiltInit) -> None:
    """Refuse a build that is not what was asked.

    A ``pretrained`` build may have only its head fresh, and its verdict must be ``pretrained``; a
    ``random`` build must judge ``random``, or ``inconclusive`` where the model is too small for any
    verdict (its seed is its provenance; nothing can be confirmed either way).

    Raises:
        VerdictMismatchError: with ``evidence`` = the Verdict and ``built`` = the BuiltInit.
    """
    if built.init == "pretrained":
        fresh = [o.name for o in built.origins if o.origin == "fresh" and not o.head]
        if fresh:
            err = VerdictMismatchError(
                f"--init pretrained: {len(fresh)} non-head tensors would be freshly initialised instead of "
                f"loaded from {built.source.describe()}: {_names(fresh)}; nothing was written; "
                f"pass weights for {built.arch.full_name}", evidence=built.verdict)
            err.built = built
            raise err
    if built.verdict.verdict != built.init and (built.init, built.verdict.verdict) != ("random", "inconclusive"):
        err = VerdictMismatchError(
            f"--init {built.init} built weights whose verdict is {built.verdict.verdict} "
            f"({built.verdict.reason}); source: {built.source.describe()}; nothing was written",
            evidence=built.verdict)
        err.built = built
        raise err


def generate_init(request: GenerateRequest) -> GeneratedInit:
    """Build, check, and write one init file; back up what it replaces; pin it in the manifest.

    Raises:
        OutputError: the destination exists (without ``force``), or writing failed (the old file,
            if any, is untouched and no partial file is left under the final name).
        ManifestError: the folder's MANIFEST.json is corrupted (nothing is written).
        VerdictMismatchError: the built weights are not what was asked (nothing is written).
        InvalidArgumentError, WeightsUnavailableError: see :func:`build_init`.
    """
    from ckpttool.backup import backup_file, ensure_folder
    from ckpttool.locking import file_lock
    from ckpttool.manifest import ManifestEntry, manifest_path_for, read_manifest, update_manifest
    from ckpttool.saving import save_checkpoint

    _check_request(request)
    out = resolve_output_path(request)
    if out.exists() and not request.force:  # fail fast, before the expensive build
        raise _exists_error(out)
    if out.exists() and not out.is_file():
        raise OutputError(f"{out} exists and is not a file; choose another --out")
    _check_writable_folder(out.parent)  # fail fast, but create nothing until there is something to write
    manifest_path = manifest_path_for(out)
    read_manifest(manifest_path, missing_ok=True)  # a corrupted manifest stops us before the build

    built = build_init(request)
    check_built(built)
    metadata = built.metadata()
    ensure_folder(out.parent)
    with file_lock(out):
        # another process may have written it while we were building
        read_manifest(manifest_path, missing_ok=True)
        backup = None
        if out.exists():
            if not request.force:
                raise _exists_error(out)
            backup = backup_file(out, reason="replaced by generate")
        sha = save_checkpoint(out, built.state_dict, metadata=metadata)
        size = out.stat().st_size
        from ckpttool.digest import file_weights_digests

        weights = next(iter(file_weights_digests(out).values()))  # of the file as written, read back
        rel = out.resolve().relative_to(manifest_path.parent.resolve()).as_posix()
        update_manifest(manifest_path, ManifestEntry(path=rel, sha256=sha, size=size,
                                                     expected_verdict=built.verdict.verdict,
                                                     provenance=metadata, weights_digest=weights))
    return GeneratedInit(path=out, sha256=sha, size=size, built=built, backup=backup,
                         manifest=manifest_path, metadata=metadata)


def matrix_requests(base: GenerateRequest, *, archs: Sequence[str] = MATRIX_ARCHS,
                    datasets: Sequence[str] = MATRIX_DATASETS,
                    inits: Sequence[str] = ("pretrained",)) -> list[GenerateRequest]:
    """The ``--all`` matrix: archs x datasets x inits, each with the default file name."""
    if base.out is not None:
        raise InvalidArgumentError("--out names one file; with --all use --out-dir")
    return [dataclasses.replace(base, arch=a, dataset=d, init=i, num_classes=None)
            for a in archs for d in datasets for i in inits]


def generate_matrix(requests: Iterable[GenerateRequest], *,
                    progress: Callable[[GenerateProgress], None] | None = None) -> list[GeneratedInit]:
    """Generate several files in order; stops at the first error (files already written stay).

    Args:
        requests: e.g. from :func:`matrix_requests`.
        progress: called with a :class:`GenerateProgress` before and after each file.
    """
    requests = list(requests)
    results = []
    for i, req in enumerate(requests):
        if progress:
            progress(GenerateProgress(i, len(requests), req, "start"))
        result = generate_init(req)
        results.append(result)
        if progress:
            progress(GenerateProgress(i, len(requests), req, "done", result))
    return results


def generate_each(requests: Iterable[GenerateRequest], *,
                  progress: Callable[[GenerateProgress], None] | None = None) -> BatchOutcome:
    """Generate several files; a file that fails is recorded and the next one is still tried.

    A failed file writes nothing (see :func:`generate_init`); files already written stay. Only
    ckpttool's own errors are recorded: anything else is a bug and propagates.

    Args:
        requests: e.g. from :func:`matrix_requests`.
        progress: called with a :class:`GenerateProgress` before and after each file
            (stage ``"done"`` or ``"failed"``).
    """
    from ckpttool.errors import CkptError

    requests = list(requests)
    written, failed = [], []
    for i, req in enumerate(requests):
        if progress:
            progress(GenerateProgress(i, len(requests), req, "start"))
        try:
            result = generate_init(req)
        except CkptError as e:
            try:
                dest = resolve_output_path(req)
            except CkptError:
                dest = None
            failed.append(GenerateFailure(req, dest, str(e), type(e).__name__, e.exit_code))
            if progress:
                progress(GenerateProgress(i, len(requests), req, "failed", error=str(e)))
            continue
        written.append(result)
        if progress:
            progress(GenerateProgress(i, len(requests), req, "done", result))
    return BatchOutcome(tuple(written), tuple(failed))


def parse_model_kwargs(text: str | None) -> tuple[tuple[str, Any], ...]:
    """``--model-kwargs '{"depth": 2}'`` -> sorted items; reserved names are refused."""
    if not text:
        return ()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidArgumentError(f"--model-kwargs is not valid JSON ({e.msg}): {text!r}") from e
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"--model-kwargs must be a JSON object, got {text!r}")
    reserved = sorted(set(value) & {"pretrained", "pretrained_cfg", "pretrained_cfg_overlay", *_OPTION_OF_KWARG})
    if reserved:
        hint = ", ".join(_OPTION_OF_KWARG.get(k, k) for k in reserved)
        raise InvalidArgumentError(f"--model-kwargs must not set {', '.join(reserved)}; use {hint}")
    return tuple(sorted(value.items()))


# -- internals ------------------------------------------------------------------------------------

def _check_request(r: GenerateRequest) -> None:
    if r.init not in INITS:
        raise InvalidArgumentError(f"--init must be one of {', '.join(INITS)}, got {r.init!r}")
    if r.init == "random":
        if r.weights_file is not None:
            raise InvalidArgumentError("--weights-file is for --init pretrained; drop it for --init random")
        if r.revision is not None:
            raise InvalidArgumentError("--revision is for --init pretrained; drop it for --init random")
    else:
        if r.weight_init is not None:
            raise InvalidArgumentError("--weight-init is for --init random; pretrained weights replace the init")
        if r.weights_file is not None and r.revision is not None:
            raise InvalidArgumentError("--revision pins hub weights; it cannot be combined with --weights-file")
    if r.weight_init is not None and r.weight_init not in WEIGHT_INITS:
        raise InvalidArgumentError(
            f"--weight-init must be one of default, {', '.join(WEIGHT_INITS[1:])}; got {r.weight_init!r}")
    for opt, v in (("--img-size", r.img_size), ("--patch-size", r.patch_size)):
        if v is not None and v < 1:
            raise InvalidArgumentError(f"{opt} must be >= 1, got {v}")


def _load_source(request: GenerateRequest, arch: ArchSpec) -> tuple[dict, WeightsSource]:
    from ckpttool.hashing import file_sha256
    from ckpttool.torch_state import load_state_dict

    if request.weights_file is not None:
        path = Path(request.weights_file)
        if not path.is_file():
            raise WeightsUnavailableError(f"--weights-file {path} does not exist; pass an existing "
                                          ".safetensors/.pth file")
        sd = load_state_dict(path)
        return sd, WeightsSource(kind="file", path=str(path.absolute()), sha256=file_sha256(path),
                                 seed=request.seed)
    from timm.models import get_pretrained_cfg

    from ckpttool import _hub

    if arch.tag is None:
        raise WeightsUnavailableError(
            f"timm has no pretrained weights for {arch.model_name}; pass --weights-file PATH or use --init random")
    repo_id, embedded_rev, filenames = _hub.resolve_hub_source(get_pretrained_cfg(arch.full_name))
    hub = _hub.download_weights(repo_id, revision=request.revision or embedded_rev, filenames=filenames)
    sd = load_state_dict(hub.path)
    return sd, WeightsSource(kind="hub", repo_id=hub.repo_id, filename=hub.filename, revision=hub.revision,
                             commit=hub.commit, path=str(hub.path), sha256=hub.sha256,
                             seed=request.seed)


def _create_model(name: str, arch: ArchSpec, kwargs: dict, *, pretrained: bool, overlay: dict | None = None):
    import timm

    try:
        return timm.create_model(name, pretrained=pretrained, pretrained_cfg_overlay=overlay, **kwargs)
    except TypeError as e:
        m = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        if m is None:
            raise
        key = m.group(1)
        option = _OPTION_OF_KWARG.get(key, f"--model-kwargs {key}")
        what = " (timm's ViT-family init modes)" if key == "weight_init" else ""
        raise InvalidArgumentError(f"{arch.model_name} does not take {option}{what}; drop it") from e


def _dry_build(arch: ArchSpec, kwargs: dict) -> None:
    """Build on the meta device (no memory, no init cost) so that bad kwargs fail before a download."""
    import torch

    try:
        with torch.device("meta"):
            _create_model(arch.model_name, arch, kwargs, pretrained=False)
    except InvalidArgumentError:
        raise
    except Exception:  # noqa: BLE001 - some inits do not run on meta tensors; the real build reports it
        return


def _classifier_names(arch: ArchSpec) -> tuple[str, ...]:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch.full_name) if arch.tag else get_pretrained_cfg(arch.model_name)
    names = getattr(cfg, "classifier", None) or "head"
    return (names,) if isinstance(names, str) else tuple(names)


def _head_tensor_names(model, state_dict: Mapping[str, Any]) -> frozenset[str]:
    from ckpttool.verdict.grouping import is_head_tensor

    cfg = getattr(model, "pretrained_cfg", None) or {}
    classifiers = cfg.get("classifier") if isinstance(cfg, dict) else None
    classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers or ())
    heads = {k for k in state_dict if any(k in (f"{c}.weight", f"{c}.bias") for c in classifiers)}
    heads |= {k for k in state_dict if is_head_tensor(k)}
    return frozenset(heads)


def _is_head_name(name: str, heads: frozenset[str]) -> bool:
    from ckpttool.verdict.grouping import is_head_tensor

    return name in heads or is_head_tensor(name)


def _compare_origins(built: Mapping[str, Any], source: Mapping[str, Any], heads: frozenset[str],
                     init: str) -> tuple[TensorOrigin, ...]:
    import torch

    out = []
    for name, t in built.items():
        s = source.get(name)
        head = name in heads
        src_shape = tuple(s.shape) if s is not None else None
        if init == "random" or s is None:
            origin = "fresh"
        elif src_shape != tuple(t.shape):
            origin = "fresh" if head else "resampled"
        elif torch.equal(s.to(dtype=t.dtype), t):
            origin = "pretrained"
        else:  # same name and shape but other values: timm did not load it as-is
            origin = "fresh"
        out.append(TensorOrigin(name, origin, tuple(t.shape), src_shape, head))
    return tuple(out)


def _fit_error(arch: ArchSpec, kwargs: dict, source: WeightsSource, source_sd: Mapping[str, Any], *,
               cause: BaseException | None = None, unused: Sequence[str] = (),
               model_sd: Mapping[str, Any] | None = None) -> InvalidArgumentError:
    """A one-line 'does not fit' error listing the mismatched tensors (a few, plus a count)."""
    if model_sd is None:
        import torch

        with torch.random.fork_rng():
            model = _create_model(arch.model_name, arch, {**kwargs}, pretrained=False)
        model_sd = model.state_dict()
        heads = _head_tensor_names(model, model_sd)
    else:
        heads = frozenset(k for k in model_sd if _is_head_name(k, frozenset()))
    problems = []
    for k in sorted(set(model_sd) | set(source_sd)):
        if _is_head_name(k, heads):
            continue
        if k in model_sd and k in source_sd:
            ms, fs = tuple(model_sd[k].shape), tuple(source_sd[k].shape)
            if ms != fs and not _resamplable(k, fs, ms):
                problems.append(f"{k} {list(fs)} in file vs {list(ms)} in model")
        elif k in source_sd:
            problems.append(f"{k} only in file")
        else:
            problems.append(f"{k} missing from file")
    if not problems and cause is not None:
        problems = [_first_line(cause)]
    shown = "; ".join(problems[:_SHOW]) + (f"; (+{len(problems) - _SHOW} more)" if len(problems) > _SHOW else "")
    geometry = ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items()))
    return InvalidArgumentError(
        f"weights from {source.describe()} do not fit {arch.full_name} ({geometry}): "
        f"{len(problems)} mismatched tensors: {shown}; pass weights trained for this architecture")


def _resamplable(name: str, file_shape: tuple, model_shape: tuple) -> bool:
    if name.endswith("patch_embed.proj.weight") and len(file_shape) == len(model_shape) == 4:
        return file_shape[:2] == model_shape[:2]
    if name == "pos_embed" and len(file_shape) == len(model_shape) == 3:
        return file_shape[-1] == model_shape[-1]
    return False


def _input_geometry(model) -> tuple[Any, Any]:
    """Image and patch size as built (ViT patch embedding), else the model's configured input size."""
    pe = getattr(model, "patch_embed", None)
    img, patch = getattr(pe, "img_size", None), getattr(pe, "patch_size", None)
    if img is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        size = cfg.get("input_size") if isinstance(cfg, dict) else None
        img = tuple(size[-2:]) if size else None
    return _square(img), _square(patch)


def _square(v: Any) -> Any:
    if isinstance(v, (tuple, list)) and len(v) == 2 and v[0] == v[1]:
        return int(v[0])
    return tuple(v) if isinstance(v, list) else v


def _check_writable_folder(folder: Path) -> None:
    """The folder exists and is writable, or could be created under its nearest existing ancestor."""
    import os

    probe = folder.absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"cannot create folder {folder}: a path component is a file; choose another location")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into {probe}: permission denied; choose another --out or --out-dir")


def _exists_error(out: Path) -> OutputError:
    return OutputError(f"{out} exists; pass --force to replace it (the old file is backed up first)")


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (f" (+{len(names) - _SHOW} more)" if len(names) > _SHOW else "")


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list,)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return str(v)

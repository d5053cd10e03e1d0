"""Image datasets for the pruning runner, as uint8 tensors split into train / validation / test.

Four sources, one result type (:class:`ImageSplits`):

- ``cifar10`` / ``cifar100``: the published python archives (``cifar-10-python.tar.gz``,
  ``cifar-100-python.tar.gz``) or their extracted folders (``cifar-10-batches-py``,
  ``cifar-100-python``). Every file is checked against the md5 that torchvision publishes for it
  (``torchvision.datasets.CIFAR10/100``: ``tgz_md5``, ``train_list``, ``test_list``) and the pickles
  are read with an unpickler that allows only numpy array reconstruction: nothing in a data file
  is ever executed.
- ``digits``: scikit-learn's bundled 8x8 handwritten digits (real data, no download), upscaled to
  32x32 RGB.
- ``synthetic``: class-dependent smooth patterns with noise and random shifts, learnable in a few
  epochs; deterministic.

The validation split is held out of the training set by a permutation fixed by ``seed``; the test
split never changes with the seed.

Example:
    >>> splits = load_image_splits("digits", root=None, val_size=None, seed=0)
    >>> splits.train_x.shape[1:], splits.train_x.dtype, splits.num_classes
    (torch.Size([3, 32, 32]), torch.uint8, 10)
"""

from __future__ import annotations

import hashlib
import http.client
import io
import logging
import pickle
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import torch
import torch.nn.functional as F

from ckpttool.errors import DatasetError, InvalidArgumentError

logger = logging.getLogger(__name__)

DATASET_NAMES = ("cifar10", "cifar100", "digits", "synthetic")

DEFAULT_DATA_ROOT = Path("data")  # where CIFAR is looked for when ``root`` is None
CIFAR_VAL_SIZE = 5000  # default validation images held out of CIFAR's 50,000 training images
SMALL_VAL_FRACTION = 0.1  # default validation fraction for digits / synthetic
MIN_SMALL_VAL = 100  # ... and at least this many (pruning_runner.config.MIN_VAL_SIZE) where the pool allows
SYNTHETIC_DEFAULT_SIZE = 4000  # synthetic train+val pool; the test split is a quarter of it
_SYNTHETIC_CONTENT_SEED = 1234  # the synthetic images are the same for every run seed
_DIGITS_TEST_SEED = 0  # the digits test split is the same for every run seed
_DIGITS_TEST_FRACTION = 0.2


@dataclass(frozen=True, eq=False)
class ImageSplits:
    """A dataset split three ways, as CPU tensors.

    Images are uint8 NCHW (3 channels, 32x32); labels are int64 in ``[0, num_classes)``.
    """

    train_x: torch.Tensor  # [N_train, 3, 32, 32] uint8
    train_y: torch.Tensor  # [N_train] int64
    val_x: torch.Tensor  # [N_val, 3, 32, 32] uint8, held out of the training set
    val_y: torch.Tensor  # [N_val] int64
    test_x: torch.Tensor  # [N_test, 3, 32, 32] uint8, the dataset's own test set
    test_y: torch.Tensor  # [N_test] int64
    num_classes: int
    name: str  # one of DATASET_NAMES
    mean: tuple[float, float, float]  # per-channel mean of train_x, in [0, 1]
    std: tuple[float, float, float]  # per-channel std of train_x, in [0, 1]
    hflip: bool = True  # whether a horizontal mirror keeps the label (not for digits or the synthetic patterns)

    def sizes(self) -> dict[str, int]:
        """Images per split, e.g. ``{"train": 45000, "val": 5000, "test": 10000}``."""
        return {"train": len(self.train_y), "val": len(self.val_y), "test": len(self.test_y)}


def load_image_splits(
    name: str,
    *,
    root: Path | str | None,
    val_size: int | None,
    seed: int,
    download: bool = False,
    synthetic_size: int | None = None,
) -> ImageSplits:
    """Load a dataset and hold a validation split out of its training set.

    CIFAR files are always checked against the published md5s here; there is no switch to skip
    the check (tests of the reading code use :func:`load_cifar` with their own checksums).

    Args:
        name: ``cifar10``, ``cifar100``, ``digits`` or ``synthetic``.
        root: Folder holding the CIFAR folder or archive (default ``./data``); ignored otherwise.
        val_size: Training images held out for validation; None = 5,000 for CIFAR, otherwise 10% but at
            least 100 where the pool allows.
        seed: Fixes which images are held out.
        download: Fetch the CIFAR archive with torchvision's downloader when it is not under root.
        synthetic_size: Train+val pool size of the synthetic set (default 4,000).

    Returns:
        The splits, with the per-channel mean and std of the training split.

    Raises:
        InvalidArgumentError: Unknown name, or a val_size / synthetic_size out of range.
        DatasetError: CIFAR missing, corrupt (md5), unreadable or unsafe; download failed.

    Example:
        >>> s = load_image_splits("synthetic", root=None, val_size=100, seed=0, synthetic_size=1000)
        >>> s.sizes()
        {'train': 900, 'val': 100, 'test': 250}
    """
    if name in _CIFAR_NAMES:
        data_root = Path(root) if root is not None else DEFAULT_DATA_ROOT
        pool_x, pool_y, test_x, test_y = load_cifar(name, data_root, download=download)
        num_classes = _CIFAR_NAMES[name][1]
        default_val = CIFAR_VAL_SIZE
    elif name == "digits":
        pool_x, pool_y, test_x, test_y = _load_digits()
        num_classes = 10
        default_val = None
    elif name == "synthetic":
        size = SYNTHETIC_DEFAULT_SIZE if synthetic_size is None else synthetic_size
        if size < 20:
            raise InvalidArgumentError(f"synthetic_size must be at least 20 images, got {size}")
        pool_x, pool_y, test_x, test_y = _make_synthetic(size, num_classes=10)
        num_classes = 10
        default_val = None
    else:
        raise InvalidArgumentError(f"unknown dataset {name!r}: choose one of {', '.join(DATASET_NAMES)}")

    n_pool = len(pool_y)
    if val_size is None:
        # 10%, but at least the runner's minimum of 100 where the pool allows it
        small = min(n_pool - 1, max(MIN_SMALL_VAL, round(SMALL_VAL_FRACTION * n_pool)))
        val_size = default_val if default_val is not None else small
    if not 0 <= val_size < n_pool:
        raise InvalidArgumentError(
            f"val_size {val_size} is out of range for {name}: it must be in [0, {n_pool - 1}] "
            f"(the training set has {n_pool} images)"
        )
    train_idx, val_idx = split_indices(n_pool, val_size, seed)
    train_x = pool_x[train_idx].contiguous()
    mean, std = channel_mean_std(train_x)
    logger.info("%s: %d train, %d val, %d test images", name, len(train_idx), len(val_idx), len(test_y))
    return ImageSplits(
        train_x=train_x,
        train_y=pool_y[train_idx].contiguous(),
        val_x=pool_x[val_idx].contiguous(),
        val_y=pool_y[val_idx].contiguous(),
        test_x=test_x.contiguous(),
        test_y=test_y.contiguous(),
        num_classes=num_classes,
        name=name,
        mean=mean,
        std=std,
        hflip=name in ("cifar10", "cifar100"),
    )


def split_indices(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic train / validation index split of ``range(n)``; both index lists sorted."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:].sort().values, perm[:val_size].sort().values


def channel_mean_std(x: torch.Tensor) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Exact per-channel mean and (population) std of uint8 NCHW images, scaled to [0, 1].

    Uses a 256-bin histogram per channel, so memory stays at one channel's worth of bytes.
    """
    values = torch.arange(256, dtype=torch.float64)
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        total = counts.sum()
        mean = (counts * values).sum() / total
        var = (counts * (values - mean) ** 2).sum() / total
        means.append(float(mean / 255.0))
        stds.append(float(var.sqrt() / 255.0))
    return tuple(means), tuple(stds)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------- CIFAR

# name -> (torchvision class name, classes, human title)
_CIFAR_NAMES: dict[str, tuple[str, int, str]] = {
    "cifar10": ("CIFAR10", 10, "CIFAR-10"),
    "cifar100": ("CIFAR100", 100, "CIFAR-100"),
}


@dataclass(frozen=True)
class CifarLayout:
    """Where a CIFAR variant's files live and what their published md5s are (from torchvision)."""

    title: str  # "CIFAR-10"
    folder: str  # "cifar-10-batches-py"
    archive: str  # "cifar-10-python.tar.gz"
    url: str
    archive_md5: str
    train_files: tuple[tuple[str, str], ...]  # (file name in folder, md5)
    test_files: tuple[tuple[str, str], ...]
    label_key: bytes  # b"labels" or b"fine_labels"
    num_classes: int

    def checksums(self) -> dict[str, str]:
        """File name -> published md5, the archive included."""
        return {self.archive: self.archive_md5, **dict(self.train_files), **dict(self.test_files)}


def get_cifar_layout(name: str) -> CifarLayout:
    """The published layout and md5s of ``cifar10`` / ``cifar100``, read from torchvision's classes."""
    if name not in _CIFAR_NAMES:
        raise InvalidArgumentError(f"unknown CIFAR variant {name!r}: choose cifar10 or cifar100")
    import torchvision.datasets as tvd

    cls_name, num_classes, title = _CIFAR_NAMES[name]
    cls = getattr(tvd, cls_name)
    return CifarLayout(
        title=title,
        folder=cls.base_folder,
        archive=cls.filename,
        url=cls.url,
        archive_md5=cls.tgz_md5,
        train_files=tuple((f, m) for f, m in cls.train_list),
        test_files=tuple((f, m) for f, m in cls.test_list),
        label_key=b"labels" if name == "cifar10" else b"fine_labels",
        num_classes=num_classes,
    )


def load_cifar(
    name: str,
    root: Path | str,
    *,
    download: bool = False,
    checksums: Mapping[str, str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Read CIFAR-10/100 from ``root`` after checking every file's md5.

    ``root`` may hold the extracted folder or the archive, or be either of them. Files are read in
    place (the archive is not extracted).

    Args:
        name: ``cifar10`` or ``cifar100``.
        root: Folder that holds ``cifar-10-batches-py`` / ``cifar-10-python.tar.gz`` (or the
            CIFAR-100 equivalents), or that folder / archive itself.
        download: When nothing is found, fetch the archive with torchvision's downloader.
        checksums: File name -> expected md5, replacing the published ones. Only for reading small
            files written by tests; :func:`load_image_splits` (and so the CLI) never passes it.

    Returns:
        ``(train_x, train_y, test_x, test_y)``: uint8 ``[N, 3, 32, 32]`` and int64 ``[N]``.

    Raises:
        DatasetError: Nothing found, a file missing, an md5 mismatch, an unreadable or unsafe
            pickle, or a failed download.
    """
    layout = get_cifar_layout(name)
    expected = layout.checksums() if checksums is None else dict(checksums)
    published = checksums is None
    root = Path(root)

    source = _find_cifar(layout, root)
    if source is None and download:
        _download_cifar(layout, root)
        source = _find_cifar(layout, root)
    if source is None:
        raise DatasetError(
            f"{layout.title} not found under {root}: expected the folder {root / layout.folder} or the "
            f"archive {root / layout.archive}. Pass --data DIR for a folder that holds one of them, "
            f"or --download where a network is available."
        )

    if source.is_dir():
        def read_member(file_name: str) -> tuple[str, bytes]:
            path = source / file_name
            if not path.is_file():
                raise DatasetError(
                    f"{path} is missing: the {layout.title} folder {source} is incomplete. "
                    f"Replace it with a fresh copy of {layout.archive} (or use --download)."
                )
            return str(path), path.read_bytes()

        return _read_cifar_files(layout, read_member, expected, published)

    _check_md5(str(source), _md5_of_file(source), expected.get(layout.archive), layout, published)
    try:
        with tarfile.open(source, "r:gz") as tar:
            def read_member(file_name: str) -> tuple[str, bytes]:
                member = f"{layout.folder}/{file_name}"
                where = f"{source}:{member}"
                try:
                    handle = tar.extractfile(member)
                except KeyError:
                    handle = None
                if handle is None:
                    raise DatasetError(f"{where} is missing from the archive {source}")
                return where, handle.read()

            return _read_cifar_files(layout, read_member, expected, published)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DatasetError(f"{source} is not a readable tar.gz archive ({e}); download it again") from e


def _find_cifar(layout: CifarLayout, root: Path) -> Path | None:
    if root.is_file() and root.name == layout.archive:
        return root
    if root.is_dir() and root.name == layout.folder:
        return root
    if (root / layout.folder).is_dir():
        return root / layout.folder
    if (root / layout.archive).is_file():
        return root / layout.archive
    return None


def _download_cifar(layout: CifarLayout, root: Path) -> None:
    """Fetch and extract the archive with torchvision's own downloader (which checks its md5).

    torchvision's dataset class is not instantiated: its constructor unpickles the batches with
    the unrestricted pickle module; we read them with our own safe reader instead.
    """
    from torchvision.datasets.utils import download_and_extract_archive

    logger.info("downloading %s from %s into %s", layout.title, layout.url, root)
    try:
        download_and_extract_archive(layout.url, str(root), filename=layout.archive, md5=layout.archive_md5)
    except (OSError, RuntimeError, http.client.HTTPException, tarfile.TarError, EOFError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DatasetError(
            f"could not download {layout.title} from {layout.url} into {root}: {reason}. "
            f"Without a network, copy {layout.archive} into a folder and pass --data DIR."
        ) from e


def _read_cifar_files(layout, read_member, expected, published):
    parts = {}
    for split, files in (("train", layout.train_files), ("test", layout.test_files)):
        xs, ys = [], []
        for file_name, _ in files:
            where, payload = read_member(file_name)
            _check_md5(where, hashlib.md5(payload).hexdigest(), expected.get(file_name), layout, published)
            x, y = _decode_batch(where, payload, layout)
            xs.append(x)
            ys.append(y)
        parts[split] = (
            torch.from_numpy(np.concatenate(xs)),
            torch.from_numpy(np.concatenate(ys)),
        )
    return parts["train"][0], parts["train"][1], parts["test"][0], parts["test"][1]


def _check_md5(where: str, actual: str, expected: str | None, layout: CifarLayout, published: bool) -> None:
    if expected is None:
        raise DatasetError(f"no md5 known for {where}: refusing to read an unchecked file")
    if actual != expected:
        which = f"the published {layout.title} md5" if published else "the expected md5"
        raise DatasetError(
            f"{where}: md5 {actual} does not match {which} {expected}. The file is corrupt or not "
            f"the original {layout.title}: delete it and fetch {layout.archive} again (--download)."
        )


def _md5_of_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals a pickled numpy array needs; anything else is refused unexecuted."""

    _reconstruct = np.zeros(0).__reduce__()[0]  # numpy's ndarray rebuild function, whatever its module
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # written by numpy 1.x (CIFAR's files)
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # written by numpy 2.x
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not allowed")


def _safe_unpickle(stream: IO[bytes]):
    return _NumpyOnlyUnpickler(stream, encoding="bytes").load()


def _decode_batch(where: str, payload: bytes, layout: CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _safe_unpickle(io.BytesIO(payload))
    except pickle.UnpicklingError as e:
        if "is not allowed" in str(e):
            raise DatasetError(
                f"refused to read {where}: {e}. A CIFAR batch holds only numpy arrays and lists; "
                f"nothing in the file was executed. Replace it with the original {layout.archive}."
            ) from e
        raise DatasetError(f"{where} is not a readable CIFAR batch ({e})") from e
    except (EOFError, ValueError, TypeError, IndexError, AttributeError, MemoryError) as e:
        raise DatasetError(f"{where} is not a readable CIFAR batch ({type(e).__name__}: {e})") from e

    if not isinstance(batch, dict):
        raise DatasetError(f"{where} is not a CIFAR batch: it holds a {type(batch).__name__}, not a dict")
    data, labels = batch.get(b"data"), batch.get(layout.label_key)
    if not isinstance(data, np.ndarray) or labels is None:
        raise DatasetError(
            f"{where} is not a {layout.title} batch: expected keys b'data' and {layout.label_key!r}, "
            f"found {sorted(k for k in batch if isinstance(k, bytes))}"
        )
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{where}: b'data' is {data.dtype} {list(data.shape)}, expected uint8 [N, 3072]")
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(y) != len(data):
        raise DatasetError(f"{where}: {len(data)} images but {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= layout.num_classes):
        raise DatasetError(f"{where}: labels outside [0, {layout.num_classes}): min {y.min()}, max {y.max()}")
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32)).copy(), y


# -------------------------------------------------------------------------------- digits / synthetic


def _load_digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images).to(torch.float32) * (255.0 / 16.0)  # [N, 8, 8], values 0..16
    x = F.interpolate(x[:, None], size=(32, 32), mode="bilinear", align_corners=False)
    x = x.round().clamp_(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(digits.target).to(torch.int64)
    n_test = round(_DIGITS_TEST_FRACTION * len(y))
    pool_idx, test_idx = split_indices(len(y), n_test, _DIGITS_TEST_SEED)
    return x[pool_idx], y[pool_idx], x[test_idx], y[test_idx]


def _make_synthetic(pool_size: int, *, num_classes: int):
    """Per-class smooth colour templates, shifted by up to +-4 pixels, under a per-image smooth
    distractor field of twice their strength and white noise.

    The classes differ only in their (zero-mean) template, so the mean colour says nothing and a
    linear classifier on pixels reaches ~80%: learnable, not saturated at once. The content
    depends only on the sizes, never on the run seed.
    """
    gen = torch.Generator().manual_seed(_SYNTHETIC_CONTENT_SEED)
    templates = _smooth_fields(num_classes, 40, gen)
    n = pool_size + max(num_classes, pool_size // 4)
    y = torch.arange(n) % num_classes
    y = y[torch.randperm(n, generator=gen)]
    top = torch.randint(0, 9, (n,), generator=gen)
    left = torch.randint(0, 9, (n,), generator=gen)
    rows = (top[:, None] + torch.arange(32))[:, None, :, None]
    cols = (left[:, None] + torch.arange(32))[:, None, None, :]
    x = templates[y[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols]
    gain = 0.35 + 0.3 * torch.rand(n, 1, 1, 1, generator=gen)
    x = gain * x + _smooth_fields(n, 32, gen) + torch.randn(x.shape, generator=gen)
    x = (128.0 + 40.0 * x).round().clamp_(0, 255).to(torch.uint8)
    return x[:pool_size], y[:pool_size], x[pool_size:], y[pool_size:]


def _smooth_fields(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """``[n, 3, size, size]`` low-frequency random fields, zero mean per channel, unit std."""
    coarse = torch.randn(n, 3, 5, 5, generator=gen)
    fields = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    fields = fields - fields.mean(dim=(2, 3), keepdim=True)
    return fields / fields.std(dim=(1, 2, 3), keepdim=True)

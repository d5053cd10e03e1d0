"""Write small CIFAR-10/100 files in exactly the published python format, for tests.

The published batches are Python 2 ``cPickle`` protocol-2 dicts whose keys and strings are Python 2
``str`` (pickled as BINSTRING, read back as ``bytes`` with ``encoding='bytes'``) and whose image
block is a numpy uint8 array ``[N, 3072]`` rebuilt by ``numpy.core.multiarray._reconstruct``.
:class:`_Py2StylePickler` reproduces that byte layout from Python 3: every ``str``/``bytes`` becomes
a BINSTRING and numpy 2's ``numpy._core`` globals are written as ``numpy.core``.

Layout written by :func:`write_cifar`:

    root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    root/cifar-100-python/{train, test, meta}
    (or, with ``archive=True``, root/cifar-10-python.tar.gz / cifar-100-python.tar.gz holding them)
"""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class _Py2StylePickler(pickle._Pickler):  # the pure-Python pickler lets us change how types are written
    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, file):
        super().__init__(file, protocol=2)

    def _save_py2_str(self, obj):
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + module.encode() + b"\n" + (name or obj.__qualname__).encode() + b"\n")
        self.memoize(obj)


def py2_pickle_bytes(obj) -> bytes:
    """Pickle ``obj`` the way Python 2's cPickle (protocol 2) wrote the CIFAR files."""
    buf = io.BytesIO()
    _Py2StylePickler(buf).dump(obj)
    return buf.getvalue()


@dataclass(frozen=True)
class WrittenCifar:
    """What :func:`write_cifar` wrote: the arrays in file order and every file's md5."""

    root: Path  # pass this as `root`
    path: Path  # the folder or archive written
    train_x: np.ndarray  # [N, 3, 32, 32] uint8, batches concatenated in order
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    checksums: dict[str, str]  # file name -> md5 (archive included when written)


def _batch_dict(name: str, data: np.ndarray, labels: np.ndarray, batch_label: str, rng) -> dict:
    files = [f"img_{i:05d}.png" for i in range(len(data))]
    if name == "cifar10":
        return {b"batch_label": batch_label.encode(), b"labels": [int(v) for v in labels],
                b"data": data, b"filenames": [f.encode() for f in files]}
    return {b"filenames": [f.encode() for f in files], b"batch_label": batch_label.encode(),
            b"fine_labels": [int(v) for v in labels],
            b"coarse_labels": [int(v) // 5 for v in labels], b"data": data}


def write_cifar(
    root: Path,
    name: str = "cifar10",
    *,
    per_file: int = 20,
    test_size: int = 20,
    seed: int = 0,
    archive: bool = False,
) -> WrittenCifar:
    """Write a small CIFAR-10 (5 train batches of ``per_file``) or CIFAR-100 (one train file)."""
    import torchvision.datasets as tvd

    cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
    num_classes = 10 if name == "cifar10" else 100
    rng = np.random.default_rng(seed)
    train_names = [f for f, _ in cls.train_list]
    test_names = [f for f, _ in cls.test_list]
    n_train = per_file * len(train_names)

    def images(n):
        return rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)

    train_data, test_data = images(n_train), images(test_size)
    train_labels = rng.integers(0, num_classes, size=n_train)
    test_labels = rng.integers(0, num_classes, size=test_size)

    payloads: dict[str, bytes] = {}
    for i, fname in enumerate(train_names):
        sl = slice(i * per_file, (i + 1) * per_file) if name == "cifar10" else slice(None)
        label = f"training batch {i + 1} of {len(train_names)}" if name == "cifar10" else "training"
        payloads[fname] = py2_pickle_bytes(_batch_dict(name, train_data[sl], train_labels[sl], label, rng))
    label = "testing batch 1 of 1" if name == "cifar10" else "testing"
    payloads[test_names[0]] = py2_pickle_bytes(_batch_dict(name, test_data, test_labels, label, rng))
    meta = cls.meta
    payloads[meta["filename"]] = py2_pickle_bytes({meta["key"].encode(): [f"class{i}" for i in range(num_classes)]})

    checksums = {f: hashlib.md5(p).hexdigest() for f, p in payloads.items()}
    root.mkdir(parents=True, exist_ok=True)
    if archive:
        path = root / cls.filename
        with tarfile.open(path, "w:gz") as tar:
            for fname, payload in payloads.items():
                info = tarfile.TarInfo(f"{cls.base_folder}/{fname}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
        checksums[cls.filename] = hashlib.md5(path.read_bytes()).hexdigest()
    else:
        path = root / cls.base_folder
        path.mkdir(parents=True, exist_ok=True)
        for fname, payload in payloads.items():
            (path / fname).write_bytes(payload)

    return WrittenCifar(
        root=root, path=path,
        train_x=train_data.reshape(-1, 3, 32, 32), train_y=train_labels.astype(np.int64),
        test_x=test_data.reshape(-1, 3, 32, 32), test_y=test_labels.astype(np.int64),
        checksums=checksums,
    )

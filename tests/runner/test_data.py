"""Dataset loading: CIFAR's real pickle format and md5s, safe unpickling, digits, synthetic, splits."""

from __future__ import annotations

import hashlib
import io
import pickle
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd

from ckpttool.errors import CkptError, DatasetError, InvalidArgumentError
from pruning_runner import datasets
from pruning_runner.data import ImageSplits, get_cifar_layout, load_cifar, load_image_splits

try:  # tests/runner may or may not be a package
    from ._cifar_fixtures import py2_pickle_bytes, write_cifar
except ImportError:
    from _cifar_fixtures import py2_pickle_bytes, write_cifar

TV = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}


# ------------------------------------------------------------------------------------ CIFAR layout


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_published_md5s_are_torchvisions(name):
    layout = get_cifar_layout(name)
    cls = TV[name]
    assert layout.archive_md5 == cls.tgz_md5
    assert [list(f) for f in layout.train_files] == cls.train_list
    assert [list(f) for f in layout.test_files] == cls.test_list
    assert (layout.folder, layout.archive) == (cls.base_folder, cls.filename)


def test_fixture_writes_the_real_pickle_format(tmp_path):
    written = write_cifar(tmp_path, "cifar10", per_file=3, test_size=2)
    raw = (written.path / "data_batch_1").read_bytes()
    # Python 2 cPickle protocol 2: SHORT_BINSTRING keys, numpy 1.x global for the array
    assert raw.startswith(b"\x80\x02}q\x00")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    # ... and torchvision's own way of reading it works on it
    entry = pickle.load(io.BytesIO(raw), encoding="latin1")
    assert sorted(entry) == ["batch_label", "data", "filenames", "labels"]
    assert entry["data"].dtype == np.uint8 and entry["data"].shape == (3, 3072)
    assert entry["batch_label"] == "training batch 1 of 5"


# ------------------------------------------------------------------------------ reading CIFAR files


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("where", ["root", "folder-itself", "archive", "archive-itself"])
def test_load_cifar_reads_folder_and_archive(tmp_path, name, where):
    written = write_cifar(tmp_path, name, per_file=4, test_size=3, archive=where.startswith("archive"))
    root = written.path if where.endswith("itself") else tmp_path
    train_x, train_y, test_x, test_y = load_cifar(name, root, checksums=written.checksums)
    assert train_x.dtype == torch.uint8 and train_y.dtype == torch.int64
    np.testing.assert_array_equal(train_x.numpy(), written.train_x)
    np.testing.assert_array_equal(train_y.numpy(), written.train_y)
    np.testing.assert_array_equal(test_x.numpy(), written.test_x)
    np.testing.assert_array_equal(test_y.numpy(), written.test_y)


def test_published_md5_mismatch_names_file_and_both_md5s(tmp_path):
    written = write_cifar(tmp_path, "cifar10", per_file=2, test_size=2)
    path = written.path / "data_batch_1"
    actual = hashlib.md5(path.read_bytes()).hexdigest()
    with pytest.raises(DatasetError) as err:
        load_cifar("cifar10", tmp_path)  # the real check: published md5s
    assert str(err.value) == (
        f"{path}: md5 {actual} does not match the published CIFAR-10 md5 c99cafc152244af753f735de768cd75f. "
        "The file is corrupt or not the original CIFAR-10: delete it and fetch cifar-10-python.tar.gz "
        "again (--download)."
    )
    assert err.value.exit_code == 2 and isinstance(err.value, ValueError)


def test_published_md5_mismatch_on_archive(tmp_path):
    written = write_cifar(tmp_path, "cifar100", per_file=2, test_size=2, archive=True)
    with pytest.raises(DatasetError, match=r"cifar-100-python\.tar\.gz: md5 [0-9a-f]{32} does not match the "
                                           r"published CIFAR-100 md5 eb9058c3a382ffc7106e4002c42a8d85"):
        load_cifar("cifar100", written.root)


def test_load_image_splits_always_checks_published_md5s(tmp_path):
    write_cifar(tmp_path, "cifar10", per_file=2, test_size=2)
    with pytest.raises(DatasetError, match="does not match the published CIFAR-10 md5"):
        load_image_splits("cifar10", root=tmp_path, val_size=2, seed=0)


def test_corrupted_member_is_caught_by_its_own_md5(tmp_path):
    written = write_cifar(tmp_path, "cifar10", per_file=2, test_size=2)
    path = written.path / "test_batch"
    path.write_bytes(path.read_bytes()[:-1] + b"!")
    with pytest.raises(DatasetError, match=rf"{path}: md5 [0-9a-f]+ does not match the expected md5 "
                                           rf"{written.checksums['test_batch']}"):
        load_cifar("cifar10", tmp_path, checksums=written.checksums)


def test_missing_dataset_suggests_data_and_download(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_image_splits("cifar100", root=tmp_path, val_size=None, seed=0)
    assert str(err.value) == (
        f"CIFAR-100 not found under {tmp_path}: expected the folder {tmp_path / 'cifar-100-python'} or the "
        f"archive {tmp_path / 'cifar-100-python.tar.gz'}. Pass --data DIR for a folder that holds one of "
        "them, or --download where a network is available."
    )


def test_missing_batch_file_names_it(tmp_path):
    written = write_cifar(tmp_path, "cifar10", per_file=2, test_size=2)
    (written.path / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match=r"data_batch_3 is missing: the CIFAR-10 folder .* is incomplete"):
        load_cifar("cifar10", tmp_path, checksums=written.checksums)


def test_download_failure_is_one_clear_line(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)  # torchvision's downloader runs for real
    with pytest.raises(DatasetError) as err:
        load_image_splits("cifar10", root=tmp_path, val_size=None, seed=0, download=True)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        "could not download CIFAR-10 from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz into "
    )
    assert "Temporary failure in name resolution" in message
    assert message.endswith("Without a network, copy cifar-10-python.tar.gz into a folder and pass --data DIR.")


# ------------------------------------------------------------------------------------ safe unpickling


class _Boom:
    """Pickles as a call to os.system: what a malicious data file would hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _write_member(folder, fname, obj, *, py2=True):
    payload = py2_pickle_bytes(obj) if py2 else pickle.dumps(obj, protocol=2)
    (folder / fname).write_bytes(payload)
    return hashlib.md5(payload).hexdigest()


def test_pickled_code_is_refused_and_never_run(tmp_path):
    written = write_cifar(tmp_path, "cifar10", per_file=2, test_size=2)
    marker = tmp_path / "pwned"
    checksums = dict(written.checksums)
    checksums["data_batch_2"] = _write_member(written.path, "data_batch_2", {b"data": _Boom(marker)}, py2=False)
    with pytest.raises(DatasetError) as err:
        load_cifar("cifar10", tmp_path, checksums=checksums)
    assert not marker.exists()
    assert str(err.value).startswith(f"refused to read {written.path / 'data_batch_2'}: global ")
    assert "is not allowed" in str(err.value) and "nothing in the file was executed" in str(err.value)


@pytest.mark.parametrize(
    "obj, match",
    [
        ([1, 2, 3], "is not a CIFAR batch: it holds a list, not a dict"),
        ({b"data": np.zeros((2, 3072), np.uint8)}, r"expected keys b'data' and b'labels', found \[b'data'\]"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, r"b'data' is float32 \[2, 3072\]"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 images but 1 labels"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, r"labels outside \[0, 10\)"),
    ],
)
def test_malformed_batches_are_named(tmp_path, obj, match):
    written = write_cifar(tmp_path, "cifar10", per_file=2, test_size=2)
    checksums = dict(written.checksums)
    checksums["data_batch_1"] = _write_member(written.path, "data_batch_1", obj)
    with pytest.raises(DatasetError, match=match):
        load_cifar("cifar10", tmp_path, checksums=checksums)


def test_truncated_pickle_is_unreadable_not_a_crash(tmp_path):
    written = write_cifar(tmp_path, "cifar10", per_file=2, test_size=2)
    path = written.path / "data_batch_1"
    path.write_bytes(path.read_bytes()[:500])
    checksums = {**written.checksums, "data_batch_1": hashlib.md5(path.read_bytes()).hexdigest()}
    with pytest.raises(DatasetError, match="is not a readable CIFAR batch"):
        load_cifar("cifar10", tmp_path, checksums=checksums)


# ------------------------------------------------------------------------------- splits end to end


@pytest.fixture
def small_cifar10(tmp_path, monkeypatch):
    written = write_cifar(tmp_path, "cifar10", per_file=10, test_size=7)
    # Accept this test's small files as if they were the published ones.
    monkeypatch.setattr(datasets.CifarLayout, "checksums", lambda self: written.checksums)
    return written


def test_cifar_splits_hold_out_validation_by_seed(small_cifar10):
    s = load_image_splits("cifar10", root=small_cifar10.root, val_size=12, seed=3)
    assert isinstance(s, ImageSplits)
    assert s.sizes() == {"train": 38, "val": 12, "test": 7}
    assert s.num_classes == 10 and s.name == "cifar10"
    pool = torch.from_numpy(small_cifar10.train_x)
    rows = {tuple(img.flatten().tolist()[:64]) for img in torch.cat([s.train_x, s.val_x])}
    assert len(rows) == 50 == len({tuple(img.flatten().tolist()[:64]) for img in pool})
    np.testing.assert_array_equal(s.test_x.numpy(), small_cifar10.test_x)
    again = load_image_splits("cifar10", root=small_cifar10.root, val_size=12, seed=3)
    assert torch.equal(again.val_x, s.val_x) and torch.equal(again.train_y, s.train_y)
    other = load_image_splits("cifar10", root=small_cifar10.root, val_size=12, seed=4)
    assert not torch.equal(other.val_x, s.val_x)
    mean = s.train_x.double().mean(dim=(0, 2, 3)) / 255
    std = (s.train_x.double() / 255).std(dim=(0, 2, 3), unbiased=False)
    np.testing.assert_allclose(s.mean, mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(s.std, std.numpy(), rtol=1e-9)


def test_cifar_default_val_size_is_5000(small_cifar10):
    with pytest.raises(InvalidArgumentError, match=r"val_size 5000 is out of range for cifar10: it must be in "
                                                   r"\[0, 49\] \(the training set has 50 images\)"):
        load_image_splits("cifar10", root=small_cifar10.root, val_size=None, seed=0)


# ---------------------------------------------------------------------------------- digits, synthetic


def test_digits_are_real_upscaled_and_split():
    s = load_image_splits("digits", root=None, val_size=None, seed=0)
    assert s.sizes() == {"train": 1294, "val": 144, "test": 359}
    assert s.train_x.shape[1:] == (3, 32, 32) and s.train_x.dtype == torch.uint8
    assert torch.equal(s.train_x[:, 0], s.train_x[:, 2])  # grey
    assert int(s.train_x.max()) > 200 and int(s.train_x.min()) == 0
    assert sorted(s.train_y.unique().tolist()) == list(range(10))
    other = load_image_splits("digits", root=None, val_size=None, seed=1)
    assert torch.equal(other.test_x, s.test_x)  # the test split never moves with the seed
    assert not torch.equal(other.val_y, s.val_y)


def test_synthetic_is_deterministic_sized_and_learnable():
    s = load_image_splits("synthetic", root=None, val_size=None, seed=0, synthetic_size=1000)
    assert s.sizes() == {"train": 900, "val": 100, "test": 250}
    again = load_image_splits("synthetic", root=None, val_size=None, seed=0, synthetic_size=1000)
    assert torch.equal(again.train_x, s.train_x) and torch.equal(again.test_y, s.test_y)
    # A nearest-class-mean classifier on raw pixels is well above chance (10%) but not perfect.
    x, xt = s.train_x.float().flatten(1), s.test_x.float().flatten(1)
    centroids = torch.stack([x[s.train_y == c].mean(0) for c in range(10)])
    accuracy = (torch.cdist(xt, centroids).argmin(1) == s.test_y).float().mean().item()
    assert 0.4 < accuracy < 0.98


def test_default_synthetic_size():
    s = load_image_splits("synthetic", root=None, val_size=None, seed=0)
    assert s.sizes() == {"train": 3600, "val": 400, "test": 1000}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="imagenet"), "unknown dataset 'imagenet': choose one of cifar10, cifar100, digits, synthetic"),
        (dict(name="digits", val_size=-1), r"val_size -1 is out of range for digits"),
        (dict(name="synthetic", synthetic_size=5), "synthetic_size must be at least 20 images, got 5"),
    ],
)
def test_invalid_arguments(kwargs, match):
    args = dict(root=None, val_size=None, seed=0) | kwargs
    with pytest.raises(InvalidArgumentError, match=match) as err:
        load_image_splits(args.pop("name"), **args)
    assert isinstance(err.value, CkptError) and err.value.exit_code == 2

"""Issue 19: the seven ways a file could make ckpttool judge other tensors than torch loads.

Each file is built the way an attacker (or a buggy exporter) would, with "trained" values T = 7
where ckpttool used to look and "random" values R = -1 where torch looks. ckpttool must refuse it
(exit 2, one line) or judge exactly what ``torch.load(weights_only=True)`` returns, with and without
``mmap=True`` (``_parity.disagreement``). Each test failed on the reader before issue 19.
"""

from __future__ import annotations

from pathlib import Path

import _differential_files as D
import pytest
import torch
from _cli import cli
from _differential_files import R, T
from _parity import disagreement, ours, theirs

from ckpttool.errors import CheckpointFormatError, UnsafeCheckpointError
from ckpttool.loading import load_checkpoint


def assert_refused_or_same(path: Path) -> None:
    reason = disagreement(path)
    assert reason is None, reason
    assert any(theirs(path, mmap=m)[0] == "loaded" for m in (False, True)) or ours(path)[0] == "refused"


def assert_refused(path: Path, match: str, error=CheckpointFormatError) -> None:
    with pytest.raises(error, match=match):
        load_checkpoint(path)
    assert_refused_or_same(path)


# 1. Which folder of the zip ------------------------------------------------------------------------


def test_class1_torch_reads_the_folder_of_the_first_entry(tmp_path):
    path = D.folders(tmp_path / "folders.pth")
    assert theirs(path)[1] == {"/'w'": ("float32", (4,), R["w"].numpy().tobytes())}
    assert_refused_or_same(path)
    with load_checkpoint(path) as ckpt:  # the folder torch reads: the random values are judged
        assert ckpt.array("w").tolist() == [-1.0] * 4


# 2. Case-insensitive names -------------------------------------------------------------------------


def test_class2_a_data_pkl_in_other_case_is_refused(tmp_path):
    path = D.data_pkl_case(tmp_path / "case.pth")
    assert theirs(path)[1]["/'w'"][2] == R["w"].numpy().tobytes()  # torch reads DATA.PKL
    assert_refused(path, r"two zip members named 'archive/data\.pkl' \(ignoring case\)")


def test_class2_a_byteorder_in_other_case_is_refused(tmp_path):
    path = D.byteorder_case(tmp_path / "order.pth")
    assert theirs(path)[1]["/'w'"][2] != T["w"].numpy().tobytes()  # torch byte-swaps every tensor
    assert_refused(path, r"\(ignoring case\)")


def test_class2_a_storage_in_other_case_is_refused(tmp_path):
    path = D.storage_case(tmp_path / "storage.pth")
    assert_refused(path, r"'archive/data/0' \(ignoring case\)")


# 3. Where the central directory is -----------------------------------------------------------------


def test_class3_two_joined_archives_are_refused(tmp_path):
    path = D.joined(tmp_path / "joined.pth")
    assert theirs(path)[1]["/'w'"][2] == R["w"].numpy().tobytes()  # torch: the directory at the absolute offset
    assert_refused(path, "not at the offset its end record names")


def test_class3_data_after_the_end_record_is_refused(tmp_path):
    path = D.appended(tmp_path / "appended.pth")
    assert_refused(path, "after its zip end record")


# 4. Hidden payload: a pickle torch reads is scanned --------------------------------------------------


def test_class4_payload_in_other_case_is_scanned(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = D.payload_case(tmp_path / "hidden.pth", marker)
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_checkpoint(path)
    code, out, err = cli(capsys, "verify", str(path), "--expect", "pretrained")
    assert code == 2 and err.count("error:") == 1 and "system" in err
    assert not marker.exists()
    torch.load(path, weights_only=False)  # what a training script without weights_only would run
    assert marker.exists()


def test_class4_payload_in_a_prepended_archive_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = D.payload_prepended(tmp_path / "hidden.pth", marker)
    with pytest.raises(CheckpointFormatError, match="not at the offset its end record names"):
        load_checkpoint(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_class4_pickle_like_member_outside_the_storages_is_scanned(tmp_path):
    marker = tmp_path / "pwned"
    path = D.payload_extra_pkl(tmp_path / "extra.pth", marker)
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_checkpoint(path)
    path = D.payload_record(tmp_path / "record.pth", marker)
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_checkpoint(path)
    assert not marker.exists()


# 5. _rebuild_parameter_with_state --------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True])
def test_class5_parameter_state_is_refused(tmp_path, legacy):
    path = D.parameter_state(tmp_path / "param.pth", legacy)  # torch.load setattrs data=R
    assert theirs(path)[1]["/'w'"][2] == R["w"].numpy().tobytes()
    assert_refused(path, "carries saved attributes", UnsafeCheckpointError)


# 6. _rebuild_tensor_v2 metadata --------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True])
def test_class6_tensor_metadata_is_refused(tmp_path, legacy):
    path = D.neg_metadata(tmp_path / "neg.pth", legacy)
    assert theirs(path)[1]["/'w'"][2] == (-T["w"]).numpy().tobytes()  # torch applies the neg bit
    assert_refused(path, "carries metadata", UnsafeCheckpointError)


# 7. String decoding --------------------------------------------------------------------------------


def test_class7_py2_strings_are_utf8_as_for_torch(tmp_path):
    path = D.utf8_key(tmp_path / "strings.pth")
    assert theirs(path)[1]["/'w'"][2] == R["w"].numpy().tobytes()
    assert_refused_or_same(path)
    with load_checkpoint(path) as ckpt:
        assert ckpt.array("w").tolist() == [-1.0] * 4


def test_class7_a_string_torch_cannot_decode_is_refused(tmp_path):
    path = D.undecodable_key(tmp_path / "latin1.pth")
    assert theirs(path)[0] == "refused"
    with pytest.raises(CheckpointFormatError):
        load_checkpoint(path)


# Compatibility: what torch loads and ckpttool now reads as torch does ---------------------------------


def test_legacy_big_endian_sys_info_is_ignored_as_by_torch(tmp_path):
    path = D.legacy_big_endian(tmp_path / "big.pt")
    assert theirs(path)[0] == "loaded"
    assert_refused_or_same(path)
    assert ours(path)[0] == "loaded"


def test_compressed_storages_are_refused(tmp_path):
    path = D.deflated(tmp_path / "deflated.pth")
    assert theirs(path, mmap=True)[1]["/'w'"][2] != T["w"].numpy().tobytes()  # mmap reads it raw
    assert_refused(path, "is compressed")

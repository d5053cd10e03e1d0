"""Git LFS pointers in place of checkpoints: parsed to the spec's exact shape, and named as such by every
reader (the CLI side: tests/cli/test_verify_lfs.py)."""

from __future__ import annotations

import pytest

from ckpttool.errors import CheckpointFormatError, LfsPointerError
from ckpttool.formats.lfs_pointer import LfsPointer, parse_lfs_pointer

OID = "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393"
POINTER = f"version https://git-lfs.github.com/spec/v1\noid sha256:{OID}\nsize 12345\n".encode()


def test_a_pointer_is_parsed():
    assert parse_lfs_pointer(POINTER) == LfsPointer(OID, 12345)
    # an extension key between version and oid, as git-lfs writes them
    ext = POINTER.replace(b"\noid", b"\next-0-foo sha256:" + b"1" * 64 + b"\noid")
    assert parse_lfs_pointer(ext) == LfsPointer(OID, 12345)
    assert parse_lfs_pointer(POINTER.replace(b"git-lfs.github.com", b"hawser.github.com")) == LfsPointer(OID, 12345)


@pytest.mark.parametrize("bad", [
    POINTER[:-1],  # no final newline
    POINTER.replace(b"spec/v1", b"spec/v2"),  # unknown version
    POINTER.replace(OID.encode(), OID[:-1].encode()),  # short oid
    POINTER.replace(OID.encode(), OID.upper().encode()),  # not lowercase hex
    POINTER.replace(b"size 12345", b"size 012345"),  # leading zero
    POINTER.replace(b"size 12345", b"size -1"),
    POINTER + b"size 1\n",  # a key twice
    b"oid sha256:" + OID.encode() + b"\nversion https://git-lfs.github.com/spec/v1\nsize 1\n",  # version not first
    POINTER.replace(b"\n", b"\r\n"),
    POINTER + b"x" * 1024,  # the spec's 1,024-byte limit
    b"version https://git-lfs.github.com/spec/v1\nsize 12\n",  # no oid
])
def test_anything_else_is_not_a_pointer(bad):
    assert parse_lfs_pointer(bad) is None


def test_every_reader_names_a_pointer(tmp_path):
    from ckpttool.formats.dispatch import check_torch_file
    from ckpttool.loading import load_checkpoint
    from ckpttool.torch_state import load_state_dict

    path = tmp_path / "vit_small_cifar10_pretrained_init.pth.tar"
    path.write_bytes(POINTER)
    expected = (f"{path} is a Git LFS pointer (oid sha256:{OID}, size 12345 bytes), not the checkpoint: its "
                "content was never fetched; run `git lfs pull` in the repository (in GitHub Actions: "
                "actions/checkout with `lfs: true`)")
    for read in (load_checkpoint, check_torch_file, load_state_dict):  # verify/inspect; runner resume; generate, gate
        with pytest.raises(LfsPointerError) as caught:
            read(path)
        assert str(caught.value) == expected and isinstance(caught.value, CheckpointFormatError)
        assert caught.value.pointer == LfsPointer(OID, 12345) and caught.value.exit_code == 2
    # a text file that only starts like one keeps the ordinary message
    path.write_bytes(b"version 3 of my notes\n")
    with pytest.raises(CheckpointFormatError, match="is not a checkpoint: its content is neither") as caught:
        load_checkpoint(path)
    assert not isinstance(caught.value, LfsPointerError)

"""ckpttool.sharded: an index and its shards are ONE model for the verdict, the digest, the manifest
and backups. Real safetensors / torch shard files of the trained tiny ViT (tests/_init_fixtures.py),
cut by hand or by huggingface_hub's own splitter."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import _init_fixtures as fx
import pytest
from _shards import BIN_INDEX, SAFETENSORS_INDEX, load_tensors, save_file, save_shards, write_index

from ckpttool.digest import file_weights_digests
from ckpttool.errors import ShardIndexError
from ckpttool.hashing import file_sha256
from ckpttool.loading import find_checkpoints, load_checkpoint
from ckpttool.verify import verify_file

_no_network = fx._no_network
trained_weights = fx.trained_weights
random_weights = fx.random_weights

EMBEDDINGS = ["patch_embed.", "cls_token", "pos_embed"]
HEAD = ["head."]
BODY = ["blocks.", "norm."]


def contents(folder: Path) -> dict[str, bytes]:
    """The files of a folder by name (lock files, which start with a dot, aside)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


@pytest.fixture(scope="module")
def trained(trained_weights) -> dict:
    return load_tensors(trained_weights)


@pytest.fixture
def model(tmp_path, trained) -> Path:
    """The trained ViT in three shards: the embeddings alone, the body, the head alone."""
    return save_shards(tmp_path / "model", trained, groups=[EMBEDDINGS, BODY, HEAD])


def test_judged_as_one_model_where_a_shard_alone_is_not(model, trained_weights):
    report = verify_file(model, expect="pretrained")
    assert report.passed and report.verdict.verdict == "pretrained"
    assert [h.name for h in report.verdict.head] == ["head.bias", "head.weight"]  # found in the third shard
    # the head's shard alone has nothing to judge: the per-file view this replaces could not vouch for it
    alone = verify_file(model.parent / "model-00003-of-00003.safetensors", expect="pretrained")
    assert not alone.passed and alone.verdict.verdict == "inconclusive"
    # identity: the index's sha256, every shard listed with its own, in shard order
    assert report.sha256 == file_sha256(model)
    assert [(s.path.name, s.sha256, s.size) for s in report.shards] == [
        (f"model-0000{i}-of-00003.safetensors", file_sha256(model.parent / f"model-0000{i}-of-00003.safetensors"),
         (model.parent / f"model-0000{i}-of-00003.safetensors").stat().st_size) for i in (1, 2, 3)]


def test_the_weights_digest_equals_the_single_file_digest(model, trained_weights):
    assert file_weights_digests(model) == file_weights_digests(trained_weights)


def test_a_partial_load_across_shards_is_named(tmp_path, trained, random_weights):
    """blocks.1 at its init in a shard of its own: the model is partial and names it; that shard
    alone looks random, the others alone pretrained: only the whole model tells the truth."""
    mixed = {**trained, **{k: v for k, v in load_tensors(random_weights).items() if k.startswith("blocks.1.")}}
    index = save_shards(tmp_path, mixed, groups=[[*EMBEDDINGS, "blocks.0."], ["blocks.1."], ["norm.", *HEAD]])
    report = verify_file(index)
    assert report.verdict.verdict == "partial" and report.verdict.untouched_groups == ("blocks.1",)
    assert verify_file(tmp_path / "model-00002-of-00003.safetensors").verdict.verdict == "random"


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_huggingface_hub_split_in_both_formats(tmp_path, trained, trained_weights, fmt):
    index = save_shards(tmp_path, trained, fmt=fmt, max_shard_size=150_000)
    assert index.name == (SAFETENSORS_INDEX if fmt == "safetensors" else BIN_INDEX)
    with load_checkpoint(index) as ckpt:
        assert len(ckpt.shards) >= 3
        assert ckpt.format == ("safetensors" if fmt == "safetensors" else "torch-zip")
        # shards in their numbered order, each in its own order
        names = [t.name for t in ckpt.tensors]
        per_shard = []
        for shard in ckpt.shards:
            with load_checkpoint(shard) as one:
                per_shard += [t.name for t in one.tensors]
        assert names == per_shard and sorted(names) == sorted(trained)
    assert verify_file(index, expect="pretrained").passed
    assert file_weights_digests(index) == file_weights_digests(trained_weights)


def test_prefixes_are_stripped_only_when_every_shard_has_them(tmp_path, trained, trained_weights):
    wrapped = {f"module.{k}": v for k, v in trained.items()}
    index = save_shards(tmp_path / "all", wrapped, groups=[["module.blocks."], ["module."]])
    with load_checkpoint(index) as ckpt:
        assert ckpt.stripped_prefixes == ("module.",)
        assert sorted(t.name for t in ckpt.tensors) == sorted(trained)
    assert file_weights_digests(index) == file_weights_digests(trained_weights)
    # one shard's names all carry `module.`, the other's do not: each shard alone would strip
    # differently; the model keeps its names as stored
    half = {(f"module.{k}" if k.startswith("blocks.") else k): v for k, v in trained.items()}
    index = save_shards(tmp_path / "half", half, groups=[["module.blocks."], ["patch", "cls", "pos", "norm", "head"]])
    with load_checkpoint(index) as ckpt:
        assert ckpt.stripped_prefixes == ()
        assert {t.name for t in ckpt.tensors} == set(half)


def test_a_torch_shard_with_ema_weights_is_refused(tmp_path, trained):
    import torch

    index = save_shards(tmp_path, trained, fmt="bin", groups=[BODY, [*EMBEDDINGS, *HEAD]])
    shard = tmp_path / "pytorch_model-00001-of-00002.bin"
    sd = torch.load(shard, weights_only=True)
    torch.save({"state_dict": sd, "state_dict_ema": sd}, shard)
    with pytest.raises(ShardIndexError, match=r"holds 2 weight sets \(state_dict, state_dict_ema\); a sharded "
                                              r"model is read with one weight set per shard"):
        load_checkpoint(index)


def test_a_shard_may_be_a_symlink_to_a_regular_file_anywhere(tmp_path, model):
    """As in the Hugging Face cache: snapshot entries link into its blob store."""
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    shard = model.parent / "model-00002-of-00003.safetensors"
    shutil.move(shard, blobs / "abc")
    shard.symlink_to(blobs / "abc")
    assert verify_file(model, expect="pretrained").passed


def test_a_shard_that_is_not_a_regular_file_is_refused(tmp_path, model):
    shard = model.parent / "model-00002-of-00003.safetensors"
    shard.unlink()
    os.mkfifo(shard)  # would block a reader forever
    with pytest.raises(ShardIndexError, match=r"names shard\(s\) that are not regular files: "
                                              r"'model-00002-of-00003.safetensors' \(a FIFO"):
        load_checkpoint(model)


def test_find_checkpoints_gives_the_model_once_and_keeps_other_files(tmp_path, model, trained_weights):
    shutil.copy(trained_weights, model.parent / "extra.safetensors")
    bin_index = save_shards(model.parent, load_tensors(trained_weights), fmt="bin", groups=[BODY, [*EMBEDDINGS, *HEAD]])
    found = find_checkpoints(model.parent)
    assert found == sorted([model, bin_index, model.parent / "extra.safetensors"])  # two indexes: two models
    assert find_checkpoints(model) == [model]
    (model.parent / "broken.safetensors.index.json").write_text("{")
    with pytest.raises(ShardIndexError, match="broken.safetensors.index.json is not valid JSON"):
        find_checkpoints(model.parent)


def test_manifest_pins_the_index_and_every_shard(tmp_path, model):
    from ckpttool.manifest import Manifest, ManifestEntry, check_manifest, save_manifest

    folder = model.parent
    files = [p.name for p in sorted(folder.iterdir())]
    entries = [ManifestEntry(name, file_sha256(folder / name), (folder / name).stat().st_size, "pretrained")
               for name in files]
    save_manifest(Manifest(folder / "MANIFEST.json", tuple(entries)))
    check = check_manifest(folder)
    assert check.passed and check.checked == tuple(sorted(files)), check
    # a changed shard fails its sha256; the model's verdict is still judged once, on the index's entry
    shard = folder / "model-00002-of-00003.safetensors"
    mixed = {k: (v * 0 if k == "blocks.0.attn.qkv.bias" else v) for k, v in load_tensors(shard).items()}
    save_file(mixed, shard)
    check = check_manifest(folder)
    assert [m.path for m in check.sha256_mismatches] == [shard.name] and not check.verdict_mismatches
    # an index listed without one of its shards leaves the weights unpinned: fails
    save_manifest(Manifest(folder / "MANIFEST.json", tuple(e for e in entries if e.path != shard.name)))
    check = check_manifest(folder)
    assert not check.passed and check.unpinned_shards == (shard.name,) and check.unlisted == ()


def test_backup_and_restore_a_sharded_model_as_one_unit(tmp_path, model):
    from ckpttool.backup import backup_file, restore_backup

    folder = model.parent
    before = contents(folder)
    record = backup_file(model, reason="before the fine-tune")
    assert record.verdict == "pretrained" and record.sha256 == file_sha256(model)
    assert [(p.name, p.sha256) for p in record.parts] == [
        (name, file_sha256(folder / name)) for name in sorted(before) if name != model.name]
    view = record.backup_dir / record.view_path  # the view folder is itself the model
    assert verify_file(view, expect="pretrained").passed
    # a shard damaged, another removed: restore puts the whole model back, backing up what it replaces
    (folder / "model-00001-of-00003.safetensors").write_bytes(b"damaged")
    (folder / "model-00003-of-00003.safetensors").unlink()
    result = restore_backup(record.id, root=folder)
    assert not result.unchanged and result.replaced is None
    assert [Path(r.original_path).name for r in result.replaced_shards] == ["model-00001-of-00003.safetensors"]
    assert contents(folder) == before
    assert restore_backup(record.id, root=folder).unchanged
    # elsewhere, whole, with --to naming the index
    other = tmp_path / "copy" / SAFETENSORS_INDEX
    restore_backup(record.id, root=folder, to=other)
    assert contents(other.parent) == before


def test_restore_over_a_damaged_index_keeps_the_damaged_one_as_a_file(tmp_path, model):
    from ckpttool.backup import backup_file, restore_backup

    before = contents(model.parent)
    record = backup_file(model)
    damaged = '{"weight_map": {"x": "gone.safetensors"}}'  # an index naming a shard that is gone
    model.write_text(damaged)
    result = restore_backup(record.id, root=model.parent)
    assert result.replaced.parts == () and result.replaced.verdict == "unreadable"
    assert (result.replaced.backup_dir / result.replaced.object_path).read_text() == damaged
    assert contents(model.parent) == before


def test_a_backup_manifest_part_outside_the_model_folder_is_refused(tmp_path, model):
    from ckpttool.backup import backup_file, list_backups
    from ckpttool.errors import ManifestError

    record = backup_file(model)
    manifest = record.backup_dir / "MANIFEST.json"
    doc = json.loads(manifest.read_text())
    doc["backups"][0]["parts"][0]["name"] = "../../elsewhere.safetensors"
    manifest.write_text(json.dumps(doc))
    with pytest.raises(ManifestError, match=r"part name '../../elsewhere.safetensors' is not a relative path"):
        list_backups(record.backup_dir)


def test_a_failed_restore_leaves_the_old_model_whole(tmp_path, model):
    """A stored shard damaged: nothing is written, not even the shards that were fine."""
    from ckpttool.backup import backup_file, restore_backup
    from ckpttool.errors import OutputError

    record = backup_file(model)
    save_shards(model.parent, {"x": load_tensors(model.parent / "model-00001-of-00003.safetensors")["cls_token"]},
                groups=[["x"]])  # another model now sits there
    before = contents(model.parent)
    stored = record.backup_dir / record.parts[-1].object_path
    os.chmod(stored, 0o644)
    stored.write_bytes(b"rot")
    with pytest.raises(OutputError, match="it is damaged; nothing was restored"):
        restore_backup(record.id, root=model.parent)
    assert contents(model.parent) == before


def test_index_metadata_and_names_in_messages_are_hostile_input(tmp_path, model):
    weight_map = json.loads(model.read_text())["weight_map"]
    weight_map["evil\n::error::forged"] = "model-00001-of-00003.safetensors"
    write_index(model, weight_map)
    with pytest.raises(ShardIndexError) as info:
        load_checkpoint(model)
    assert "'evil\\n::error::forged'" in str(info.value)  # quoted as repr: one line whatever it holds


def test_the_pruning_runner_gate_takes_single_files_only(model):
    """The gate judges a private copy of ONE file; a sharded init is refused by name, not judged half."""
    from ckpttool.errors import InvalidArgumentError
    from pruning_runner.gate import read_checked_init

    for given, what in ((model, "sharded model index"), (model.parent, "folder")):
        with pytest.raises(InvalidArgumentError, match=f"--init takes one checkpoint file, and .* is a {what}"):
            read_checked_init(given)


def test_tensors_are_read_from_their_shard_in_bounded_chunks(model):
    """The composite hands each tensor's mapped view over from its shard: raw_chunks reads a tensor in
    pieces (bounded memory at any size), exactly the bytes the shard itself gives."""
    import numpy as np

    name = "blocks.0.mlp.fc1.weight"  # 256 x 64 float32 = 64 KiB, in the second shard
    with load_checkpoint(model) as ckpt, load_checkpoint(model.parent / "model-00002-of-00003.safetensors") as shard:
        chunks = [c.copy() for c in ckpt.raw_chunks(name, max_bytes=4096)]
        assert len(chunks) == 16 and all(c.nbytes == 4096 for c in chunks)
        assert np.array_equal(np.concatenate(chunks), shard.raw(name).reshape(-1))
        assert np.array_equal(ckpt.values(name)[:5], shard.values(name)[:5])

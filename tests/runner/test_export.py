"""The export is the reported model: the last state's best-validation weights, with how they were chosen
in the file's metadata; and the records a pruning paper needs (seed, FLOPs, per-block structure, masks)."""

import json

import pytest
import torch
from conftest import IMG, base_options, one_torch_thread

from ckpttool.loading import load_checkpoint
from pruning_runner.compaction import load_compact_model
from pruning_runner.config import resolve_config
from pruning_runner.data import DeviceLoader, load_image_splits
from pruning_runner.loop import run_pruning
from pruning_runner.model import parse_init_metadata
from pruning_runner.training import count_correct


@pytest.fixture(scope="module")
def run(random_init, tmp_path_factory):
    """lr 0.03 overshoots: the last state's best validation epoch (2) is not its last (3)."""
    out = tmp_path_factory.mktemp("export") / "run"
    with one_torch_thread():  # a module fixture runs before the per-test one-thread fixture
        result = run_pruning(resolve_config(None, base_options(random_init, out, states=2, epochs=4, lr=3e-2)))
    return result, out


def _test_accuracy(model) -> float:
    s = load_image_splits("digits", root=None, val_size=None, seed=0)
    loader = DeviceLoader(s.test_x, s.test_y, batch_size=1024, device="cpu", train=False, img_size=IMG,
                          mean=s.mean, std=s.std, seed=0, drop_last=False)
    correct, count = count_correct(model, loader, lambda: torch.autocast("cpu", enabled=False), torch.device("cpu"))
    return correct.item() / count.item()


def test_the_export_holds_the_best_validation_weights_of_the_last_state(run):
    result, out = run
    last = result.states[-1]
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    state = [m for m in lines if m["state"] == last["state"]]
    assert last["best_epoch"] != state[-1]["epoch"]  # otherwise this test could not tell the two apart
    assert state[-1]["test_acc"] != last["test_acc_at_best_val"]
    assert _test_accuracy(load_compact_model(result.final_model)) == last["test_acc_at_best_val"]
    with load_checkpoint(result.final_model) as ckpt:
        md = parse_init_metadata(dict(ckpt.metadata))
    assert (md["weights_of"], md["state"], md["epoch"]) == ("best_val_epoch", 1, last["best_epoch"])
    assert (md["val_acc"], md["test_acc"]) == (last["best_val_acc"], last["test_acc_at_best_val"])
    assert md["init_sha256"] == result.init["sha256"] and md["seed"] == 0
    assert md["params"] == last["params"] and md["flops"] == last["flops"]
    assert md["sparsity"]["heads"] == 0.5 and md["sparsity"]["neurons"] == 0.5
    assert 0.4 < md["sparsity"]["params"] < 0.5 and 0.3 < md["sparsity"]["flops"] < 0.5


def test_records_carry_seed_flops_structure_and_masks(run):
    from safetensors.torch import load_file

    result, out = run
    assert json.loads((out / "run.json").read_text())["seed"] == 0
    summary = json.loads((out / "summary.json").read_text())["states"]
    assert [s["kept_heads_per_block"] for s in summary] == [[4, 4], [2, 2]]
    assert [s["kept_neurons_per_block"] for s in summary] == [[64, 64], [32, 32]]
    assert summary[1]["flops"] < summary[0]["flops"] and summary[1]["params"] < summary[0]["params"]
    for s in summary:
        mask = load_file(str(out / s["mask"]))
        assert mask["heads"].dtype == torch.bool and mask["heads"].sum(1).tolist() == s["kept_heads_per_block"]
        assert mask["neurons"].sum(1).tolist() == s["kept_neurons_per_block"]
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    for m in lines:
        s = summary[m["state"]]
        assert (m["params"], m["flops"], m["kept_heads_per_block"]) == (s["params"], s["flops"],
                                                                         s["kept_heads_per_block"])


def test_flops_are_torchs_count_of_the_compacted_model(run):
    from torch.utils.flop_counter import FlopCounterMode

    result, _ = run
    model = load_compact_model(result.final_model)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():  # on meta tensors the counter sees the attention kernel too
        model.to("meta")(torch.empty(1, 3, IMG, IMG, device="meta"))
    assert counter.get_total_flops() == result.states[-1]["flops"]

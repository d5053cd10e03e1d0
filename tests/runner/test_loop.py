import json

import pytest
import torch
from conftest import base_options

from ckpttool.errors import ResourceExhaustedError
from pruning_runner import loop as loop_mod
from pruning_runner.checkpoint import load_run_checkpoint, load_tensors
from pruning_runner.compaction import load_compact_model, select_state_dict
from pruning_runner.config import resolve_config
from pruning_runner.groups import GroupMasks, create_param_masks, model_params, plain_vit_layout
from pruning_runner.loop import _PruningRun, run_pruning
from pruning_runner.ranking import expected_kept
from pruning_runner.schedule import rate_for_final_sparsity


def _run(random_init, tmp_path, **kw):
    cfg = resolve_config(None, base_options(random_init, tmp_path / "run", **kw))
    return run_pruning(cfg), tmp_path / "run"


@pytest.mark.parametrize("kw", [
    dict(rate=0.3, ranking="layer"),
    dict(rate=None, final_sparsity=0.75, ranking="global", compact_between_states=False),
    dict(rate=0.4, ranking="global", min_heads_per_layer=2, method="rsst", criterion="l2"),
])
def test_sparsity_follows_the_schedule_exactly_at_every_state(random_init, tmp_path, kw):
    kw = dict(kw)
    result, run_dir = _run(random_init, tmp_path, states=4, epochs=1, target="both", **kw)
    rate = kw["rate"] if kw.get("rate") else rate_for_final_sparsity(kw["final_sparsity"], 4)
    minimum = kw.get("min_heads_per_layer", 1)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [s["state"] for s in summary["states"]] == [0, 1, 2, 3]
    for k, s in enumerate(summary["states"]):
        assert s["kept_heads"] == expected_kept(2, 4, rate=rate, prunes=k, minimum=minimum, ranking=kw["ranking"])
        assert s["kept_neurons"] == expected_kept(2, 64, rate=rate, prunes=k, minimum=1, ranking=kw["ranking"])
    ckpt = load_run_checkpoint(run_dir / "checkpoint.pt")
    alive = GroupMasks.from_state(ckpt["masks"]["alive"]).without(GroupMasks.from_state(ckpt["masks"]["penalized"]))
    assert int(alive.heads.sum(1).min()) >= minimum
    final = load_compact_model(run_dir / "final_compact.safetensors")
    assert sum(b.attn.num_heads for b in final.blocks) == summary["states"][-1]["kept_heads"]
    assert sum(b.mlp.fc1.out_features for b in final.blocks) == summary["states"][-1]["kept_neurons"]
    assert sum(p.numel() for p in final.parameters()) == summary["states"][-1]["params"]


@pytest.mark.parametrize("compact", [True, False])
def test_rewind_restores_survivors_bit_for_bit_and_never_changes_the_init(random_init, tmp_path, monkeypatch, compact):
    from ckpttool.torch_state import load_state_dict

    seen = []
    original = _PruningRun._enter_new_state

    def spy(self):
        original(self)
        seen.append((self, {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                     self.present, self.alive))

    monkeypatch.setattr(_PruningRun, "_enter_new_state", spy)
    _run(random_init, tmp_path, states=3, epochs=1, rate=0.5, compact_between_states=compact)
    file_sd = load_state_dict(random_init)
    run = seen[0][0]
    # the immutable copy equals the init file (head kept: same class count) and was never written to
    for k, v in file_sd.items():
        assert torch.equal(run.init_sd[k], v)
    assert len(seen) == 3
    for _, sd, present, alive in seen[1:]:
        expected = select_state_dict(file_sd, GroupMasks.full(run.layout), present, run.layout)
        masks = create_param_masks(expected, alive, present, run.layout)
        for k, v in sd.items():
            want = expected[k] * masks[k] if k in masks else expected[k]
            assert torch.equal(v, want), k
        if compact:
            assert present.equals(alive)
    # state dicts seen at state starts are copies: the model trained afterwards
    assert not torch.equal(seen[1][1]["blocks.0.attn.qkv.weight"], run.model.state_dict()["blocks.0.attn.qkv.weight"])


def test_rewind_lt_rewinds_to_the_snapshot_of_state_0(random_init, tmp_path, monkeypatch):
    seen = []
    original = _PruningRun._enter_new_state

    def spy(self):
        original(self)
        seen.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})

    monkeypatch.setattr(_PruningRun, "_enter_new_state", spy)
    _, run_dir = _run(random_init, tmp_path, states=2, epochs=2, rewind="rewind_lt", rewind_epoch=1,
                      target="mlp", rate=0.5)
    snap = load_tensors(run_dir / "rewind.safetensors")
    init = load_tensors(run_dir / "init.safetensors")
    assert not torch.equal(snap["blocks.0.attn.qkv.weight"], init["blocks.0.attn.qkv.weight"])
    # heads are not pruned (target mlp): their tensors equal the snapshot exactly
    assert torch.equal(seen[1]["blocks.0.attn.qkv.weight"], snap["blocks.0.attn.qkv.weight"])
    assert torch.equal(seen[1]["patch_embed.proj.weight"], snap["patch_embed.proj.weight"])


def test_rsst_penalty_grows_through_the_state_and_pushes_the_groups_down(random_init, tmp_path):
    _, run_dir = _run(random_init, tmp_path, method="rsst", states=2, epochs=3, rate=0.5, optimizer="sgd",
                      lr=0.05, reg_max=20.0, reg_schedule="x2", target="both")
    lines = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]
    state1 = [m for m in lines if m["state"] == 1]
    lams = [m["rsst_lambda"] for m in state1]
    assert lams == sorted(lams) and lams[0] < lams[-1] and lams[-1] == 20.0  # the state's last step: reg_max
    ratios = [m["rsst_norm_ratio"] for m in state1]
    assert ratios[-1] < ratios[0]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["states"][1]["rsst_norm_ratio"] < 0.1


def test_rsst_lambda_spans_the_whole_state_not_each_epoch(random_init):
    from pruning_runner.methods.rsst import GradientPenalty

    model_sd = {"blocks.0.mlp.fc1.weight": torch.ones(4, 2)}
    pen = GroupMasks(torch.zeros(1, 1, dtype=torch.bool), torch.tensor([[True, False, False, False]]))
    gp = GradientPenalty(model_sd, pen, GroupMasks(torch.ones(1, 1, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool)),
                         plain_vit_layout(pen, 2), reg_max=1.0, schedule="x", exponent=2.0, total_steps=30)
    lams = [gp.lam(s) for s in range(30)]
    assert lams[0] == pytest.approx(1 / 30) and all(b > a for a, b in zip(lams, lams[1:], strict=False))
    assert lams[10] == pytest.approx(11 / 30)  # an epoch boundary (10 steps/epoch) does not reset it


@pytest.mark.parametrize("schedule", ["x", "x2", "x3", "exp", "exp_custom_exponents"])
def test_rsst_lambda_reaches_reg_max_exactly_on_the_last_step(schedule):
    from pruning_runner.methods.rsst import GradientPenalty

    full = GroupMasks(torch.ones(1, 1, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool))
    pen = GroupMasks(torch.zeros(1, 1, dtype=torch.bool), torch.tensor([[True, False, False, False]]))
    gp = GradientPenalty({"blocks.0.mlp.fc1.weight": torch.ones(4, 2)}, pen, full, plain_vit_layout(pen, 2), reg_max=7.0,
                         schedule=schedule, exponent=3.0, total_steps=23)
    assert gp.lam(22) == 7.0
    assert 0.0 < gp.lam(0) < gp.lam(21) < 7.0


def test_taylor_scores_come_from_the_trained_model(random_init, tmp_path, monkeypatch):
    import pruning_runner.loop as lm

    trained, scored = [], []
    original_end = _PruningRun._end_state
    original_taylor = lm.accumulate_taylor_saliency

    def end_spy(self):
        trained.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        original_end(self)

    def taylor_spy(model, params, *a, **kw):
        scored.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return original_taylor(model, params, *a, **kw)

    monkeypatch.setattr(_PruningRun, "_end_state", end_spy)
    monkeypatch.setattr(lm, "accumulate_taylor_saliency", taylor_spy)
    _, run_dir = _run(random_init, tmp_path, states=2, epochs=1, criterion="taylor")
    init = load_tensors(run_dir / "init.safetensors")
    assert len(scored) == 1
    for k in trained[0]:
        assert torch.equal(scored[0][k], trained[0][k])
    assert not torch.equal(scored[0]["blocks.0.attn.qkv.weight"], init["blocks.0.attn.qkv.weight"])


def test_records(random_init, tmp_path):
    result, run_dir = _run(random_init, tmp_path, states=2, epochs=2)
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "finished" and run["init"]["verdict"] == "random" and len(run["init"]["sha256"]) == 64
    lines = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(m["state"], m["epoch"]) for m in lines] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert set(lines[0]) >= {"state", "epoch", "lr", "train_loss", "train_acc", "val_acc", "test_acc", "seconds",
                             "images_per_s"}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["init"]) == {"path", "sha256", "verdict"}
    keys = {"state", "kept_heads", "total_heads", "kept_neurons", "total_neurons", "params", "best_val_acc",
            "test_acc_at_best_val", "seconds"}
    assert keys <= set(summary["states"][0])
    best = max((m for m in lines if m["state"] == 0), key=lambda m: m["val_acc"])
    assert summary["states"][0]["test_acc_at_best_val"] == best["test_acc"]
    assert (run_dir / "accuracy_vs_sparsity.png").read_bytes()[:4] == b"\x89PNG"
    assert (run_dir / "config.toml").read_text().count("method = \"refill\"") == 1


def test_gpu_out_of_memory_becomes_a_batch_size_hint(random_init, tmp_path, monkeypatch):
    def boom(self, *a, **kw):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(_PruningRun, "_train_step", boom)
    with pytest.raises(ResourceExhaustedError, match=r"--batch-size 128 .*try --batch-size 64"):
        _run(random_init, tmp_path, states=1, epochs=1)


def test_head_is_reinitialised_when_classes_differ(tmp_path):
    from conftest import create_tiny_vit, tiny_metadata

    from ckpttool.saving import save_checkpoint

    init = tmp_path / "init100.safetensors"
    save_checkpoint(init, create_tiny_vit(num_classes=100).state_dict(), metadata=tiny_metadata(100))
    result, run_dir = _run(init, tmp_path, states=1, epochs=1)
    run = json.loads((run_dir / "run.json").read_text())
    assert run["head_reinitialised"] is True and run["init_num_classes"] == 100
    assert load_tensors(run_dir / "init.safetensors")["head.weight"].shape[0] == 10


def test_params_count_matches_model(random_init, tmp_path):
    result, run_dir = _run(random_init, tmp_path, states=1, epochs=1)
    from conftest import create_tiny_vit

    assert result.states[0]["params"] == sum(p.numel() for p in create_tiny_vit().parameters())
    assert model_params  # imported helper stays used
    assert loop_mod  # module import for monkeypatching elsewhere


def test_compile_runs_every_one_of_ten_states_compiled(random_init, tmp_path):
    """Ten differently shaped states through one forward: past dynamo's recompile_limit (8) of one code object."""
    from torch._dynamo import register_backend

    from pruning_runner.events import StateEnded

    compiled = []

    @register_backend(name="ckpttool_test_counting")
    def counting(gm, example_inputs):  # the eager backend, counting what dynamo hands it
        compiled.append(1)
        return gm.forward

    per_state = []

    def listener(event):
        if isinstance(event, StateEnded):
            per_state.append(len(compiled) - sum(per_state))

    cfg = resolve_config(None, base_options(random_init, tmp_path / "run", states=10, epochs=1, target="mlp",
                                            rate=0.1, batch_size=256, compile=True,
                                            compile_backend="ckpttool_test_counting"))
    result = run_pruning(cfg, listener=listener)
    assert len({s["kept_neurons"] for s in result.states}) == 10  # ten shapes
    assert len(per_state) == 10 and all(n >= 1 for n in per_state), per_state


def test_unknown_compile_backend_is_refused_up_front(random_init, tmp_path):
    from ckpttool.errors import InvalidArgumentError

    cfg = resolve_config(None, base_options(random_init, tmp_path / "run", compile=True, compile_backend="nope"))
    with pytest.raises(InvalidArgumentError, match=r"unknown --compile-backend 'nope'; choose one of: .*inductor"):
        run_pruning(cfg)
    assert not (tmp_path / "run").exists()

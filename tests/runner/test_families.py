"""Modern ViT blocks through the runner, with tiny models from timm's own registry (depth 2, 16 px, patch 4):

- gated MLP, packed (``GluMlp`` / ``SwiGLUPacked``: DINOv2's ``vit_giant_patch14_dinov2``),
- gated MLP, split (``SwiGLU``: AIMv2's ``aimv2_large_patch14_224``, no qkv bias),
- EVA attention (``q_bias`` / ``v_bias`` beside ``attn.qkv``, per-head ``q_norm`` / ``k_norm``, RoPE, and a
  packed gated MLP: ``eva02_tiny_patch14_224``).

Each is scored, masked and compacted exactly and exports a model that loads and runs in timm; blocks
the runner cannot group exactly are refused before a run folder exists, naming the module."""

import json

import pytest
import timm
import torch
from conftest import base_options, cli_args

from ckpttool.cli._root import main
from pruning_runner.compaction import compact_model, load_compact_model
from pruning_runner.config import resolve_config
from pruning_runner.groups import GroupMasks, VitLayout, apply_param_masks_, create_param_masks, model_params
from pruning_runner.importance import MagnitudeImportance, score_groups
from pruning_runner.loop import run_pruning
from pruning_runner.model import ModelSpec, create_vit, load_init_weights

TINY = dict(embed_dim=32, depth=2, num_heads=4)
FAMILIES = {
    "glu_mlp": ("vit_giant_patch14_dinov2", {}),
    "swiglu": ("aimv2_large_patch14_224", {}),
    "eva_attention": ("eva02_tiny_patch14_224", {"qk_norm": True}),
}


def _spec(family: str, **extra) -> ModelSpec:
    arch, kwargs = FAMILIES[family]
    return ModelSpec(arch=arch, img_size=16, patch_size=4, num_classes=10, model_kwargs={**TINY, **kwargs, **extra})


def _timm_model(spec: ModelSpec, seed: int = 0):
    """The model exactly as timm builds it (EVA keeps its q_bias / v_bias)."""
    torch.manual_seed(seed)
    return timm.create_model(spec.arch, img_size=spec.img_size, patch_size=spec.patch_size,
                             num_classes=spec.num_classes, **spec.model_kwargs).eval()


def _runner_model(spec: ModelSpec, seed: int = 0):
    """The runner's model of ``spec`` holding the timm model's weights (and that timm model)."""
    reference = _timm_model(spec, seed)
    with torch.no_grad():  # visible biases: timm starts q/v biases at zero, which would hide a missed slot
        for name, p in reference.named_parameters():
            if name.endswith(("q_bias", "v_bias", "qkv.bias", "fc1.bias", "fc1_g.bias", "fc1_x.bias")):
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(name)))
    model = create_vit(spec).eval()
    load_init_weights(model, reference.state_dict(), source="test")
    return model, reference


def _masks(layout: VitLayout, seed: int) -> GroupMasks:
    g = torch.Generator().manual_seed(seed)
    heads = torch.rand(layout.depth, layout.num_heads, generator=g) > 0.4
    neurons = torch.rand(layout.depth, layout.mlp_hidden, generator=g) > 0.5
    heads[:, 0] = neurons[:, 0] = True
    return GroupMasks(heads, neurons)


@pytest.mark.parametrize("family", FAMILIES)
def test_compaction_equals_the_masked_model(family):
    spec = _spec(family)
    model, reference = _runner_model(spec)
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():  # EVA's conversion to AttentionRope changes nothing
        assert (model(x) - reference(x)).abs().max().item() <= 1e-6
    layout = VitLayout.from_model(model, target="both")
    keep = _masks(layout, 0)
    params = model_params(model)
    apply_param_masks_(params, create_param_masks(params, keep, GroupMasks.full(layout), layout))
    small = compact_model(model, spec, GroupMasks.full(layout), keep, layout).eval()
    assert [b.attn.num_heads for b in small.blocks] == keep.heads.sum(1).tolist()
    assert [b.mlp.fc2.in_features for b in small.blocks] == keep.neurons.sum(1).tolist()
    with torch.no_grad():
        assert (small(x) - model(x)).abs().max().item() <= 1e-6  # 0.0 measured on x86-64


@pytest.mark.parametrize("family", FAMILIES)
def test_a_removed_group_is_zero_in_every_tensor_it_owns(family):
    spec = _spec(family)
    model, reference = _runner_model(spec)
    layout = VitLayout.from_model(model, target="both")
    keep = GroupMasks.full(layout)
    keep.heads[1, 2] = False
    keep.neurons[0, 5] = False
    params = model_params(model)
    apply_param_masks_(params, create_param_masks(params, keep, GroupMasks.full(layout), layout))
    d, hidden = layout.head_dim, layout.mlp_hidden
    sd = model.state_dict()
    qkv = sd["blocks.1.attn.qkv.weight"].view(3, layout.num_heads, d, -1)
    assert (qkv[:, 2] == 0).all() and (qkv[:, 1] != 0).any()
    assert (sd["blocks.1.attn.proj.weight"].view(-1, layout.num_heads, d)[:, 2] == 0).all()
    if "blocks.1.attn.qkv.bias" in sd:
        bias = sd["blocks.1.attn.qkv.bias"].view(3, layout.num_heads, d)
        assert (bias[:, 2] == 0).all() and (bias[0, 1] != 0).all()
    if family == "glu_mlp" or family == "eva_attention":  # both halves of the packed fc1
        fc1 = sd["blocks.0.mlp.fc1.weight"]
        assert (fc1[5] == 0).all() and (fc1[hidden + 5] == 0).all() and (fc1[hidden + 4] != 0).any()
        assert sd["blocks.0.mlp.fc1.bias"][5] == 0 and sd["blocks.0.mlp.fc1.bias"][hidden + 5] == 0
    else:
        for name in ("fc1_g", "fc1_x"):
            assert (sd[f"blocks.0.mlp.{name}.weight"][5] == 0).all()
    assert (sd["blocks.0.mlp.fc2.weight"][:, 5] == 0).all()


def test_eva_head_scores_include_the_q_and_v_biases():
    spec = _spec("eva_attention")
    model, reference = _runner_model(spec)
    layout = VitLayout.from_model(model, target="both")
    scores = score_groups(MagnitudeImportance(), model_params(model), layout, GroupMasks.full(layout))
    ref = reference.state_dict()
    d, h, dim = layout.head_dim, 3, layout.embed_dim
    rows = slice(h * d, (h + 1) * d)
    qkv = ref["blocks.0.attn.qkv.weight"].view(3, 4, d, dim)[:, h]
    expected = (qkv.abs().sum() + ref["blocks.0.attn.q_bias"][rows].abs().sum()
                + ref["blocks.0.attn.v_bias"][rows].abs().sum()
                + ref["blocks.0.attn.proj.weight"][:, rows].abs().sum())
    assert scores.heads[0, h].item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.fixture(scope="module")
def family_inits(tmp_path_factory):
    from ckpttool.saving import save_checkpoint

    folder = tmp_path_factory.mktemp("family_inits")
    paths = {}
    for family in FAMILIES:
        spec = _spec(family)
        path = folder / f"{family}_random_init.safetensors"
        save_checkpoint(path, _timm_model(spec).state_dict(),
                        metadata={"timm_name": spec.arch, "img_size": 16, "patch_size": 4, "num_classes": 10,
                                  "model_kwargs": spec.model_kwargs})
        paths[family] = path
    return paths


@pytest.mark.parametrize("family,compact", [("glu_mlp", True), ("swiglu", True), ("eva_attention", True),
                                            ("eva_attention", False)])
def test_a_run_prunes_the_family_and_exports_a_model_timm_runs(family_inits, tmp_path, family, compact):
    opts = base_options(family_inits[family], tmp_path / "run", states=3, epochs=1, rate=0.5, target="both",
                        compact_between_states=compact, method="rsst" if family == "swiglu" else "refill")
    result = run_pruning(resolve_config(None, opts))
    last = result.states[-1]
    assert last["kept_heads"] == 2 and last["kept_heads_per_block"] == [1, 1]
    model = load_compact_model(result.final_model)
    assert all(type(m).__module__.startswith(("timm.", "torch.")) for m in model.modules())
    assert [b.attn.num_heads for b in model.blocks] == last["kept_heads_per_block"]
    assert [b.mlp.fc2.in_features for b in model.blocks] == last["kept_neurons_per_block"]
    with torch.no_grad():
        out = model(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    # EVA's k bias (head_dim 8 per kept head): fixed zeros, not parameters
    fixed = 8 * last["kept_heads"] if family == "eva_attention" else 0
    assert sum(p.numel() for p in model.parameters()) - fixed == last["params"]


def _cli(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    out, err = capsys.readouterr()
    return e.value.code, out, err


@pytest.mark.parametrize("arch,kwargs,target,module,why", [
    ("eva02_tiny_patch14_224", {"scale_mlp": True}, "mlp", "blocks.0.mlp.norm", "scale-norm inside the MLP"),
    ("eva02_tiny_patch14_224", {"qkv_fused": False}, "head", "blocks.0.attn.q_proj", "separate q/k/v projections"),
    ("beit_base_patch16_224", {}, "both", "blocks.0.attn", "Attention from timm.models.beit"),
])
def test_a_block_the_runner_cannot_group_is_refused_before_the_run(tmp_path, capsys, arch, kwargs, target,
                                                                    module, why):
    from ckpttool.saving import save_checkpoint

    torch.manual_seed(0)
    sd = timm.create_model(arch, img_size=16, patch_size=4, num_classes=10, **TINY, **kwargs).state_dict()
    init = tmp_path / "init.safetensors"
    save_checkpoint(init, sd, metadata={"timm_name": arch, "img_size": 16, "patch_size": 4, "num_classes": 10,
                                        "model_kwargs": {**TINY, **kwargs}})
    out_dir = tmp_path / "run"
    code, _, err = _cli(["run-prune", *cli_args(base_options(init, out_dir, target=target))], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: '{arch}' has {module} ({why}") and "cannot resize exactly" in err
    assert not out_dir.exists()


def test_summary_records_the_structure_of_every_state(family_inits, tmp_path):
    opts = base_options(family_inits["eva_attention"], tmp_path / "run", states=2, epochs=1, rate=0.5, target="head")
    run_pruning(resolve_config(None, opts))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [s["kept_heads_per_block"] for s in summary["states"]] == [[4, 4], [2, 2]]
    assert summary["states"][1]["flops"] < summary["states"][0]["flops"]

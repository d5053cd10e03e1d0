import pytest
import torch
from conftest import create_tiny_vit

from pruning_runner.compaction import (
    architecture_text,
    compact_model,
    load_compact_model,
    parse_architecture_text,
    save_compact_model,
)
from pruning_runner.groups import GroupMasks, VitLayout, apply_param_masks_, create_param_masks, model_params
from pruning_runner.model import ModelSpec

SPEC = ModelSpec(arch="vit_tiny_patch16_224", img_size=16, patch_size=4, num_classes=10,
                 model_kwargs=dict(embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0))


def _masks(layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    heads = torch.rand(layout.depth, layout.num_heads, generator=g) > 0.4
    heads[:, 0] = True
    neurons = torch.rand(layout.depth, layout.mlp_hidden, generator=g) > 0.5
    neurons[:, 0] = True
    return GroupMasks(heads, neurons)


def test_param_masks_zero_exactly_whole_groups():
    model = create_tiny_vit()
    layout = VitLayout.from_model(model)
    keep = _masks(layout)
    params = model_params(model)
    apply_param_masks_(params, create_param_masks(params, keep, GroupMasks.full(layout), layout))
    d, dim = layout.head_dim, layout.embed_dim
    for b in range(layout.depth):
        qkv = params[f"blocks.{b}.attn.qkv.weight"].view(3, layout.num_heads, d, dim)
        bias = params[f"blocks.{b}.attn.qkv.bias"].view(3, layout.num_heads, d)
        proj = params[f"blocks.{b}.attn.proj.weight"].view(dim, layout.num_heads, d)
        for h in range(layout.num_heads):
            zero = [bool((t == 0).all()) for t in (qkv[:, h], bias[:, h], proj[:, h])]
            if keep.heads[b, h]:
                assert not zero[0] and not zero[2]  # (timm's qkv bias starts at zero)
            else:
                assert zero == [True, True, True]
        fc1 = params[f"blocks.{b}.mlp.fc1.weight"]
        fc2 = params[f"blocks.{b}.mlp.fc2.weight"]
        dead = ~keep.neurons[b]
        assert bool((fc1[dead] == 0).all()) and bool((fc2[:, dead] == 0).all())
        assert bool((fc1[~dead].abs().sum(1) > 0).all())


@pytest.mark.parametrize("seed", [0, 1])
def test_compacted_model_equals_masked_model(seed):
    model = create_tiny_vit(seed=seed).eval()
    layout = VitLayout.from_model(model)
    keep = _masks(layout, seed)
    params = model_params(model)
    apply_param_masks_(params, create_param_masks(params, keep, GroupMasks.full(layout), layout))
    small = compact_model(model, SPEC, GroupMasks.full(layout), keep).eval()
    assert [blk.attn.num_heads for blk in small.blocks] == keep.heads.sum(1).tolist()
    assert [blk.mlp.fc1.out_features for blk in small.blocks] == keep.neurons.sum(1).tolist()
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (small(x) - model(x)).abs().max().item() <= 1e-4


def test_compacting_twice_maps_to_original_indices():
    model = create_tiny_vit().eval()
    layout = VitLayout.from_model(model)
    first = _masks(layout, 0)
    second = GroupMasks(first.heads.clone(), first.neurons.clone())
    for b in range(layout.depth):  # drop one more kept head / neuron of each block
        second.heads[b, first.heads[b].nonzero()[-1]] = False
        second.neurons[b, first.neurons[b].nonzero()[-1]] = False
    params = model_params(model)
    apply_param_masks_(params, create_param_masks(params, second, GroupMasks.full(layout), layout))
    mid = compact_model(model, SPEC, GroupMasks.full(layout), first)
    small = compact_model(mid, SPEC, first, second).eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert (small(x) - model(x)).abs().max().item() <= 1e-4


def test_export_and_load_compact_model(tmp_path):
    model = create_tiny_vit().eval()
    layout = VitLayout.from_model(model)
    keep = _masks(layout)
    small = compact_model(model, SPEC, GroupMasks.full(layout), keep).eval()
    path = tmp_path / "final_compact.safetensors"
    save_compact_model(path, small, SPEC, keep)
    loaded = load_compact_model(path)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), small(x))
    text = architecture_text(keep)
    assert parse_architecture_text(text) == (keep.heads.sum(1).tolist(), keep.neurons.sum(1).tolist())
    assert text.startswith("blocks.0.attn.num_heads:[")


@pytest.mark.parametrize("kwargs,module", [
    (dict(scale_attn_norm=True), "blocks.0.attn.norm"),
    (dict(scale_mlp_norm=True), "blocks.0.mlp.norm"),
])
def test_a_vit_with_scale_norm_is_refused_up_front_naming_the_module(kwargs, module):
    from ckpttool.errors import InvalidArgumentError
    from pruning_runner.model import create_vit

    spec = ModelSpec(arch=SPEC.arch, img_size=16, patch_size=4, num_classes=10,
                     model_kwargs={**SPEC.model_kwargs, **kwargs})
    with pytest.raises(InvalidArgumentError, match=rf"has {module} \(.*scale-norm.*cannot resize exactly"):
        VitLayout.from_model(create_vit(spec), target="both")
    other = "mlp" if ".attn." in module else "head"  # the other kind alone can still be pruned
    assert VitLayout.from_model(create_vit(spec), target=other).depth == 2


def test_compaction_refuses_gated_attention_naming_the_module():
    from ckpttool.errors import InvalidArgumentError
    from pruning_runner.compaction import resize_vit_

    model = create_tiny_vit()
    attn = model.blocks[1].attn
    attn.gate = torch.nn.Linear(32, attn.attn_dim)  # timm's Attention(gated=True) layout
    with pytest.raises(InvalidArgumentError, match=r"blocks\.1\.attn\.gate \(gated attention\)"):
        resize_vit_(model, [2, 2], [64, 64])

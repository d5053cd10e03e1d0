import pytest
import torch
from conftest import create_tiny_vit

from pruning_runner.groups import GroupMasks, VitLayout, model_params
from pruning_runner.importance import (
    L2Importance,
    MagnitudeImportance,
    RemainImportance,
    accumulate_taylor_saliency,
    create_importance,
    score_groups,
    unstructured_keep_masks,
)


@pytest.fixture()
def vit():
    model = create_tiny_vit()
    return model, VitLayout.from_model(model), model_params(model)


def test_magnitude_and_l2_match_the_group_definition(vit):
    model, layout, params = vit
    full = GroupMasks.full(layout)
    mag = score_groups(MagnitudeImportance(), params, layout, full)
    l2 = score_groups(L2Importance(), params, layout, full)
    d, dim, H = layout.head_dim, layout.embed_dim, layout.num_heads
    b, h, j = 1, 2, 5
    qkv = params[f"blocks.{b}.attn.qkv.weight"].detach().view(3, H, d, dim)[:, h]
    bias = params[f"blocks.{b}.attn.qkv.bias"].detach().view(3, H, d)[:, h]
    proj = params[f"blocks.{b}.attn.proj.weight"].detach().view(dim, H, d)[:, h]
    group = torch.cat([qkv.reshape(-1), bias.reshape(-1), proj.reshape(-1)])
    assert mag.heads[b, h].item() == pytest.approx(group.abs().sum().item(), rel=1e-5)
    assert l2.heads[b, h].item() == pytest.approx(group.norm().item(), rel=1e-5)
    neuron = torch.cat([params[f"blocks.{b}.mlp.fc1.weight"][j], params[f"blocks.{b}.mlp.fc1.bias"][j:j + 1],
                        params[f"blocks.{b}.mlp.fc2.weight"][:, j]]).detach()
    assert mag.neurons[b, j].item() == pytest.approx(neuron.abs().sum().item(), rel=1e-5)


def test_remain_is_the_surviving_fraction_at_the_density(vit):
    model, layout, params = vit
    keep = unstructured_keep_masks(params, layout, 0.3, heads=True, neurons=True)
    head_kept = sum(int(keep[n].sum()) for n in keep if ".attn." in n)
    head_total = sum(keep[n].numel() for n in keep if ".attn." in n)
    assert head_kept == round(0.3 * head_total)
    remain = score_groups(RemainImportance(), params, layout, GroupMasks.full(layout), keep=keep)
    assert bool(((remain.heads >= 0) & (remain.heads <= 1)).all())
    assert remain.neurons.mean().item() == pytest.approx(0.3, abs=0.05)


def test_absent_groups_score_minus_infinity(vit):
    model, layout, params = vit
    s = score_groups(create_importance("magnitude"), params, layout, GroupMasks.full(layout))
    assert torch.isfinite(s.heads).all()


def test_taylor_saliency_is_w_times_grad_and_leaves_weights(vit):
    model, layout, params = vit
    before = {k: v.detach().clone() for k, v in params.items()}
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    sal = accumulate_taylor_saliency(model, params, layout, [(x, y)], torch.nn.CrossEntropyLoss())
    model.zero_grad()
    torch.nn.CrossEntropyLoss()(model.eval()(x), y).backward()
    n = "blocks.0.mlp.fc1.weight"
    assert torch.allclose(sal[n], (params[n] * params[n].grad).abs().detach(), atol=1e-7)
    assert all(torch.equal(before[k], params[k].detach()) for k in params)

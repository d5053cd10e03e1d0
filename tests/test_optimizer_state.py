"""params_without_optimizer_state: optimizer numbers -> state-dict names, only when unambiguous."""

from __future__ import annotations

import pytest
import torch

from ckpttool.loading import load_checkpoint
from ckpttool.verdict.optimizer_state import is_buffer, params_without_optimizer_state


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)
        self.bn = torch.nn.BatchNorm2d(2)
        self.dead = torch.nn.Linear(3, 3)  # never in the forward pass: no gradient, no optimizer state
        self.head = torch.nn.Linear(2, 2)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)).mean((2, 3)))


def _trained(opt_cls=torch.optim.Adam, groups=None):
    torch.manual_seed(0)
    net = _Net()
    opt = opt_cls(groups(net) if groups else net.parameters(), lr=0.1)
    net(torch.randn(4, 1, 5, 5)).sum().backward()
    opt.step()
    return net, opt


def _tensors(sd):
    return [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in sd.items()]


def test_a_dead_branch_is_named():
    net, opt = _trained()
    got = params_without_optimizer_state(_tensors(net.state_dict()), opt.state_dict())
    assert got == ("dead.weight", "dead.bias")


def test_sgd_without_momentum_has_no_state_for_anyone():
    net, opt = _trained(lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9))
    assert params_without_optimizer_state(_tensors(net.state_dict()), opt.state_dict()) == ("dead.weight", "dead.bias")


def test_buffers_are_recognised():
    assert is_buffer("bn.running_mean", "float32") and is_buffer("bn.num_batches_tracked", "int64")
    assert is_buffer("rel_pos_index", "int64") and not is_buffer("bn.weight", "float32")


def test_groups_out_of_module_order_are_refused_by_the_shape_check():
    """Weight-decay groups (biases and norms first) number parameters out of state-dict order."""
    def split(net):
        params = list(net.named_parameters())
        return [{"params": [p for n, p in params if p.ndim <= 1]}, {"params": [p for n, p in params if p.ndim > 1]}]

    net, opt = _trained(groups=split)
    assert params_without_optimizer_state(_tensors(net.state_dict()), opt.state_dict()) is None


@pytest.mark.parametrize(
    "optimizer",
    [
        None,
        [],
        [{"state": {}, "param_groups": []}, {"state": {}, "param_groups": []}],  # two optimizers
        {"state": {0: {}}, "param_groups": [{"params": [0, 0]}]},  # duplicate numbers
        {"state": {9: {}}, "param_groups": [{"params": [0]}]},  # state for an unknown number
        {"state": {}, "param_groups": [{"params": ["a"]}]},
        {"state": [], "param_groups": []},
    ],
)
def test_malformed_or_ambiguous_gives_none(optimizer):
    assert params_without_optimizer_state([("a", (2,), "float32")], optimizer) is None


def test_count_mismatch_gives_none():
    opt = {"state": {}, "param_groups": [{"params": [0, 1, 2]}]}
    assert params_without_optimizer_state([("a", (2,), "float32")], opt) is None


@pytest.mark.parametrize(
    ("obj", "wrapper", "prefixes"),
    [
        (lambda sd, o: {"model_state_dict": sd, "optimizer_state_dict": o}, "model_state_dict", ()),
        (lambda sd, o: {"model": {"state_dict": sd}, "optimizer": o}, "model.state_dict", ()),
        (lambda sd, o: {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "optimizer_states": [o],
                        "pytorch-lightning_version": "2.4.0"}, "state_dict", ("model.",)),
    ],
)
def test_training_wrappers_are_unwrapped_and_optimizer_state_exposed(tmp_path, obj, wrapper, prefixes):
    """Issue 10, item 6."""
    net, opt = _trained()
    path = tmp_path / "ckpt.pth"
    torch.save(obj(net.state_dict(), opt.state_dict()), path)
    with load_checkpoint(path) as ckpt:
        assert ckpt.wrapper == wrapper
        assert ckpt.stripped_prefixes == prefixes
        assert [t.name for t in ckpt.tensors] == list(net.state_dict())
        assert ckpt.params_without_optimizer_state == ("dead.weight", "dead.bias")


def test_no_optimizer_state_gives_none(tmp_path):
    net, _ = _trained()
    torch.save({"state_dict": net.state_dict()}, tmp_path / "a.pth")
    with load_checkpoint(tmp_path / "a.pth") as ckpt:
        assert ckpt.params_without_optimizer_state is None


def test_model_prefix_is_kept_outside_lightning_files(tmp_path):
    torch.save({"state_dict": {"model.w": torch.ones(2)}}, tmp_path / "a.pth")
    with load_checkpoint(tmp_path / "a.pth") as ckpt:
        assert [t.name for t in ckpt.tensors] == ["model.w"] and ckpt.stripped_prefixes == ()


def test_inspect_reports_weight_sets_and_parameters_without_optimizer_state(tmp_path):
    from ckpttool.inspection import inspect_file

    net, opt = _trained()
    torch.save({"state_dict": net.state_dict(), "state_dict_ema": net.state_dict(), "optimizer": opt.state_dict()},
               tmp_path / "a.pth")
    d = inspect_file(tmp_path / "a.pth").to_dict()
    assert d["weight_sets"] == ["state_dict", "state_dict_ema"]
    assert d["params_without_optimizer_state"] == ["dead.weight", "dead.bias"]

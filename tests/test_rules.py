import numpy as np
import pytest

from ckpttool.errors import InvalidArgumentError
from ckpttool.loading import TensorInfo
from ckpttool.verdict.rules import evaluate_rule, parse_rule
from ckpttool.verdict.stats import compute_tensor_stats


def _stats(name, arr):
    arr = np.asarray(arr, dtype=np.float32)
    return compute_tensor_stats(TensorInfo(name, tuple(arr.shape), "float32", arr.size), arr)


@pytest.fixture(scope="module")
def stats():
    rng = np.random.default_rng(0)
    return [
        _stats("blocks.0.attn.qkv.weight", rng.normal(0, 0.02, (96, 32))),
        _stats("blocks.1.attn.qkv.weight", rng.normal(0, 0.08, (96, 32))),
    ]


def test_parse_rule_fields():
    r = parse_rule("blocks.0.attn.qkv.weight:std>0.05")
    assert (r.tensor, r.stat, r.op, r.value) == ("blocks.0.attn.qkv.weight", "std", ">", 0.05)
    assert parse_rule("x:kurtosis <= -1e-3").value == pytest.approx(-1e-3)


@pytest.mark.parametrize("bad", ["std>0.05", "x:std=>1", "x:std>abc", "x:bogus>1", ""])
def test_parse_rule_rejects(bad):
    with pytest.raises(InvalidArgumentError, match="rule"):
        parse_rule(bad)


def test_old_guard_fails_on_small_std(stats):
    res = evaluate_rule(parse_rule("blocks.0.attn.qkv.weight:std>0.05"), stats)
    assert not res.passed
    assert res.tensors == ("blocks.0.attn.qkv.weight",)
    assert res.actual[0] == pytest.approx(0.02, rel=0.1)
    assert "failed for blocks.0.attn.qkv.weight=" in res.message


def test_glob_rule_needs_every_match(stats):
    assert not evaluate_rule(parse_rule("blocks.*.attn.qkv.weight:std>0.05"), stats).passed
    assert evaluate_rule(parse_rule("blocks.*.attn.qkv.weight:std>0.01"), stats).passed


def test_rule_on_missing_tensor_fails(stats):
    res = evaluate_rule(parse_rule("nope.weight:std>0"), stats)
    assert not res.passed and res.message == "no tensor matches 'nope.weight'"

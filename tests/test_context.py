"""Corrections that need the rest of the checkpoint: unused BatchNorm layers, uncorroborated vectors."""

from __future__ import annotations

import numpy as np
import pytest

from ckpttool.loading import TensorInfo
from ckpttool.verdict.context import UNUSED_BATCHNORM_NOTE
from ckpttool.verdict.stats import compute_stats_from_arrays

RNG = np.random.default_rng(7)


def _bn(prefix: str, *, weight: np.ndarray, running_mean: np.ndarray, running_var: np.ndarray):
    arrays = {
        f"{prefix}.weight": weight,
        f"{prefix}.bias": RNG.normal(0.0, 0.1, weight.size).astype(np.float32),
        f"{prefix}.running_mean": running_mean,
        f"{prefix}.running_var": running_var,
    }
    return [(TensorInfo(n, a.shape, "float32", a.size), a) for n, a in arrays.items()]


def _by_name(items):
    return {s.name: s for s in compute_stats_from_arrays(items)}


GAIN = RNG.normal(0.1, 0.1, 256).astype(np.float32)  # timm's RepVGG BatchNorm weight init


def test_gain_of_a_batchnorm_that_never_ran_is_an_init():
    out = _by_name(_bn("bn", weight=GAIN, running_mean=np.zeros(256, np.float32),
                       running_var=np.ones(256, np.float32)))
    assert out["bn.weight"].status == "init-like"
    assert out["bn.weight"].note == UNUSED_BATCHNORM_NOTE
    assert out["bn.running_mean"].status == "init-constant"


@pytest.mark.parametrize("which", ["running_mean", "running_var"])
def test_same_gain_counts_as_trained_once_the_running_stats_moved(which):
    mean = np.zeros(256, np.float32)
    var = np.ones(256, np.float32)
    moved = {"running_mean": mean, "running_var": var}
    moved[which] = moved[which] + RNG.uniform(0.01, 0.2, 256).astype(np.float32)
    out = _by_name(_bn("bn", weight=GAIN, **moved))
    assert out["bn.weight"].status == "trained"


def test_only_the_layer_whose_stats_are_untouched_is_corrected():
    untouched = _bn("a", weight=GAIN, running_mean=np.zeros(256, np.float32), running_var=np.ones(256, np.float32))
    used = _bn("b", weight=GAIN, running_mean=RNG.normal(0, 1, 256).astype(np.float32),
               running_var=RNG.uniform(0.5, 2, 256).astype(np.float32))
    out = _by_name(untouched + used)
    assert (out["a.weight"].status, out["b.weight"].status) == ("init-like", "trained")


def _trained_matrix(name="blocks.0.mlp.fc1.weight"):
    # rank-one structure on top of iid noise: a spectral ratio far above any iid draw
    u, v = RNG.normal(size=(64, 1)), RNG.normal(size=(1, 64))
    w = (RNG.normal(size=(64, 64)) + 0.6 * u @ v).astype(np.float32)
    return TensorInfo(name, w.shape, "float32", w.size), w


def _norm_gain(name="blocks.0.norm1.weight"):
    return TensorInfo(name, GAIN.shape, "float32", GAIN.size), GAIN


def _iid_matrix(name="blocks.0.attn.qkv.weight"):
    w = RNG.normal(0, 0.02, size=(64, 64)).astype(np.float32)
    return TensorInfo(name, w.shape, "float32", w.size), w


def test_vector_alone_is_not_evidence_of_training():
    # EfficientViM draws its state decay from U(1, 16), RepVGG its gains from N(0.1, 0.1) (no
    # running stats when only parameters are saved): a non-zero mean is not enough on its own
    out = _by_name([_norm_gain(), _iid_matrix()])
    assert out["blocks.0.attn.qkv.weight"].status == "init-like"
    assert out["blocks.0.norm1.weight"].status == "too-small"
    assert out["blocks.0.norm1.weight"].note.startswith("unconfirmed (non-zero mean")


def test_moved_constant_stands_alone():
    # GroupNorm gains of a small net trained briefly: 1.0 -> 0.98 +- 0.01 while every conv stays
    # within noise of its init; a spread far below the mean is a moved constant, not a random draw
    gain = RNG.normal(0.98, 0.01, 128).astype(np.float32)
    out = _by_name([(TensorInfo("blocks.0.gn.weight", gain.shape, "float32", gain.size), gain), _iid_matrix()])
    assert out["blocks.0.gn.weight"].status == "trained"


@pytest.mark.parametrize("draw", [lambda n: RNG.normal(0.1, 0.1, n), lambda n: RNG.uniform(1, 16, n)],
                         ids=["repvgg-normal", "efficientvim-uniform"])
def test_random_non_zero_mean_draws_do_not_stand_alone(draw):
    v = draw(256).astype(np.float32)
    out = _by_name([(TensorInfo("blocks.0.mixer.A", v.shape, "float32", v.size), v), _iid_matrix()])
    assert out["blocks.0.mixer.A"].status == "too-small"


def test_vector_stands_when_a_matrix_shows_training():
    out = _by_name([_norm_gain(), _trained_matrix()])
    assert out["blocks.0.mlp.fc1.weight"].status == "trained"
    assert out["blocks.0.norm1.weight"].status == "trained"


def test_a_trained_head_does_not_vouch_for_the_body():
    # a linear probe trained on a frozen random body: the head is excluded from the verdict
    out = _by_name([_norm_gain(), _iid_matrix(), _trained_matrix("head.weight")])
    assert out["blocks.0.norm1.weight"].status == "too-small"


def test_vectors_stand_when_there_is_no_matrix_to_judge():
    # LPIPS ships non-negative per-channel weights and nothing else: vectors are all there is
    out = _by_name([_norm_gain("lin0.model.1.weight")])
    assert out["lin0.model.1.weight"].status == "trained"


def test_used_batchnorm_vouches_for_its_own_vectors():
    out = _by_name(_bn("bn", weight=GAIN, running_mean=RNG.normal(0, 1, 256).astype(np.float32),
                       running_var=RNG.uniform(0.5, 2, 256).astype(np.float32)))
    assert out["bn.weight"].status == "trained"


def _used_bn(prefix: str, n: int = 32):
    return _bn(prefix, weight=RNG.normal(1.0, 0.2, n).astype(np.float32),
               running_mean=RNG.normal(0, 1, n).astype(np.float32), running_var=RNG.uniform(0.5, 2, n).astype(np.float32))


def test_a_batchnorm_that_never_ran_beside_ones_that_did_is_evidence_of_an_untouched_module():
    from ckpttool.verdict.context import NEVER_RAN_NOTE

    reset = _bn("block2.bn", weight=np.ones(32, np.float32), running_mean=np.zeros(32, np.float32),
                running_var=np.ones(32, np.float32))
    out = _by_name(_used_bn("block1.bn") + reset)
    assert out["block2.bn.running_mean"].status == "init-like"
    assert out["block2.bn.running_mean"].note == NEVER_RAN_NOTE.format(1)
    # in a random init every BatchNorm is at 0/1: nothing to compare with, nothing said
    alone = _by_name(reset)
    assert alone["block2.bn.running_mean"].status == "init-constant"


def test_a_short_gain_that_moved_from_one_while_its_statistics_ran_is_trained():
    from ckpttool.verdict.context import MOVED_GAIN_NOTE

    out = _by_name(_used_bn("conv2.bn", n=8))  # 8 channels: too short to judge as a distribution
    assert out["conv2.bn.weight"].status == "trained" and out["conv2.bn.weight"].note == MOVED_GAIN_NOTE
    ran_but_gain_at_one = _bn("bn", weight=np.ones(8, np.float32), running_mean=RNG.normal(0, 1, 8).astype(np.float32),
                              running_var=RNG.uniform(0.5, 2, 8).astype(np.float32))
    assert _by_name(ran_but_gain_at_one)["bn.weight"].status == "init-constant"

"""Checkpoint verdict: grouping, head handling, random inits, a trained model and its variants."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ckpttool.verdict import VERDICTS, judge
from ckpttool.verdict.grouping import group_of, is_head_tensor
from ckpttool.verdict.stats import TensorStats

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from _trained import trained_resnet  # noqa: E402

from ckpttool.verdict import _calibration as cal  # noqa: E402


def verdict_of(model_or_sd, **kw):
    sd = model_or_sd if isinstance(model_or_sd, dict) else model_or_sd.state_dict()
    return judge(cal.stats_of_state_dict(sd), **kw)


# ---------------------------------------------------------------- naming

@pytest.mark.parametrize("name,group", [
    ("blocks.3.attn.qkv.weight", "blocks.3"),
    ("layer2.1.bn1.running_mean", "layer2.1"),
    ("stages.1.blocks.0.conv_dw.weight", "stages.1.blocks.0"),
    ("stages.1.downsample.1.weight", "stages.1"),
    ("blocks.2.1.conv_pw.weight", "blocks.2.1"),
    ("layers.0.blocks.1.attn.relative_position_bias_table", "layers.0.blocks.1"),
    ("s1.b2.conv1.conv.weight", "s1.b2"),
    ("features.3.conv.0.weight", "features.3"),
    ("patch_embed.proj.weight", "patch_embed"),
    ("pos_embed", "pos_embed"),
    ("cls_token", "cls_token"),
    ("conv1.weight", "stem"),
    ("bn1.running_var", "stem"),
    ("norm.weight", "norm"),
    ("backbone.layer1.0.conv1.weight", "backbone.layer1.0"),
    ("bn2.weight", "conv_head"),  # EfficientNet: the final 1x1 conv and its norm are one group
    ("conv_head.weight", "conv_head"),
    ("layer1.0.bn2.weight", "layer1.0"),
    ("conv2_BN.running_mean", "conv2"),  # Keras-converted names (torchcrepe): the norm joins its conv
    ("conv3.weight", "conv3"),
    ("fc_norm.weight", "fc_norm"),
])
def test_group_of(name, group):
    assert group_of(name) == group


@pytest.mark.parametrize("name,head", [
    ("head.weight", True), ("head.fc.weight", True), ("fc.bias", True), ("classifier.weight", True),
    ("last_linear.weight", True), ("head.l.weight", True), ("head_dist.weight", True),
    ("blocks.0.mlp.fc1.weight", False), ("fc_norm.weight", False), ("conv_head.weight", False),
    ("norm.weight", False), ("pre_logits.fc.weight", False),
    # heads as real files name them: any *_head but EfficientNet's conv_head, a masked-LM predictions head
    ("lm_head.weight", True), ("mlm_head.dense.weight", True), ("classification_head.out_proj.weight", True),
    ("predictions.decoder.weight", True), ("model.conv_head.weight", False),
])
def test_is_head_tensor(name, head):
    assert is_head_tensor(name) is head


# ---------------------------------------------------------------- random inits

RANDOM = [
    ("vit_tiny_patch16_224", dict(depth=2)),
    ("vit_tiny_patch16_224", dict(depth=2, weight_init="jax")),
    ("vit_tiny_patch16_224", dict(depth=2, weight_init="moco")),
    ("vit_small_patch16_224", dict(depth=2, img_size=32, patch_size=4)),
    ("test_vit", {}),
    ("test_convnext", {}),
    ("test_efficientnet", {}),
    ("resnet18", {}),
    ("efficientvim_m1", {}),  # state decay drawn from U(1, 16): a non-zero-mean random vector
]


@pytest.mark.parametrize("name,kwargs", RANDOM, ids=[f"{n}-{k}" for n, k in RANDOM])
def test_random_inits_are_random(name, kwargs):
    torch.manual_seed(0)
    v = verdict_of(cal.create_random_model(name, **kwargs))
    assert v.verdict == "random", v.reason
    assert v.tensors_trained == 0


def test_old_guard_counterexamples_are_random():
    """design.md: moco ViT qkv std 0.051 and ResNet-50 layer1.0.conv2 std 0.059 fooled std > 0.05."""
    torch.manual_seed(0)
    vit = cal.create_random_model("vit_small_patch16_224", depth=2, weight_init="moco")
    assert vit.blocks[0].attn.qkv.weight.std().item() > 0.05
    assert verdict_of(vit).verdict == "random"
    r50 = cal.create_random_model("resnet50")
    assert r50.layer1[0].conv2.weight.std().item() > 0.05
    assert verdict_of(r50).verdict == "random"


# ---------------------------------------------------------------- a trained model and its variants

def test_structurally_pruned_random_init_is_still_random():
    # 70% of the neurons and 2 of 3 heads zeroed: whole rows and columns of zeros make even an iid
    # matrix look low-rank unless those exact lines are left out
    torch.manual_seed(0)
    model = cal.prune_structurally(cal.create_random_model("vit_tiny_patch16_224", depth=2), 1, 0.3)
    assert float((model.blocks[0].mlp.fc1.weight == 0).float().mean()) > 0.6
    v = verdict_of(model)
    assert v.verdict == "random", v.reason


@pytest.fixture(scope="module")
def trained():
    model, acc = trained_resnet()
    assert acc >= 0.9
    return model


def test_trained_model_is_pretrained(trained):
    v = verdict_of(trained)
    assert v.verdict == "pretrained", v.reason
    assert v.untouched_groups == ()
    assert not v.head_included and [s.name for s in v.head] == ["fc.weight", "fc.bias"]


def test_head_reset_is_still_pretrained_and_head_counts_when_included(trained):
    model = cal.reset_head(trained, num_classes=10)
    v = verdict_of(model)
    assert v.verdict == "pretrained"
    with_head = verdict_of(model, include_head=True)
    assert with_head.head_included
    assert with_head.tensors_total == v.tensors_total + 2
    assert with_head.tensors_init_like == v.tensors_init_like + 1  # fresh fc.weight
    assert with_head.verdict == "partial" and with_head.untouched_groups == ("fc",)


def test_reinitialised_middle_blocks_are_partial_and_named(trained):
    v = verdict_of(cal.reinit_modules(trained, ["layer2.0", "layer3.0"]))
    assert v.verdict == "partial"
    assert v.untouched_groups == ("layer2.0", "layer3.0")


def test_reinitialised_stem_alone_is_caught_by_its_batchnorms(trained):
    """A trained ResNet whose stem alone was re-initialised (an ``in_chans`` change loaded with
    mismatched keys skipped): the stem is an input layer, which counts only on evidence of its own,
    and here its BatchNorms never ran while every other one did."""
    model = cal.reinit_modules(trained, ["conv1", "bn1"])
    v = verdict_of(model)
    assert v.verdict == "partial" and v.untouched_groups == ("stem",) and v.uncounted_groups == (), v.reason
    assert dict(v.untouched_tensors)["bn1.running_mean"] == "BatchNorm never ran"
    assert "bn1.running_mean (BatchNorm never ran)" in v.reason


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_is_corrupt(trained, value):
    v = verdict_of(cal.inject_nonfinite(trained.state_dict(), "layer1.0.conv1.weight", value=value))
    assert v.verdict == "corrupt" and "layer1.0.conv1.weight" in v.reason


def test_nonfinite_in_excluded_head_is_still_corrupt(trained):
    v = verdict_of(cal.inject_nonfinite(trained.state_dict(), "fc.weight"))
    assert v.verdict == "corrupt"


def test_verdict_to_dict_is_json_ready(trained):
    d = json.loads(json.dumps(verdict_of(trained).to_dict()))
    assert d["verdict"] in VERDICTS and d["groups"] and d["head"][0]["name"] == "fc.weight"


# ---------------------------------------------------------------- rules on hand-made statistics

def ts(name, status):
    return TensorStats(name=name, shape=(8, 8), dtype="float32", numel=64, mean=0.0, std=1.0, min=-1.0,
                       max=1.0, kurtosis=0.0, zero_fraction=0.0, nonfinite=0, spectral_ratio=None,
                       row_norm_dispersion=None, status=status)


def test_groups_without_judgeable_tensors_never_make_it_partial():
    stats = [ts("cls_token", "init-constant"), ts("reg_token", "too-small"),
             ts("blocks.0.attn.qkv.weight", "trained"), ts("blocks.0.ls1.gamma", "init-constant"),
             ts("blocks.1.attn.qkv.weight", "trained"), ts("norm.weight", "init-constant")]
    v = judge(stats)
    assert v.verdict == "pretrained"
    assert {g.name: g.status for g in v.groups}["cls_token"] == "unjudged"


def test_nothing_judgeable_is_inconclusive_not_random():
    v = judge([ts("a", "init-constant"), ts("b", "too-small")])
    assert v.verdict == "inconclusive" and v.reason.startswith("cannot tell"), v.reason


def test_a_model_too_small_to_judge_is_inconclusive_and_a_larger_random_one_random():
    """Width-8 layers (SolTranNet): no test here has the power to see training, and no exact-init fit
    applies below 256 entries, so "random" would be a guess. A matrix large enough says random."""
    tiny = [TensorStats(name=f"layers.{i}.linear.weight", shape=(8, 8), dtype="float32", numel=64, mean=0.0,
                        std=0.3, min=-1.0, max=1.0, kurtosis=0.0, zero_fraction=0.0, nonfinite=0,
                        spectral_ratio=1.1, row_norm_dispersion=1.0, status="init-like") for i in range(4)]
    v = judge(tiny)
    assert v.verdict == "inconclusive" and v.inconclusive_groups == ("layers.0", "layers.1", "layers.2", "layers.3")
    assert "too small" in v.reason
    assert judge([mts("stem.proj.weight", "init-like"), *tiny]).verdict == "random"


def test_partial_names_untouched_groups_in_file_order():
    stats = [ts("pos_embed", "init-like"), ts("blocks.0.attn.qkv.weight", "trained"),
             ts("blocks.1.attn.qkv.weight", "init-like"), ts("blocks.2.attn.qkv.weight", "trained")]
    v = judge(stats)
    assert v.verdict == "partial" and v.untouched_groups == ("pos_embed", "blocks.1")
    assert "pos_embed" in v.reason


EMBEDDINGS_RESET = [ts("pos_embed", "init-like"), ts("patch_embed.proj.weight", "init-like"),
                    ts("blocks.0.attn.qkv.weight", "trained"), ts("blocks.0.norm1.weight", "trained")]


def test_untouched_input_layer_is_reported_beside_other_untouched_groups():
    v = judge(EMBEDDINGS_RESET)
    assert v.verdict == "partial" and v.untouched_groups == ("pos_embed",)
    assert v.uncounted_groups == ("patch_embed",) and "patch_embed" in v.reason
    strict = judge(EMBEDDINGS_RESET, count_stem=True)
    assert strict.untouched_groups == ("pos_embed", "patch_embed") and strict.uncounted_groups == ()


@pytest.mark.parametrize("stem", ["stem.proj.weight", "conv1.weight", "patch_embed.proj.weight",
                                  "backbone.stem.conv.weight"])
def test_untouched_input_layer_alone_does_not_make_it_partial(stem):
    stats = [ts(stem, "init-like"), ts("blocks.0.mlp.fc1.weight", "trained"), ts("blocks.1.mlp.fc1.weight", "trained")]
    v = judge(stats)
    assert v.verdict == "pretrained" and v.untouched_groups == ()
    assert len(v.uncounted_groups) == 1 and "not counted" in v.reason
    assert judge(stats, count_stem=True).verdict == "partial"


def test_input_layer_counts_when_nothing_else_can_be_judged():
    v = judge([ts("stem.conv.weight", "init-like"), ts("norm.weight", "init-constant")])
    assert v.verdict == "random" and v.uncounted_groups == ()
    assert judge([ts("stem.conv.weight", "trained")]).verdict == "pretrained"


def test_empty_matrix_reports_zero_counts():
    v = judge([])
    assert v.verdict == "inconclusive" and v.tensors_total == 0 and np.isfinite(v.tensors_trained)


def test_checkpoint_file_end_to_end(tmp_path, trained):
    """A safetensors file through loading -> compute_checkpoint_stats -> judge (bf16 included)."""
    loading = pytest.importorskip("ckpttool.loading")
    from safetensors.torch import save_file

    from ckpttool.verdict.stats import compute_checkpoint_stats

    sd = {k: v.contiguous() for k, v in trained.state_dict().items()}
    sd = {k: (v.bfloat16() if v.is_floating_point() else v) for k, v in sd.items()}
    path = tmp_path / "tiny_pretrained.safetensors"
    save_file(sd, str(path))
    with loading.load_checkpoint(path) as ckpt:
        stats = compute_checkpoint_stats(ckpt)
    assert sorted(s.name for s in stats) == sorted(sd)  # safetensors stores names sorted
    assert judge(stats).verdict == "pretrained"


# ---------------------------------------------------------------- documented limitations

def test_trained_mixer_with_a_stem_still_at_init_is_pretrained_stem_reported():
    """An MLP-Mixer trained on digits (>= 90% here, 98% in the benchmark) keeps a stem (the patch-
    embedding conv) that moved only 7-16% of its norm away from its random init. Nothing in the final
    weights shows it: spectral ratio 1.0-1.05, tail ratio ~3.1, kernel-mean (DC) variance ratio
    0.67-1.01 (iid: 1.0), row-norm dispersion all iid-like: this input layer genuinely looks untouched.
    It is reported, not counted, so the model reads as pretrained; counting it says partial ['stem']."""
    from ckpttool.verdict.stats import spectral_threshold

    torch.manual_seed(0)
    data = cal.load_digits_data(img_size=16)
    model = cal.create_random_model("mlp_mixer", img_size=16, patch_size=4, num_blocks=2, embed_dim=64,
                                    in_chans=1)
    info = cal.train_on_digits(model, data, epochs=12, lr=2e-3, batch=64)
    assert info["acc"] >= 0.9
    stats = cal.stats_of_state_dict(model.state_dict())
    stem = next(s for s in stats if s.name == "stem.proj.weight")
    assert stem.status == "init-like" and stem.spectral_ratio < spectral_threshold(64, 16) - 0.1
    v = judge(stats)
    assert v.verdict == "pretrained" and v.uncounted_groups == ("stem",), v.reason
    strict = judge(stats, count_stem=True)
    assert strict.verdict == "partial" and strict.untouched_groups == ("stem",)


def test_groupnorm_net_whose_convs_stay_iid_is_pretrained():
    """A small GroupNorm EfficientNet trained to >= 90% keeps every conv within noise of its init;
    only its norm gains moved (1.0 -> 0.98 +- 0.01). Those moved constants must count on their own."""
    torch.manual_seed(0)
    data = cal.load_digits_data(img_size=32, channels=3)
    model = cal.create_random_model("test_efficientnet_gn")
    info = cal.train_on_digits(model, data, epochs=15, lr=2e-3)
    assert info["acc"] >= 0.9
    stats = cal.stats_of_state_dict(model.state_dict())
    assert not any(s.status == "trained" and s.spectral_ratio is not None for s in stats)
    v = judge(stats)
    assert v.verdict == "pretrained", v.reason


def test_random_repvgg_is_random():
    # timm's RepVGG init draws BatchNorm weights from N(0.1, 0.1): a clearly non-zero mean, which
    # reads as a trained gain unless the layer's untouched running statistics are taken into account
    torch.manual_seed(0)
    v = verdict_of(cal.create_random_model("repvgg_a0"))
    assert v.verdict == "random", v.reason


# ---------------------------------------------------------------- layout: groups, head and input by position

@pytest.mark.parametrize("name,group", [
    ("_blocks.5._expand_conv.weight", "_blocks.5"),  # lukemelas EfficientNet
    ("cnn.10.weight", "cnn.10"),  # CRNN: an nn.Sequential of convs
    ("cnn.conv3.weight", "cnn.conv3"),
    ("lstm.weight_ih_l1", "lstm.l1"),  # one group per RNN layer
    ("rnn.lstm.weight_hh_l0_reverse", "rnn.lstm.l0"),
    ("features.0.0.weight", "features.0"),  # torchvision Conv2dNormActivation: conv + its BatchNorm
    ("features.18.1.running_mean", "features.18"),
    ("conv1.0.weight", "stem"),  # ResNet-D's deep stem
    ("lin0.model.1.weight", "lin0"),
])
def test_group_of_numbered_children_of_any_container(name, group):
    assert group_of(name) == group


def test_assign_groups_below_a_common_wrapper_and_split_of_a_shared_layer():
    from ckpttool.verdict.grouping import assign_groups

    layer = "albert.encoder.albert_layer_groups.0.albert_layers.0"
    names = ["albert.embeddings.word_embeddings.weight", "albert.encoder.embedding_hidden_mapping_in.weight",
             f"{layer}.attention.query.weight", f"{layer}.attention.key.weight", f"{layer}.ffn.weight",
             f"{layer}.ffn_output.weight", "albert.pooler.weight"]
    groups = assign_groups(names)
    assert groups["albert.embeddings.word_embeddings.weight"] == "albert.embeddings"
    assert groups[f"{layer}.attention.key.weight"] == f"{layer}.attention"
    assert groups[f"{layer}.ffn.weight"] == f"{layer}.ffn"
    # one block out of several is not split
    resnet = assign_groups(["conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "layer1.0.conv2.weight",
                            "layer2.0.conv1.weight", "layer2.0.conv2.weight", "layer3.0.conv1.weight",
                            "layer3.0.conv2.weight", "fc.weight"])
    assert resnet["layer1.0.conv2.weight"] == "layer1.0"


def mts(name, status, ratio=1.0):
    """A matrix's TensorStats (spectral_ratio set) with a given status."""
    return TensorStats(name=name, shape=(64, 64), dtype="float32", numel=4096, mean=0.0, std=1.0, min=-3.0,
                       max=3.0, kurtosis=0.0, zero_fraction=0.0, nonfinite=0, spectral_ratio=ratio,
                       row_norm_dispersion=1.0, status=status)


def test_output_layer_found_by_position_is_reported_as_head():
    stats = [mts("input_mlp.weight", "trained"), mts("trunk.0.weight", "trained"), mts("trunk.1.weight", "trained"),
             mts("output_proj.weight", "init-like")]
    v = judge(stats)
    assert v.verdict == "pretrained" and [s.name for s in v.head] == ["output_proj.weight"]
    unnamed = [mts("a.weight", "trained"), mts("trunk.0.weight", "trained"), mts("trunk.1.weight", "trained"),
               mts("decoder.out.weight", "init-like")]
    v = judge(unnamed)
    assert v.verdict == "pretrained" and [s.name for s in v.head] == ["decoder.out.weight"], v.reason
    assert judge(unnamed, include_head=True).verdict == "partial"


def test_bert_pooler_is_head_below_the_wrapper():
    stats = [mts("bert.embeddings.word_embeddings.weight", "trained"),
             mts("bert.encoder.layer.0.attention.self.query.weight", "trained"),
             mts("bert.encoder.layer.1.attention.self.query.weight", "trained"),
             mts("bert.pooler.dense.weight", "init-like")]
    v = judge(stats)
    assert v.verdict == "pretrained" and [s.name for s in v.head] == ["bert.pooler.dense.weight"], v.reason


def test_input_layer_found_by_position_when_no_name_says_so():
    stats = [mts("features.0.weight", "init-like"), mts("features.3.weight", "trained"),
             mts("features.6.weight", "trained"), mts("classifier.weight", "trained")]
    v = judge(stats)
    assert v.verdict == "pretrained" and v.uncounted_groups == ("features.0",), v.reason
    # sorted names (safetensors) carry no order: nothing is taken as input by position
    assert judge(stats, ordered=False).verdict == "partial"
    # a re-initialised middle block is still named
    stats[1] = mts("features.3.weight", "init-like")
    assert judge(stats).untouched_groups == ("features.3",)


def test_untouched_embedding_table_is_an_input_layer():
    stats = [mts("encoder.char_emb.weight", "init-like"), mts("encoder.layers.0.weight", "trained"),
             mts("encoder.layers.1.weight", "trained"), mts("fc.weight", "trained")]
    v = judge(stats, ordered=False)
    assert v.verdict == "pretrained" and v.uncounted_groups == ("encoder.char_emb",), v.reason


def test_parameters_without_optimizer_state_are_untouched():
    stats = [mts("stem.weight", "trained"), mts("blocks.0.weight", "trained"), mts("blocks.1.weight", "init-like"),
             ts("blocks.1.norm.weight", "too-small"), mts("blocks.2.weight", "trained"), mts("head.weight", "trained")]
    # a dead branch made only of vectors (nothing to judge on its own) becomes judgeable
    branch = [*stats[:3], ts("aux.norm.weight", "too-small"), *stats[4:]]
    v = judge(branch, untrained={"aux.norm.weight"})
    assert v.verdict == "partial" and "aux" in v.untouched_groups
    # a frozen, trained-looking tensor is still trained
    assert judge(stats, untrained={"blocks.0.weight"}).untouched_groups == ("blocks.1",)


def test_random_weight_normed_net_is_random_and_trained_gains_stand():
    nn = torch.nn
    from torch.nn.utils.parametrizations import weight_norm

    torch.manual_seed(0)
    net = nn.Sequential(weight_norm(nn.Conv1d(16, 64, 3)), nn.ReLU(), weight_norm(nn.Conv1d(64, 64, 3)),
                        weight_norm(nn.Linear(64, 10)))
    stats = cal.stats_of_state_dict(net.state_dict())
    assert {s.name: s.status for s in stats}["0.parametrizations.weight.original0"] == "init-constant"
    assert verdict_of(net).verdict == "random", verdict_of(net).reason
    with torch.no_grad():  # a gain moved away from its direction's norms is evidence again
        net[2].parametrizations.weight.original0.mul_(torch.linspace(0.5, 1.5, 64).view(64, 1, 1))
    stats = cal.stats_of_state_dict(net.state_dict())
    assert {s.name: s.status for s in stats}["2.parametrizations.weight.original0"] != "init-constant"


def test_a_keras_style_norm_layer_vouches_for_the_conv_before_it_and_a_reset_one_is_named():
    from ckpttool.loading import TensorInfo
    from ckpttool.verdict.stats import compute_stats_from_arrays

    rng = np.random.default_rng(0)

    def conv(name, n=16):  # an 8-channel-ish conv that looks iid on its own
        a = rng.uniform(-0.3, 0.3, (n, n, 1, 1)).astype(np.float32)
        return [(TensorInfo(name, a.shape, "float32", a.size), a)]

    def bn(name, n=16, ran=True):
        arrays = {"weight": rng.normal(1.0, 0.2, n) if ran else np.ones(n), "bias": rng.normal(0, 0.1, n) if ran else np.zeros(n),
                  "running_mean": rng.normal(0, 1, n) if ran else np.zeros(n),
                  "running_var": rng.uniform(0.5, 2, n) if ran else np.ones(n)}
        return [(TensorInfo(f"{name}.{k}", (n,), "float32", n), v.astype(np.float32)) for k, v in arrays.items()]

    trained = rng.normal(0, 1, (64, 64)).astype(np.float32) + np.outer(rng.normal(size=64), rng.normal(size=64)).astype(np.float32)
    first = [(TensorInfo("conv2d_0.weight", (64, 64), "float32", 4096), trained)]
    items = (first + bn("batch_normalization_0", 64) + conv("conv2d_1") + bn("batch_normalization_1")
             + conv("conv2d_2") + bn("batch_normalization_2") + conv("conv2d_3") + bn("batch_normalization_3", ran=False)
             + [(TensorInfo("dense.weight", (10, 16), "float32", 160), rng.normal(0, 1, (10, 16)).astype(np.float32))])
    stats = compute_stats_from_arrays(items)
    v = judge(stats)  # module order: each conv is judged with the norm layer after it
    assert v.verdict == "partial" and v.untouched_groups == ("conv2d_3", "batch_normalization_3"), v.reason
    assert judge(stats, ordered=False).untouched_groups != v.untouched_groups  # no order, no pairing


# ---------------------------------------------------------------- small groups: too small to tell

def _arrays_stats(arrays):
    from ckpttool.loading import TensorInfo
    from ckpttool.verdict.stats import compute_stats_from_arrays

    return compute_stats_from_arrays(
        (TensorInfo(n, a.shape, "float32", a.size), a.astype(np.float32)) for n, a in arrays.items())


def _trained_matrix(rng, shape=(64, 64)):
    return rng.normal(0, 0.1, shape) + 0.1 * np.outer(rng.normal(size=shape[0]), rng.normal(size=shape[1]))


def _file_with_a_small_layer(small, blocks=4, seed=0):
    """Trained blocks, a 12 x 48 1x1 conv between them (as in PP-OCRv4's detector), a trained head."""
    rng = np.random.default_rng(seed)
    arrays = {f"blocks.{i}.fc.weight": _trained_matrix(rng) for i in range(blocks // 2)}
    arrays["neck.weight"] = small(rng).reshape(12, 48, 1, 1)
    arrays |= {f"blocks.{i}.fc.weight": _trained_matrix(rng) for i in range(blocks // 2, blocks)}
    arrays["head.weight"] = _trained_matrix(rng, (10, 64))
    return _arrays_stats(arrays)


def test_a_small_layer_that_shows_no_training_is_too_small_to_tell():
    """Real training leaves 2 in 5 matrices under 1,024 entries within an init's noise: a 12 x 48
    conv drawn at a scale of its own (no standard init) does not make a trained file partial."""
    stats = _file_with_a_small_layer(lambda rng: rng.normal(0, 0.34, (12, 48)))
    assert {s.name: s.status for s in stats}["neck.weight"] == "init-like"
    v = judge(stats)
    assert v.verdict == "pretrained" and v.inconclusive_groups == ("neck",), v.reason
    assert "small group" in v.reason and {g.name: g.status for g in v.groups}["neck"] == "inconclusive"
    assert json.loads(json.dumps(v.to_dict()))["inconclusive_groups"] == ["neck"]


@pytest.mark.parametrize("init", ["torch_default", "glorot", "normal_002", "normal_1"])
def test_a_small_layer_exactly_at_a_standard_init_is_named_untouched(init):
    draw = {
        "torch_default": lambda rng: rng.uniform(-1 / np.sqrt(48), 1 / np.sqrt(48), (12, 48)),
        "glorot": lambda rng: rng.uniform(-np.sqrt(6 / 60), np.sqrt(6 / 60), (12, 48)),
        "normal_002": lambda rng: rng.normal(0, 0.02, (12, 48)),
        "normal_1": lambda rng: rng.normal(0, 1.0, (12, 48)),
    }[init]
    v = judge(_file_with_a_small_layer(draw))
    assert v.verdict == "partial" and v.untouched_groups == ("neck",) and v.inconclusive_groups == (), v.reason


def test_small_layers_together_or_other_evidence_say_untouched():
    rng = np.random.default_rng(1)
    arrays = {f"blocks.{i}.fc.weight": _trained_matrix(rng) for i in range(3)}
    # four small convs of one block, each alone too small, 2,304 entries together
    arrays |= {f"blocks.3.conv{k}.weight": rng.normal(0, 0.3, (12, 48)) for k in range(4)}
    arrays["head.weight"] = _trained_matrix(rng, (10, 64))
    v = judge(_arrays_stats(arrays))
    assert v.verdict == "partial" and v.untouched_groups == ("blocks.3",), v.reason
    # one small conv alone is too small to tell, unless the optimizer state says it never got a gradient
    del arrays["blocks.3.conv1.weight"], arrays["blocks.3.conv2.weight"], arrays["blocks.3.conv3.weight"]
    stats = _arrays_stats(arrays)
    assert judge(stats).verdict == "pretrained"
    v = judge(stats, untrained={"blocks.3.conv0.weight"})
    assert v.verdict == "partial" and v.untouched_groups == ("blocks.3",), v.reason


def test_a_random_file_with_one_false_alarm_among_small_layers_stays_partial():
    """Setting small silent groups aside needs more trained groups than silent ones: a tiny random
    net with one layer over a threshold by chance must not read pretrained."""
    rng = np.random.default_rng(2)
    arrays = {f"layers.{i}.weight": rng.normal(0, 0.3, (16, 32)) for i in range(6)}
    arrays["layers.3.weight"] = _trained_matrix(rng, (16, 32))  # the false alarm
    v = judge(_arrays_stats(arrays))
    assert v.verdict == "partial" and v.inconclusive_groups == () and len(v.untouched_groups) >= 4, v.reason


def test_count_stem_counts_a_small_input_layer():
    rng = np.random.default_rng(3)
    arrays = {"stem.weight": rng.normal(0, 0.3, (16, 27))}
    arrays |= {f"blocks.{i}.fc.weight": _trained_matrix(rng) for i in range(3)}
    stats = _arrays_stats(arrays)
    assert judge(stats).uncounted_groups == ("stem",)
    strict = judge(stats, count_stem=True)
    assert strict.verdict == "partial" and strict.untouched_groups == ("stem",), strict.reason


def test_a_silent_mid_size_layer_counts_only_where_chance_cannot_explain_it():
    """A trained 48 x 48 1x1 conv looks iid about once in thirty: in a detector of 60 single-conv
    groups (ddddocr's, PP-OCRv3's) one or two do by chance, so a silent one says nothing there unless
    it sits exactly on an init; in a file of four groups it does say untouched."""
    rng = np.random.default_rng(4)

    def silent(rng):
        return rng.normal(0, 0.3, (48, 48, 1, 1))

    many = {f"conv2d_{i}.weight": _trained_matrix(rng, (48, 48)) for i in range(60)}
    many["conv2d_30.weight"] = silent(rng)
    v = judge(_arrays_stats(many))
    assert v.verdict == "pretrained" and v.inconclusive_groups == ("conv2d_30",), v.reason
    many["conv2d_30.weight"] = rng.uniform(-1 / np.sqrt(48), 1 / np.sqrt(48), (48, 48, 1, 1))  # re-initialised
    v = judge(_arrays_stats(many))
    assert v.verdict == "partial" and v.untouched_groups == ("conv2d_30",), v.reason
    few = {f"conv2d_{i}.weight": _trained_matrix(rng, (48, 48)) for i in range(4)}
    few["conv2d_2.weight"] = silent(rng)
    v = judge(_arrays_stats(few))
    assert v.verdict == "partial" and v.untouched_groups == ("conv2d_2",), v.reason

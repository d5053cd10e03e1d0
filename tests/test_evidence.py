"""Partial loads the group sum used to hide (ckpttool.verdict.evidence): weight-only reloads, embedding
tables and patch embeddings at an exact init, reset norms, and where the head is (and is not)."""

from __future__ import annotations

import numpy as np
import pytest

from ckpttool.loading import TensorInfo
from ckpttool.verdict import judge
from ckpttool.verdict.evidence import exact_init_tensors, reset_norm_tensors, role_of
from ckpttool.verdict.stats import compute_stats_from_arrays

RNG = np.random.default_rng(0)
D = 64


def _trained(shape):
    """A matrix with the low-rank structure training leaves (spectral ratio well above 1)."""
    core = [d for d in shape if d != 1]
    out, fan_in = core[0], int(np.prod(core[1:]))
    w = RNG.normal(0, 0.05, (out, fan_in)) + 0.05 * np.outer(RNG.normal(size=out), RNG.normal(size=fan_in))
    return w.reshape(shape).astype(np.float32)


def _trained_vector(n, centre=0.0):
    return (centre + RNG.normal(0.3, 0.1, n)).astype(np.float32)


def _block(i, **override):
    """A transformer block, trained: qkv/proj/fc1/fc2 with biases, two LayerNorms."""
    arrays = {}
    for name, shape in (("attn.qkv", (3 * D, D)), ("attn.proj", (D, D)), ("mlp.fc1", (4 * D, D)), ("mlp.fc2", (D, 4 * D))):
        arrays[f"blocks.{i}.{name}.weight"] = _trained(shape)
        arrays[f"blocks.{i}.{name}.bias"] = _trained_vector(shape[0])
    for norm in ("norm1", "norm2"):
        arrays[f"blocks.{i}.{norm}.weight"] = _trained_vector(D, 1.0)
        arrays[f"blocks.{i}.{norm}.bias"] = _trained_vector(D)
    arrays.update({f"blocks.{i}.{k}": v for k, v in override.items()})
    return arrays


def _vit(depth=6, **extra):
    arrays = {"cls_token": np.zeros((1, 1, D), np.float32), "pos_embed": _trained((1, 65, D)),
              "patch_embed.proj.weight": _trained((D, 3, 4, 4)), "patch_embed.proj.bias": _trained_vector(D)}
    for i in range(depth):
        arrays.update(_block(i))
    arrays.update({"norm.weight": _trained_vector(D, 1.0), "norm.bias": _trained_vector(D),
                   "head.weight": _trained((10, D)), "head.bias": _trained_vector(10)})
    arrays.update(extra)
    return arrays


def _stats(arrays):
    return compute_stats_from_arrays((TensorInfo(k, a.shape, "float32", a.size), a) for k, a in arrays.items())


def _normal(shape, std=0.02):
    return RNG.normal(0, std, shape).astype(np.float32)


def _uniform(shape):
    bound = 1.0 / np.sqrt(np.prod(shape[1:]))
    return RNG.uniform(-bound, bound, shape).astype(np.float32)


def test_the_trained_reference_is_pretrained():
    v = judge(_stats(_vit()))
    assert v.verdict == "pretrained" and v.untouched_tensors == (), v.reason


def test_weight_only_reload_beside_trained_biases_and_norms_is_partial_and_names_the_tensors():
    """A loader that renamed only ``.weight`` keys: blocks.2's qkv and fc1 matrices re-drawn by timm's
    init, their biases and the block's norms still trained."""
    arrays = _vit()
    arrays["blocks.2.attn.qkv.weight"] = _normal((3 * D, D))
    arrays["blocks.2.mlp.fc1.weight"] = _normal((4 * D, D))
    v = judge(_stats(arrays))
    assert v.verdict == "partial" and v.untouched_groups == ("blocks.2",), v.reason
    assert dict(v.untouched_tensors) == {"blocks.2.attn.qkv.weight": "exactly normal(0, 0.02)",
                                         "blocks.2.mlp.fc1.weight": "exactly normal(0, 0.02)"}
    assert "blocks.2.attn.qkv.weight (exactly normal(0, 0.02))" in v.reason


def test_the_incidents_patch_and_position_embeddings_at_init_are_partial_and_named():
    """The 148/152 case: patch_embed (a Conv2d: torch's default uniform) and pos_embed (timm's
    N(0, 0.02)) skipped on a shape mismatch, everything else trained. The patch embedding is an input
    layer, which counts on evidence of its own: an exact init."""
    arrays = _vit(**{"pos_embed": _normal((1, 65, D)), "patch_embed.proj.weight": _uniform((D, 3, 4, 4))})
    v = judge(_stats(arrays))
    assert v.verdict == "partial" and set(v.untouched_groups) == {"pos_embed", "patch_embed"}, v.reason
    assert v.uncounted_groups == ()
    assert dict(v.untouched_tensors)["patch_embed.proj.weight"] == "exactly uniform"


def test_an_embedding_table_at_init_beside_a_trained_layernorm_is_partial():
    """BERT-style ``embeddings`` group: word and position tables re-drawn on N(0, 0.02), its
    LayerNorm trained: the group is untouched inside."""
    arrays = {"embeddings.word_embeddings.weight": _normal((500, D)),
              "embeddings.position_embeddings.weight": _normal((128, D)),
              "embeddings.LayerNorm.weight": _trained_vector(D, 1.0), "embeddings.LayerNorm.bias": _trained_vector(D)}
    arrays.update({k.replace("blocks.", "encoder.layer."): a for i in range(4) for k, a in _block(i).items()})
    v = judge(_stats(arrays))
    assert v.verdict == "partial" and v.untouched_groups == ("embeddings",), v.reason
    assert {n for n, _ in v.untouched_tensors} == {"embeddings.word_embeddings.weight",
                                                   "embeddings.position_embeddings.weight"}


def test_a_unit_normal_embedding_table_is_no_evidence():
    """Training at unit scale moves rarely-seen rows by about the learning rate: real trained tables
    still fit N(0, 1), so one that does is reported uncounted, not named untouched."""
    arrays = {"char_emb.weight": RNG.normal(0, 1, (300, D)).astype(np.float32)}
    arrays.update({f"encoder.{k}": a for i in range(3) for k, a in _block(i).items()})
    stats = _stats(arrays)
    assert next(s for s in stats if s.name == "char_emb.weight").init_fit == "normal(0, 1)"
    v = judge(stats)
    assert v.verdict == "pretrained" and v.uncounted_groups == ("char_emb",), v.reason


def test_reset_layernorms_amid_moved_siblings_are_partial():
    arrays = _vit()
    for i in (2, 3):
        for norm in ("norm1", "norm2"):
            arrays[f"blocks.{i}.{norm}.weight"] = np.ones(D, np.float32)
            arrays[f"blocks.{i}.{norm}.bias"] = np.zeros(D, np.float32)
    v = judge(_stats(arrays))
    assert v.verdict == "partial" and v.untouched_groups == ("blocks.2", "blocks.3"), v.reason
    assert "norm at gain 1, bias 0" in dict(v.untouched_tensors)["blocks.2.norm1.weight"]


def test_layernorms_at_one_everywhere_are_no_evidence():
    """Norms never moved anywhere (frozen, or a net that trains without them): nothing to compare."""
    arrays = _vit()
    for k in list(arrays):
        if ".norm" in k:
            arrays[k] = np.ones(D, np.float32) if k.endswith("weight") else np.zeros(D, np.float32)
    assert reset_norm_tensors(_stats(arrays)) == {}
    assert judge(_stats(arrays)).verdict == "pretrained"


def test_exact_init_is_no_evidence_where_no_matrix_trained():
    """A GroupNorm net whose convs all stayed within noise: exact fits there say nothing."""
    arrays = {f"blocks.{i}.conv.weight": _uniform((D, D, 3, 3)) for i in range(3)}
    arrays.update({f"blocks.{i}.gn.weight": _trained_vector(D, 1.0) for i in range(3)})
    stats = _stats(arrays)
    assert exact_init_tensors(stats, {s.name: s.name.rsplit(".", 2)[0] for s in stats}) == {}


def test_a_small_kernel_at_init_beside_a_trained_matrix_in_its_group_is_no_evidence():
    """Mini-Xception's 288-entry depthwise kernel keeps its uniform init beside its trained pointwise
    conv: below 2,048 entries, inside a group that trained, an exact fit is no evidence."""
    arrays = _vit()
    arrays["blocks.1.dw.weight"] = _uniform((32, 1, 3, 3))
    v = judge(_stats(arrays))
    assert v.verdict == "pretrained", v.reason


@pytest.mark.parametrize("name,role", [("blocks.3.norm1.weight", "blocks.#.norm#.weight"),
                                       ("batch_normalization_13.weight", "batch_normalization#.weight"),
                                       ("encoder.layer.11.output.LayerNorm.bias", "encoder.layer.#.output.LayerNorm.bias")])
def test_role_of(name, role):
    assert role_of(name) == role


# ---------------------------------------------------------------- the head: by name and by position

def test_a_headless_encoders_last_block_is_not_taken_as_the_head():
    """A headless encoder kept in module order: its last layer is a repeated block, so a
    re-initialised last block is named, not left out as the head."""
    arrays = {k.replace("blocks.", "encoder.layer."): a for i in range(6) for k, a in _block(i).items()}
    for k in [k for k in arrays if k.startswith("encoder.layer.5.") and k.endswith("weight") and "norm" not in k]:
        arrays[k] = _normal(arrays[k].shape)
    v = judge(_stats(arrays))
    assert v.head == () and v.verdict == "partial" and v.untouched_groups == ("encoder.layer.5",), v.reason


def test_a_last_recurrent_layer_is_not_taken_as_the_head():
    arrays = {"emb.weight": _trained((100, D)), "lstm_1.weight_ih_l0": _trained((4 * D, D)),
              "lstm_1.weight_hh_l0": _trained((4 * D, D)), "lstm_2.weight_ih_l0": _uniform((4 * D, D)),
              "lstm_2.weight_hh_l0": _uniform((4 * D, D))}
    v = judge(_stats(arrays))
    assert v.head == () and v.verdict == "partial" and v.untouched_groups == ("lstm_2.l0",), v.reason


def test_the_output_layer_is_still_the_head_by_position():
    arrays = {k.replace("blocks.", "encoder.layer."): a for i in range(4) for k, a in _block(i).items()}
    arrays["out_proj.weight"] = _normal((10, D))
    v = judge(_stats(arrays))
    assert [s.name for s in v.head] == ["out_proj.weight"] and v.verdict == "pretrained", v.reason


def test_named_heads_as_real_files_name_them_are_left_out():
    for head in ("mlm_head.dense.weight", "predictions.decoder.weight", "lm_head.weight"):
        arrays = {**_vit(depth=4), head: _normal((100, D))}
        del arrays["head.weight"], arrays["head.bias"]
        v = judge(_stats(arrays), ordered=False)
        assert v.verdict == "pretrained" and [s.name for s in v.head] == [head], (head, v.reason)


def test_an_ensemble_named_heads_is_model_body():
    """``heads.0`` ... ``heads.4``: five member networks, not a classifier; one left at init is named."""
    arrays = {"stem.weight": _trained((D, 27))}
    for m in range(5):
        arrays[f"heads.{m}.fc1.weight"] = _trained((D, D)) if m != 3 else _normal((D, D))
        arrays[f"heads.{m}.fc2.weight"] = _trained((D, D)) if m != 3 else _normal((D, D))
    v = judge(_stats(arrays))
    assert v.head == () and v.verdict == "partial" and v.untouched_groups == ("heads.3",), v.reason


def test_deeper_blocks_a_gentle_training_left_on_their_init_are_no_evidence():
    """Five epochs on digits can leave a small ViT's deeper blocks exactly on N(0, 0.02) while their
    norms and biases moved: when most of the same matrices in other blocks stayed put too, the still
    ones are the many, not the few a loader skipped."""
    arrays = _vit(depth=4)
    for i in (1, 2, 3):
        for k in [k for k in arrays if k.startswith(f"blocks.{i}.") and k.endswith("weight") and "norm" not in k]:
            arrays[k] = _normal(arrays[k].shape)
    v = judge(_stats(arrays))
    assert v.verdict == "pretrained" and v.untouched_tensors == (), v.reason


def test_in_a_flat_export_the_last_layer_is_the_head_even_beside_a_layer_of_its_shape():
    """Keras / ONNX names every layer apart (``conv2d_7``): single layers of one shape recur and are
    no stack of blocks, so the output layer is still the head by position."""
    arrays = {f"conv2d_{i}.weight": _trained((D, D, 1, 1)) for i in range(6)}
    arrays["conv2d_6.weight"] = _normal((D, D, 1, 1), std=0.05)
    v = judge(_stats(arrays), ordered=True)  # (these names happen to sort in module order)
    assert [s.name for s in v.head] == ["conv2d_6.weight"] and v.verdict == "pretrained", v.reason


def test_without_names_or_order_the_one_output_nothing_consumes_is_the_head():
    """A Keras export saved as safetensors (names sorted): ``dense_9``'s 10 outputs feed no layer,
    every other layer's outputs feed one; a fresh head there is left out, not named untouched."""
    widths = [(32, 3), (64, 32), (64, 64), (64, 64), (64, 64)]
    arrays = {f"conv2d_{i}.weight": _trained((o, c, 3, 3)) for i, (o, c) in enumerate(widths)}
    arrays["dense_9.weight"] = _uniform((10, 64))
    v = judge(_stats(arrays), ordered=False)
    assert [s.name for s in v.head] == ["dense_9.weight"] and v.verdict == "pretrained", v.reason
    # a second dangling output (two heads, or a branch) says nothing: no head is taken
    arrays["aux_7.weight"] = _uniform((5, 64))
    assert judge(_stats(arrays), ordered=False).head == ()

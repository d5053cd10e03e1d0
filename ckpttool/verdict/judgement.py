"""Checkpoint verdict: per-tensor statuses -> per-group findings -> pretrained / random / partial /
inconclusive / corrupt.

Rules (see design.md "The verdict"):

- any non-finite value anywhere (head included) -> **corrupt**;
- the classifier head is reported separately and left out unless ``include_head=True``. It is found
  by name (``head``, ``fc``, ``classifier``, ``pooler``, any ``*_head`` but ``conv_head``, a masked-LM
  ``predictions``... below any wrapper prefix), unless those names span repeated numbered blocks
  (``heads.0`` ... ``heads.9``: an ensemble is model body). Where no name says so and the file keeps
  module order (pickles do; safetensors sorts names), the last group holding a matrix is the head
  only when it looks like one: not a recurrent layer, not the last of a stack of identical blocks
  (a headless encoder's last layer is body);
- a group's *judgeable* tensors are those with status ``trained`` or ``init-like`` (matrices, and
  vectors that show training); init constants and too-small tensors say nothing either way, so a
  group made only of them (``cls_token``, ``norm``, layer-scale gammas) is ``unjudged`` and never
  makes a trained checkpoint partial;
- a parameter that the file's optimizer state shows never received a gradient (``untrained``) and
  whose own statistics show no training is ``init-like`` whatever its shape: its module is untouched;
- a group is ``untouched`` whatever else it holds when one of its tensors is evidence that its own
  module never trained (``ckpttool.verdict.evidence``): a matrix exactly on a standard init in a
  module with no trained matrix (a weight-only reload, an embedding table re-drawn on N(0, 0.02)),
  or a norm exactly at its init where its siblings in other blocks moved (a reset norm, a BatchNorm
  that never ran). The verdict names those tensors (``untouched_tensors``);
- otherwise a group is ``trained`` when any judgeable tensor is trained, ``untouched`` when it has
  judgeable tensors and none is trained, and ``inconclusive`` instead when that says little: its init-like
  matrices hold fewer entries than chance allows for in a file of this many groups (2,048, or 512
  per judgeable group: real training leaves 2 in 5 matrices under 1,024 entries and 1 in 30 of
  2,048-32,767 within an init's noise, and every group is one more chance;
  ``ckpttool.verdict._init_fit.silent_group_floor``) and none sits exactly on a standard init (uniform,
  N(0, 1), N(0, 0.02)...) or is marked by other evidence (a BatchNorm that never
  ran, no optimizer state). Inconclusive groups are reported and set aside while trained groups outnumber them (a
  few small layers that show no training do not make a trained file partial); otherwise they count
  as untouched (a random file with one false alarm stays far from ``pretrained``);
- the input layer counts only on evidence of its own (an exact init, a reset norm); when it merely
  shows no training while other groups can be judged it is reported but not counted
  (``count_stem=True`` counts it): a small-fan-in input layer can stay within noise of its init
  through real training (MTCNN's P-Net and R-Net stems, an MLP-Mixer trained on 8x8 digits), without
  sitting exactly on it. It is found by name (``stem``, ``patch_embed``, ``conv_in``, ``embeddings``...)
  or, where no name says so and module order is known, as the first group holding a matrix.
  Token/character embedding tables are input layers wherever they sit; one still on N(0, 1) is no
  evidence (training at unit scale moves rarely-seen rows too little to show);
- no trained group -> **random** when some group is untouched on evidence (enough entries, an exact
  init, a BatchNorm), **inconclusive** when every judgeable group is too small to say so or nothing
  can be judged at all (a width-8 model: "random" would be a guess); trained groups and no
  untouched group -> **pretrained**; both -> **partial**, naming the untouched groups.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from ckpttool.verdict._init_fit import silent_group_floor
from ckpttool.verdict.context import batchnorm_prefixes
from ckpttool.verdict.evidence import role_of, untouched_evidence
from ckpttool.verdict.grouping import assign_groups, head_tensors, is_embedding_table, is_input_group
from ckpttool.verdict.stats import TensorStats

VERDICTS = ("pretrained", "random", "partial", "inconclusive", "corrupt")
GROUP_STATUSES = ("trained", "untouched", "inconclusive", "unjudged", "nonfinite")

_MAX_NAMES = 5
NO_GRADIENT_NOTE = "no optimizer state: never received a gradient"


@dataclass(frozen=True)
class GroupSummary:
    """Counts for one module group and what they add up to."""

    name: str
    tensors: int
    trained: int
    init_like: int
    init_constant: int
    status: str  # one of GROUP_STATUSES

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "name": self.name,
            "tensors": self.tensors,
            "trained": self.trained,
            "init_like": self.init_like,
            "init_constant": self.init_constant,
            "status": self.status,
        }


@dataclass(frozen=True)
class Verdict:
    """What a checkpoint holds, with the counts and groups that say so."""

    verdict: str  # one of VERDICTS
    tensors_total: int  # tensors judged (head excluded unless head_included)
    tensors_trained: int
    tensors_init_like: int
    tensors_init_constant: int
    untouched_groups: tuple[str, ...]  # partial: the groups that look untouched
    head: tuple[TensorStats, ...]  # classifier-head tensors, reported separately
    head_included: bool
    groups: tuple[GroupSummary, ...]
    reason: str  # one sentence of evidence
    uncounted_groups: tuple[str, ...] = ()  # input-layer groups that look untouched, not counted
    inconclusive_groups: tuple[str, ...] = ()  # small groups that show no training, set aside
    untouched_tensors: tuple[tuple[str, str], ...] = ()  # (tensor, why) marking its module untouched

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (head tensors as their stats dicts)."""
        return {
            "verdict": self.verdict,
            "tensors_total": self.tensors_total,
            "tensors_trained": self.tensors_trained,
            "tensors_init_like": self.tensors_init_like,
            "tensors_init_constant": self.tensors_init_constant,
            "untouched_groups": list(self.untouched_groups),
            "head": [s.to_dict() for s in self.head],
            "head_included": self.head_included,
            "groups": [g.to_dict() for g in self.groups],
            "reason": self.reason,
            "uncounted_groups": list(self.uncounted_groups),
            "inconclusive_groups": list(self.inconclusive_groups),
            "untouched_tensors": [{"name": n, "why": why} for n, why in self.untouched_tensors],
        }


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_NAMES])
    return shown + (f" and {len(items) - _MAX_NAMES} more" if len(items) > _MAX_NAMES else "")


def _summarise_group(name: str, members: Sequence[TensorStats], floor: int, marked: bool) -> GroupSummary:
    """A group's status: ``marked`` (a tensor of it is evidence of an untouched module) outweighs
    any trained tensor beside it."""
    trained = sum(s.status == "trained" for s in members)
    init_like = sum(s.status == "init-like" for s in members)
    init_constant = sum(s.status == "init-constant" for s in members)
    if any(s.status == "nonfinite" for s in members):
        status = "nonfinite"
    elif marked:
        status = "untouched"
    elif trained:
        status = "trained"
    elif init_like:
        status = "untouched" if _says_untouched([s for s in members if s.status == "init-like"], floor) else "inconclusive"
    else:
        status = "unjudged"
    return GroupSummary(name, len(members), trained, init_like, init_constant, status)


def _says_untouched(init_like: Sequence[TensorStats], floor: int) -> bool:
    """Whether a group's init-like tensors are evidence that it is untouched, not just too small to
    show training in a file of its size: matrices of ``floor`` entries or more in all
    (``silent_group_floor``), a matrix exactly on a standard init, or a tensor marked by other
    evidence (a vector is init-like only through its BatchNorm or the optimizer state; a matrix
    without optimizer state never got a gradient)."""
    if sum(s.numel for s in init_like if s.spectral_ratio is not None) >= floor:
        return True
    return any(s.spectral_ratio is None or s.init_fit or s.note == NO_GRADIENT_NOTE for s in init_like)


def _small_phrase(small: Sequence[str]) -> str:
    if not small:
        return ""
    return (f" {len(small)} small group(s) show no training ({_names(small)}); not counted: too few "
            f"weights for a file of this many groups, and off every standard init; real training can "
            f"look like that.")


def _ratio_phrase(stats: Sequence[TensorStats]) -> str:
    ratios = [s.spectral_ratio for s in stats if s.spectral_ratio is not None]
    if not ratios:
        return "no matrices"
    return f"spectral ratio median {statistics.median(ratios):.2f}, max {max(ratios):.2f}"


def in_module_order(names: Sequence[str]) -> bool:
    """Whether tensor names can be taken to be in module order: not sorted as strings (safetensors
    and some converters sort them, which loses the order of layers).

    Example:
        >>> in_module_order(["conv1.weight", "layer1.0.conv1.weight", "fc.weight"]), in_module_order(["a.w", "b.w", "c.w"])
        (True, False)
    """
    return list(names) != sorted(names)


@dataclass(frozen=True)
class _Layout:
    """Where each tensor sits: its group, the head, the input groups."""

    group: dict[str, str]
    head: frozenset[str]
    inputs: frozenset[str]


def _layout(stats: Sequence[TensorStats], ordered: bool | None) -> _Layout:
    names = [s.name for s in stats]
    if ordered is None:
        ordered = in_module_order(names)
    group = assign_groups(names, [s.name for s in stats if s.spectral_ratio is not None])
    if ordered:
        group = _norms_join_their_layer(stats, group)
    matrices: dict[str, list[str]] = {}  # group -> its judged matrices, groups in module order
    for s in stats:
        if s.spectral_ratio is not None:
            matrices.setdefault(group[s.name], []).append(s.name)
    head = _unless_repeated_blocks(set(head_tensors(names)), group)
    # weights of any size (a single-output layer is a [1, n] "matrix" too small to judge)
    layers = [group[s.name] for s in stats if len(s.shape) >= 2 and s.numel >= 2 and _is_weight(s.name)]
    if (not head and ordered and layers and set(matrices) - {layers[-1]}
            and _looks_like_a_head(layers[-1], stats, group)):  # the output layer by position
        head = {n for n in names if group[n] == layers[-1]}
    if not head and not ordered and len(set(matrices)) > 2:  # no name, no order: the one output nothing consumes
        found = _dangling_output(stats, group)
        head = {n for n in names if group[n] == found} if found else set()
    head_groups = {group[n] for n in head}
    inputs = {g for g in group.values() if is_input_group(g)}
    body = [g for g in matrices if g not in head_groups]
    if not inputs and ordered and body:  # the input layer by position
        inputs = {body[0]}
    # groups whose matrices are all embedding tables (token/character lookups)
    inputs |= {g for g, ms in matrices.items() if all(is_embedding_table(m) for m in ms)}
    return _Layout(group, frozenset(head), frozenset(inputs))


def _is_weight(name: str) -> bool:
    """A layer's weight (``weight``, ``weight_ih_l0``, ``weight_v``), not a buffer that merely says
    so (chemprop's ``metrics.2.task_weights``)."""
    return name.rpartition(".")[2].startswith("weight")


def _signatures(stats: Sequence[TensorStats], group: dict[str, str]) -> dict[str, frozenset]:
    """Each group's tensors as (name within the group, shape): equal for repeated blocks."""
    out: dict[str, set] = {}
    for s in stats:
        g = group[s.name]
        out.setdefault(g, set()).add((s.name[len(g):], s.shape))
    return {g: frozenset(v) for g, v in out.items()}


def _repeated(g: str, signatures: dict[str, frozenset]) -> bool:
    """Whether group ``g`` is one of a stack of identical blocks (``encoder.layer.11`` beside ``.10``):
    blocks of two or more weight tensors. Single layers of one shape recur everywhere in flat exports
    (``conv2d_102``, ``conv2d_103``) and say nothing."""
    weights = [shape for name, shape in signatures[g] if len(shape) >= 2]
    return len(weights) >= 2 and any(other != g and role_of(other + ".") == role_of(g + ".") and sig == signatures[g]
                                     for other, sig in signatures.items())


def _looks_like_a_head(g: str, stats: Sequence[TensorStats], group: dict[str, str]) -> bool:
    """The last layer in module order is taken as the head only when it looks like one: a projection
    (not a recurrent layer: chars2vec's re-initialised last LSTM), and not the last of a stack of
    identical blocks (a headless encoder's last layer)."""
    members = [s for s in stats if group[s.name] == g]
    if any("_hh" in s.name.rpartition(".")[2] for s in members):
        return False
    return not _repeated(g, _signatures(stats, group))


def _dangling_output(stats: Sequence[TensorStats], group: dict[str, str]) -> str | None:
    """The group of the one layer whose output width no other layer takes as input width, where
    exactly one is: the classifier of a file without head names and module order (a Keras or ONNX
    export saved as safetensors: ``dense_6``, ``linear_85``). Every other layer's outputs feed a
    layer of that input width; a class count feeds nothing. Embedding tables, recurrent layers and
    repeated blocks are never it; two or more such layers (attention's fused qkv, concatenations)
    say nothing."""
    layers = [s for s in stats if len(s.shape) >= 2 and s.numel >= 2 and _is_weight(s.name)
              and not is_embedding_table(s.name) and "_hh" not in s.name]
    inputs_of: dict[int, set[str]] = {}  # input width -> the layers taking it (an RNN's input-hidden too)
    for s in layers:
        inputs_of.setdefault(s.shape[1], set()).add(s.name)
    dangling = {group[s.name] for s in layers
                if "_ih" not in s.name and not inputs_of.get(s.shape[0], set()) - {s.name}}
    if len(dangling) != 1:
        return None
    (found,) = dangling
    if is_input_group(found) or _repeated(found, _signatures(stats, group)):
        return None
    return found


def _unless_repeated_blocks(head: set[str], group: dict[str, str]) -> set[str]:
    """A head found by name that spans repeated numbered blocks (``heads.0`` ... ``heads.9``, an
    ensemble; ``head.layers.N``, half of a forecasting model) is model body, not a classifier."""
    groups = {group[n] for n in head}
    roles = [role_of(g + ".") for g in groups]
    if any(roles.count(r) > 1 for r in roles):
        return set()
    return head


def _norms_join_their_layer(stats: Sequence[TensorStats], group: dict[str, str]) -> dict[str, str]:
    """A group that is one BatchNorm layer alone (Keras/Paddle exports name it apart from its conv:
    ``conv2d_5`` then ``batch_norm2d_5``) and that ran in training joins the group of the matrix
    right before it in module order: its moved statistics and gains are evidence about that layer.
    One that never ran stays a group of its own, so that a reset norm layer is still named."""
    members: dict[str, list[str]] = {}
    for s in stats:
        members.setdefault(group[s.name], []).append(s.name)
    _, bn_prefixes = batchnorm_prefixes({s.name: s for s in stats})

    def is_one_norm(names: list[str]) -> bool:
        prefixes = {n.rpartition(".")[0] + "." for n in names}
        return len(prefixes) == 1 and prefixes <= bn_prefixes

    out, previous = dict(group), None
    for s in stats:
        g = group[s.name]
        if previous is not None and g != previous and is_one_norm(members[g]):
            out[s.name] = previous
        elif s.spectral_ratio is not None:
            previous = g
    return out


def _mark_untrained(stats: Sequence[TensorStats], untrained: Collection[str]) -> list[TensorStats]:
    """Parameters that never received a gradient and show no training of their own: ``init-like``."""
    untrained = set(untrained)
    return [dataclasses.replace(s, status="init-like", note=NO_GRADIENT_NOTE)
            if s.name in untrained and s.status in ("too-small", "init-like") else s for s in stats]


def judge(
    stats: Sequence[TensorStats],
    *,
    include_head: bool = False,
    count_stem: bool = False,
    untrained: Collection[str] | None = None,
    ordered: bool | None = None,
) -> Verdict:
    """Decide what a checkpoint holds from its per-tensor statistics.

    Args:
        stats: one ``TensorStats`` per tensor (``compute_checkpoint_stats``), in file order.
        include_head: count the classifier head in the verdict (it is always reported in ``head``).
        count_stem: let an untouched-looking input layer make the checkpoint partial, however small
            (by default it is reported in ``uncounted_groups`` when other groups can be judged).
        untrained: names of parameters without optimizer state in the file (never got a gradient).
        ordered: whether ``stats`` are in module order; None infers it (``in_module_order``).

    Returns:
        A frozen ``Verdict``.

    Example:
        >>> from ckpttool.verdict.stats import compute_checkpoint_stats  # doctest: +SKIP
        >>> judge(compute_checkpoint_stats(ckpt)).verdict  # doctest: +SKIP
        'pretrained'
    """
    if untrained:
        stats = _mark_untrained(stats, untrained)
    layout = _layout(stats, ordered)
    head = tuple(s for s in stats if s.name in layout.head)
    body = list(stats) if include_head else [s for s in stats if s.name not in layout.head]

    members: dict[str, list[TensorStats]] = {}
    for s in body:
        members.setdefault(layout.group[s.name], []).append(s)
    judgeable = sum(any(s.status in ("trained", "init-like") for s in ms) for ms in members.values())
    floor = silent_group_floor(judgeable)
    evidence = untouched_evidence(body, layout.group)
    marked = {layout.group[n] for n in evidence}
    groups = tuple(_summarise_group(name, ms, floor, name in marked) for name, ms in members.items())

    counts = dict(
        tensors_total=len(body),
        tensors_trained=sum(s.status == "trained" for s in body),
        tensors_init_like=sum(s.status == "init-like" for s in body),
        tensors_init_constant=sum(s.status == "init-constant" for s in body),
    )
    common = dict(head=head, head_included=include_head, groups=groups, **counts)

    bad = [s.name for s in stats if s.status == "nonfinite"]
    if bad:
        total = sum(s.nonfinite for s in stats if s.status == "nonfinite")
        return Verdict(verdict="corrupt", untouched_groups=(), reason=f"{total} NaN/Inf values in {len(bad)} tensor(s): {_names(bad)}.",
                       **common)

    trained = [g.name for g in groups if g.status == "trained"]
    untouched = [g.name for g in groups if g.status == "untouched"]
    small = [g.name for g in groups if g.status == "inconclusive"]
    silent_beyond_chance = bool(untouched)  # before input layers are set aside
    uncounted: list[str] = []
    if count_stem:  # the input layer counted whatever its size
        untouched += [g for g in small if g in layout.inputs]
        small = [g for g in small if g not in layout.inputs]
    elif any(g not in layout.inputs for g in trained + untouched + small):
        # an input layer counts only on evidence of its own (an exact init, a reset norm)
        uncounted = [g for g in untouched + small if g in layout.inputs and g not in marked]
        untouched = [g for g in untouched if g not in uncounted]
        small = [g for g in small if g not in uncounted]
    common["uncounted_groups"] = tuple(uncounted)
    judged = len(trained) + len(untouched) + len(small)
    if not trained:
        common["uncounted_groups"] = ()  # nothing trained: the input layer is just one more untouched group
        if silent_beyond_chance:
            reason = (f"no tensor shows trained structure: {counts['tensors_init_like']} look like iid init "
                      f"({_ratio_phrase(body)}), {counts['tensors_init_constant']} are init constants.")
            return Verdict(verdict="random", untouched_groups=(), reason=reason, **common)
        small += uncounted  # nothing trained: an input layer is one more group too small to tell
        if small:
            common["inconclusive_groups"] = tuple(small)
            reason = (f"cannot tell: no tensor shows training, and the {len(small)} judgeable group(s) "
                      f"({_names(small)}) are too small for that to mean untouched (a model this small or "
                      f"featureless can look like its init after training).")
        else:
            reason = f"cannot tell: none of {len(body)} tensors can be judged (only init constants and small tensors)."
        return Verdict(verdict="inconclusive", untouched_groups=(), reason=reason, **common)
    if len(trained) > len(small):  # small silent groups among more trained ones say little
        common["inconclusive_groups"] = tuple(small)
        judged -= len(small)
    else:
        untouched += small
        small = []
    shown = tuple((n, why) for n, why in evidence.items() if layout.group[n] in untouched)
    common["untouched_tensors"] = shown
    if not untouched:
        reason = (f"all {judged} judgeable groups are trained: {counts['tensors_trained']} of "
                  f"{len(body)} tensors show training ({_ratio_phrase(body)}).")
        if uncounted:
            reason += (f" The input layer ({_names(uncounted)}) looks untouched; not counted: a small input "
                       f"layer can stay near its init through training.")
        reason += _small_phrase(small)
        return Verdict(verdict="pretrained", untouched_groups=(), reason=reason, **common)
    reason = (f"{len(untouched)} of {judged} judgeable groups look untouched ({_names(untouched)}) "
              f"while {len(trained)} are trained.")
    if shown:
        reason += f" At init: {_names([f'{n} ({why})' for n, why in shown])}."
    if uncounted:
        reason += f" The input layer ({_names(uncounted)}) looks untouched too (not counted)."
    reason += _small_phrase(small)
    return Verdict(verdict="partial", untouched_groups=tuple(untouched), reason=reason, **common)

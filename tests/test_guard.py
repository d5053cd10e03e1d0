"""ckpttool.require: the README's three-line pattern, run as written, on a tiny timm model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import ckpttool
from ckpttool.errors import InvalidArgumentError, UnexpectedWeightsError, VerdictMismatchError

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]


def _readme_pattern() -> str:
    section = (ROOT / "README.md").read_text().split("## In your own training script", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.+?)\n```", section, re.S)[0]


def _fresh_model():
    from ckpttool.verdict import _calibration as cal

    return cal.create_random_model("test_resnet", in_chans=1)


def _save_init(tmp_path: Path, name: str, model) -> Path:
    path = tmp_path / name
    torch.save({"state_dict": model.state_dict()}, path)
    return path


def _run_pattern(init_path: Path):
    """The README's lines, executed as a training script would: a fresh model, the init loaded into it."""
    model = _fresh_model()
    scope = {"torch": torch, "model": model, "init_path": init_path}
    exec(compile(_readme_pattern(), "README.md", "exec"), scope)
    return model


def test_readme_pattern_stops_a_random_init_named_pretrained(tmp_path):
    torch.manual_seed(1)
    init = _save_init(tmp_path, "test_resnet_digits_pretrained_init.pth.tar", _fresh_model())
    with pytest.raises(UnexpectedWeightsError) as caught:
        _run_pattern(init)
    e = caught.value
    assert isinstance(e, VerdictMismatchError) and e.exit_code == 1
    assert e.verdict.verdict == "random" and e.expected == "pretrained" and e.evidence is e.verdict
    assert str(e).startswith("ResNet: verdict random, expected pretrained. no tensor shows trained structure")


def test_readme_pattern_lets_a_trained_init_through(tmp_path):
    from _trained import trained_resnet

    trained, _ = trained_resnet()
    init = _save_init(tmp_path, "test_resnet_digits_pretrained_init.pth.tar", trained)
    model = _run_pattern(init)  # no exception
    assert ckpttool.require(model, expect="pretrained").verdict == "pretrained"


def test_in_memory_verdict_is_verifys_verdict_and_reads_no_file(tmp_path, monkeypatch):
    from _trained import trained_resnet

    trained, _ = trained_resnet()
    path = _save_init(tmp_path, "w.pth", trained)
    on_disk = ckpttool.verify_file(path).verdict

    from ckpttool import loading, verify

    def no_file(*a, **k):
        raise AssertionError("require on weights in memory read a file")

    monkeypatch.setattr(loading, "load_checkpoint", no_file)
    monkeypatch.setattr(verify, "load_checkpoint", no_file)
    in_memory = ckpttool.require(trained.state_dict(), expect="any")
    assert in_memory.verdict == on_disk.verdict == "pretrained"
    assert [(g.name, g.status) for g in in_memory.groups] == [(g.name, g.status) for g in on_disk.groups]


def test_require_on_a_path_reads_the_expectation_from_its_name(tmp_path):
    torch.manual_seed(2)
    path = _save_init(tmp_path, "x_pretrained_init.pth", _fresh_model())
    with pytest.raises(UnexpectedWeightsError, match=r"x_pretrained_init\.pth: verdict random, expected pretrained"):
        ckpttool.require(path, expect="auto")
    assert ckpttool.require(str(path), expect="random").verdict == "random"


def test_require_names_what_it_takes():
    with pytest.raises(InvalidArgumentError, match="takes a state dict, an nn.Module or a checkpoint path, not int"):
        ckpttool.require(3)
    with pytest.raises(InvalidArgumentError, match="expect='auto' reads the expectation from a name"):
        ckpttool.require(_fresh_model(), expect="auto")
    with pytest.raises(InvalidArgumentError, match=r"without tensors at its top level \(keys: 'state_dict', 'epoch'\); "
                                                   r"pass the state dict itself"):
        ckpttool.require({"state_dict": _fresh_model().state_dict(), "epoch": 3})
    with pytest.raises(InvalidArgumentError, match="unknown expectation 'trained'"):
        ckpttool.require(_fresh_model(), expect="trained")
    torch.manual_seed(3)
    with pytest.raises(UnexpectedWeightsError, match=r"^init_pretrained\.pth: verdict random"):
        ckpttool.require(_fresh_model(), expect="auto", name="init_pretrained.pth")


def test_numpy_blas_runs_on_one_thread_while_judging_and_is_restored(monkeypatch):
    """OpenBLAS's idle threads spin between the statistics' small products: 5x slower beside other jobs."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from ckpttool.verdict import stats as stats_module

    def blas_threads():
        return [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]

    seen = []
    real = stats_module.compute_stats_from_arrays
    monkeypatch.setattr(stats_module, "compute_stats_from_arrays", lambda items: seen.append(blas_threads()) or real(items))
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        ckpttool.require(_fresh_model(), expect="any")
        assert blas_threads() == before
    assert seen and seen[0] and all(n == 1 for n in seen[0])

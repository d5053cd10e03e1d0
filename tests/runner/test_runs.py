"""`ckpttool runs` over hostile run folders, and `ckpttool runs compare` on two tiny runs (in process)."""

import json
import shutil

import pytest
from conftest import base_options, one_torch_thread

from ckpttool.cli._root import main
from pruning_runner.config import resolve_config
from pruning_runner.loop import run_pruning


def _cli(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    out, err = capsys.readouterr()
    return e.value.code, out, err


@pytest.fixture(scope="module")
def two_runs(random_init, tmp_path_factory):
    """A Refill run on digits and an RSST run on synthetic images (2 states, 1 epoch each)."""
    root = tmp_path_factory.mktemp("runs")
    with one_torch_thread():  # a module fixture runs before the per-test one-thread fixture
        a = run_pruning(resolve_config(None, base_options(random_init, root / "a", method="refill", rate=0.5)))
        b = run_pruning(resolve_config(None, base_options(random_init, root / "b", method="rsst", rate=0.5,
                                                          dataset="synthetic", synthetic_size=1000)))
    return root, a, b


def test_compare_text_has_one_table_per_state_with_every_run(two_runs, capsys):
    root, a, b = two_runs
    code, out, err = _cli(["runs", "compare", str(root / "a"), str(root / "b")], capsys)
    assert code == 0, err
    assert out.count("state 0") == 1 and out.count("state 1") == 1
    assert out.count("refill / digits / random") == 2 and out.count("rsst / synthetic / random") == 2
    s1 = a.states[1]
    assert f"{s1['kept_heads']}/{s1['total_heads']}" in out and f"{s1['params']:,}" in out
    assert f"{100 * s1['test_acc_at_best_val']:.2f}" in out and f"{100 * (1 - s1['params'] / a.states[0]['params']):.2f}" in out
    assert "MFLOPs/image" in " ".join(out.split()) and f"{s1['flops'] / 1e6:,.2f}" in out


def test_compare_json_and_plot_with_a_panel_per_dataset(two_runs, tmp_path, capsys):
    root, a, b = two_runs
    png = tmp_path / "compare.png"
    code, out, err = _cli(["runs", "compare", str(root / "a"), str(root / "b"), "--plot", str(png),
                           "--format", "json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["panels"] == {"digits": ["refill / digits / random"], "synthetic": ["rsst / synthetic / random"]}
    assert png.read_bytes()[:4] == b"\x89PNG"
    runs = doc["runs"]
    assert [r["method"] for r in runs] == ["refill", "rsst"] and runs[0]["init_sha256"] == a.init["sha256"]
    for run, result in zip(runs, (a, b), strict=True):
        for row, s in zip(run["states"], result.states, strict=True):
            assert (row["state"], row["kept_heads"], row["kept_neurons"], row["params"]) == (
                s["state"], s["kept_heads"], s["kept_neurons"], s["params"])
            assert row["best_val_acc"] == s["best_val_acc"] and row["test_acc_at_best_val"] == s["test_acc_at_best_val"]
            assert row["params_removed"] == pytest.approx(1 - s["params"] / result.states[0]["params"])
            assert row["flops"] == s["flops"] and row["kept_heads_per_block"] == s["kept_heads_per_block"]
            assert row["flops_removed"] == pytest.approx(1 - s["flops"] / result.states[0]["flops"])
            assert row["mask"] == s["mask"]
    assert runs[0]["states"][0]["params_removed"] == 0.0 and runs[0]["states"][1]["params_removed"] > 0.3


def test_compare_refuses_a_folder_that_is_not_a_run(two_runs, tmp_path, capsys):
    root, _, _ = two_runs
    code, _, err = _cli(["runs", "compare", str(root / "a"), str(tmp_path)], capsys)
    assert code == 2 and err == f"error: {tmp_path} is not a run folder (no run.json); pass run folders\n"


HOSTILE = {
    "garbled": b"{not json",
    "a list": b"[1, 2]",
    "init is a number": b'{"init": 5}',
    "sha is a number": b'{"init": {"sha256": 7, "path": "x", "verdict": "random"}, "states": 2}',
    "states is text": b'{"init": {"sha256": "ab", "path": "x", "verdict": "random"}, "states": "two"}',
    "\x1b[31mred [bold]x[red]": b'{"init": []}',
}


def test_hostile_run_records_are_one_warning_each_and_hide_no_healthy_run(two_runs, tmp_path, capsys):
    root, a, _ = two_runs
    runs = tmp_path / "runs"
    shutil.copytree(root / "a", runs / "healthy")
    for name, data in HOSTILE.items():
        (runs / name).mkdir()
        (runs / name / "run.json").write_bytes(data)
    shutil.copytree(root / "a", runs / "odd values")  # a run whose strings carry markup and escapes
    info = json.loads((runs / "odd values" / "run.json").read_text())
    (runs / "odd values" / "run.json").write_text(json.dumps({**info, "method": "[bold]re\x1b[2Jfill"}))
    (runs / "bad summary").mkdir()
    shutil.copyfile(root / "a" / "run.json", runs / "bad summary" / "run.json")
    (runs / "bad summary" / "summary.json").write_text('{"states": ["abc"]}')
    for fmt in ("text", "json"):
        code, out, err = _cli(["runs", "--root", str(runs), "--format", fmt], capsys)
        assert code == 0, err
        lines = err.splitlines()
        assert len(lines) == len(HOSTILE) + 1 and all(s.startswith(f"warning: skipped {runs}/") for s in lines)
        assert "\x1b" not in err and "\\x1b[31mred [bold]x[red]: run.json field 'init' is a list" in err
        if fmt == "json":
            listed = json.loads(out)["runs"]
            assert sorted(r["path"] for r in listed) == [str(runs / "healthy"), str(runs / "odd values")]
            assert len(json.loads(out)["unreadable"]) == len(HOSTILE) + 1
        else:
            assert "healthy" in out and a.init["sha256"][:12] in out and "\x1b" not in out
            assert "[bold]re\\x1b[2Jfill" in " ".join(out.split())


def test_compare_plots_against_flops_removed(two_runs, tmp_path, capsys):
    root, _, _ = two_runs
    png = tmp_path / "flops.png"
    code, out, err = _cli(["runs", "compare", str(root / "a"), "--plot", str(png), "--x-axis", "flops",
                           "--format", "json"], capsys)
    assert code == 0, err
    assert png.read_bytes()[:4] == b"\x89PNG" and json.loads(out)["runs"][0]["states"][1]["flops_removed"] > 0.2

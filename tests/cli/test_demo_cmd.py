import json

from _run import run_cli


def test_demo_runs_every_step_and_keeps_its_files(capsys, tmp_path):
    work = tmp_path / "demo"
    r = run_cli(capsys, "demo", "--workdir", str(work), "--epochs", "1", "--format", "json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["passed"] and len(doc["steps"]) == 7
    assert all(s["ok"] for s in doc["steps"]), [s for s in doc["steps"] if not s["ok"]]
    caught = doc["steps"][3]
    assert "verdict random, expected pretrained -> FAIL" in caught["lines"][0]
    states = doc["steps"][6]["data"]["states"]
    assert len(states) == 3 and states[0]["test_acc_at_best_val"] > 0.5
    assert states[2]["kept_heads"] < states[1]["kept_heads"] < states[0]["kept_heads"]
    assert (work / "init_model" / "MANIFEST.json").is_file()
    assert (work / "init_model" / "backup_old" / "MANIFEST.json").is_file()
    assert not (work / "runs" / "refused").exists()


def test_demo_refuses_a_non_empty_workdir(capsys, tmp_path):
    (tmp_path / "x").write_text("keep me")
    r = run_cli(capsys, "demo", "--workdir", str(tmp_path))
    assert r.code == 2 and r.err.startswith("error: ") and (tmp_path / "x").read_text() == "keep me"

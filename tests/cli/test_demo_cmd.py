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


def test_standin_training_reports_epochs_and_accuracy(tmp_path):
    from ckpttool.demo import train_standin_weights

    seen = []
    info = train_standin_weights(tmp_path / "w.safetensors", epochs=1, progress=seen.append)
    assert {p.step for p in seen} == {"train"} and all(p.total == 1 for p in seen)
    done = [p.completed for p in seen]
    assert done == sorted(done) and done[-1] == 1.0 and len(done) > 10  # every batch, not only epochs
    assert seen[-1].detail == f"epoch 1/1, test acc {info['test_acc']:.1%} (stops at 90%)"


def test_runner_events_become_run_progress():
    from ckpttool.demo import _RunProgress
    from pruning_runner import events as ev

    seen = []
    listener = _RunProgress(seen.append)
    listener(ev.RunStarted("r", states=3, epochs=2, device="cpu", resumed=False, init={}, head_reinitialised=False))
    listener(ev.EpochStarted(state=1, epoch=1, steps=4))
    listener(ev.StepDone(state=1, epoch=1, step=2))
    listener(ev.EpochEnded({"val_acc": 0.875}))
    assert [(p.completed, p.total) for p in seen] == [(0.0, 6), (3.0, 6), (3.5, 6), (4.0, 6)]
    assert seen[-1].detail == "state 2/3, epoch 2/2, val acc 87.5%"

"""Two gloo processes on CPU. Through torchrun: the same masks as one process with the same global
batch. In torchrun's environment (started by tests/runner/_runs.py): Ctrl-C on one rank, or on every
rank a few steps apart, stops all ranks at one agreed step with an interrupt
checkpoint, status "interrupted" and exit 130; resuming ends exactly like the uninterrupted run (the
resumed epoch's train loss/accuracy included). A mid-epoch checkpoint resumes only with the same
number of processes; an epoch-boundary one with any."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from _runs import assert_same_outcome, run_outcome, run_ranks
from conftest import REPO, base_options, cli_args, subprocess_env

from ckpttool.cli._root import main
from pruning_runner.checkpoint import load_run_checkpoint
from pruning_runner.loop import INTERRUPT_SYNC_STEPS

# digits: 1294 training images / batch 64 = 20 steps per epoch, agreed on every 10th (INTERRUPT_SYNC_STEPS)
STEPS = 20
ONE_RANK = "1:0:0:15"  # rank 1 only (rank 0 never sees a signal), late in the epoch: agreed at its end
ALL_RANKS = "0:1:0:2,1:1:0:4"  # every rank, two steps apart (ranks drift on GPUs): agreed at step 10


def _args(init, out):
    # taylor: through DDP each batch's gradient is the global batch's, as in one process
    opts = base_options(init, out, method="rsst", criterion="taylor", states=2, epochs=1, rate=0.5,
                        batch_size=64, reg_max=5.0, optimizer="sgd", lr=0.05)
    return [*cli_args(opts), "--format", "json"]


def _run_json(run_dir):
    return json.loads((run_dir / "run.json").read_text())


def _assert_interrupted(ranks, out):
    assert [r.returncode for r in ranks] == [130, 130], [r.stderr[-2000:] for r in ranks]
    for r in ranks:
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("error: interrupted at state") and last.endswith(f"run-prune --resume {out}")
    assert _run_json(out)["status"] == "interrupted"
    return load_run_checkpoint(out / "checkpoint.pt")


@pytest.fixture(scope="module")
def runs(random_init, tmp_path_factory):
    """An uninterrupted 2-process run, and one interrupted twice then resumed (copies kept at each stop)."""
    root = tmp_path_factory.mktemp("ddp")
    base = root / "baseline"
    torchrun = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                               "-m", "pruning_runner", *_args(random_init, base)], cwd=REPO, env=subprocess_env(),
                              capture_output=True, text=True, timeout=300)
    assert torchrun.returncode == 0, torchrun.stderr[-6000:]
    assert torchrun.stdout.count('"run_dir"') == 1  # only rank 0 reports
    one = root / "one_process"
    with pytest.raises(SystemExit) as e:
        main(["run-prune", *_args(random_init, one)])
    assert e.value.code == 0
    out = root / "run"
    first = _assert_interrupted(run_ranks(_args(random_init, out), env={"CKPT_TEST_SIGINT": ONE_RANK}), out)
    shutil.copytree(out, root / "at_boundary")
    second = _assert_interrupted(run_ranks(["--resume", str(out)], env={"CKPT_TEST_SIGINT": ALL_RANKS}), out)
    shutil.copytree(out, root / "mid_epoch")
    done = run_ranks(["--resume", str(out)])
    assert [r.returncode for r in done] == [0, 0], [r.stderr[-2000:] for r in done]
    return dict(root=root, baseline=run_outcome(base), one_process=run_outcome(one), out=out, first=first,
                second=second)


def test_two_process_gloo_run_decides_the_masks_of_one_process(runs):
    _, _, a, _ = runs["one_process"]
    _, _, b, _ = runs["baseline"]
    for kind in ("alive", "penalized", "present"):
        for part in ("heads", "neurons"):
            assert torch.equal(a[kind][part], b[kind][part])


def test_ctrl_c_on_one_rank_or_all_ranks_stops_all_at_one_step_and_resumes_exactly(runs):
    assert runs["first"]["position"] == {"state": 0, "epoch": 1, "step": 0}  # rank 0 stopped with rank 1
    second = runs["second"]
    assert second["position"] == {"state": 1, "epoch": 0, "step": INTERRUPT_SYNC_STEPS}
    assert second["world_size"] == 2
    # the epoch's running sums of BOTH ranks (2 x 32 images a step), not rank 0's alone
    assert int(second["accum"][2]) == INTERRUPT_SYNC_STEPS * 64
    assert_same_outcome(run_outcome(runs["out"]), runs["baseline"])  # the resumed epoch's train_loss too
    assert _run_json(runs["out"])["status"] == "finished"


def test_mid_epoch_checkpoint_refuses_another_number_of_processes(runs, capsys):
    mid = runs["root"] / "mid_epoch"
    before = (mid / "run.json").read_bytes()
    with pytest.raises(SystemExit) as e:
        main(["run-prune", "--resume", str(mid)])  # this process: world size 1
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: {mid} was interrupted mid-epoch (state 1, epoch 0, step 10) with 2 process(es)")
    assert "torchrun --nproc_per_node 2" in err
    assert (mid / "run.json").read_bytes() == before  # untouched: still "interrupted", not "failed"


def test_epoch_boundary_checkpoint_resumes_with_another_number_of_processes(runs, capsys):
    boundary = runs["root"] / "at_boundary"
    with pytest.raises(SystemExit) as e:
        main(["run-prune", "--resume", str(boundary), "--format", "json"])  # 1 process
    assert e.value.code == 0, capsys.readouterr().err
    run = _run_json(boundary)
    assert run["status"] == "finished" and run["world_size"] == 1
    metrics = [json.loads(s) for s in (boundary / "metrics.jsonl").read_text().splitlines()]
    assert [(m["state"], m["epoch"]) for m in metrics] == [(0, 0), (1, 0)]


def test_download_under_torchrun_is_done_by_rank_0_alone(random_init, tmp_path):
    log = tmp_path / "downloads.txt"
    opts = base_options(random_init, tmp_path / "run", dataset="cifar10", data=str(tmp_path / "data"), download=True)
    ranks = run_ranks(cli_args(opts), env={"CKPT_TEST_DOWNLOAD_LOG": str(log)})
    assert log.read_text() == "rank 0\n"  # rank 1 waited for rank 0 instead of downloading into the same folder
    assert [r.returncode for r in ranks] == [2, 2], [r.stderr[-2000:] for r in ranks]
    assert ranks[0].stderr.endswith("error: could not download CIFAR-10: no network in this test\n")
    assert ranks[1].stderr.endswith("error: rank 0 could not prepare the dataset (its error says why); no rank started\n")
    assert not (tmp_path / "run").exists()

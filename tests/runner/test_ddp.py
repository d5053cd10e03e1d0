"""torchrun with 2 CPU processes (gloo) decides the same masks as one process with the same global batch."""

import subprocess
import sys

import torch
from conftest import REPO, base_options, cli_args, subprocess_env

from pruning_runner.checkpoint import load_run_checkpoint


def test_two_process_gloo_run_matches_one_process(random_init, tmp_path):
    opts = base_options(random_init, tmp_path / "one", method="refill", target="both", rate=0.5, states=2, epochs=1,
                        batch_size=64, criterion="taylor", compact_between_states=True)
    one = subprocess.run([sys.executable, "-m", "pruning_runner", *cli_args(opts), "--format", "json"], cwd=REPO,
                         env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    opts["out"] = str(tmp_path / "two")
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                          "-m", "pruning_runner", *cli_args(opts), "--format", "json"], cwd=REPO,
                         env=subprocess_env(), capture_output=True, text=True, timeout=300)
    (tmp_path.parent / "ddp_stderr.txt").write_text(two.stderr)
    assert two.returncode == 0, two.stderr[:6000]
    a = load_run_checkpoint(tmp_path / "one" / "checkpoint.pt")["masks"]
    b = load_run_checkpoint(tmp_path / "two" / "checkpoint.pt")["masks"]
    for kind in ("alive", "penalized"):
        for part in ("heads", "neurons"):
            assert torch.equal(a[kind][part], b[kind][part])
    assert two.stdout.count('"run_dir"') == 1  # only rank 0 reports

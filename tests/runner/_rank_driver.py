"""One torchrun-style rank of ``ckpttool run-prune ARGS`` (rank and rendezvous from the environment,
as torchrun sets them), with two test hooks read from the environment:

- ``CKPT_TEST_SIGINT="rank:state:epoch:step,..."``: that rank sends ITSELF a real SIGINT right after
  that training step, so the signal lands at a known step instead of a racy wall-clock moment.
- ``CKPT_TEST_DOWNLOAD_LOG=FILE``: the CIFAR downloader (no network here) appends "rank N" to FILE
  and fails, so a test sees which ranks tried to download.

Usage: python tests/runner/_rank_driver.py run-prune ARGS...
"""

import os
import signal
import sys

from ckpttool.cli import run_prune_cmd
from ckpttool.cli._root import main
from ckpttool.errors import DatasetError

RANK = int(os.environ.get("RANK", "0"))


def _install_sigint_hook(spec: str) -> None:
    points = set()
    for item in spec.split(","):
        rank, state, epoch, step = (int(v) for v in item.split(":"))
        if rank == RANK:
            points.add((state, epoch, step))
    original = run_prune_cmd._JsonListener.__call__

    def listener(self, event):
        if type(event).__name__ == "StepDone" and (event.state, event.epoch, event.step) in points:
            os.kill(os.getpid(), signal.SIGINT)
        original(self, event)

    run_prune_cmd._JsonListener.__call__ = listener


def _install_download_hook(log: str) -> None:
    from pruning_runner import datasets

    def download(layout, root):
        with open(log, "a") as f:
            f.write(f"rank {RANK}\n")
        raise DatasetError(f"could not download {layout.title}: no network in this test")

    datasets._download_cifar = download


if __name__ == "__main__":
    if os.environ.get("CKPT_TEST_SIGINT"):
        _install_sigint_hook(os.environ["CKPT_TEST_SIGINT"])
    if os.environ.get("CKPT_TEST_DOWNLOAD_LOG"):
        _install_download_hook(os.environ["CKPT_TEST_DOWNLOAD_LOG"])
    main(sys.argv[1:])

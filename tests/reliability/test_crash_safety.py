"""kill -9 at random moments of generate / backup / restore / a runner checkpoint write, and 8
processes generating and backing up the same names at once.

Real processes doing real writes through ckpttool's public functions, forked from a warm server
(``_zygote.py``) so that each kill costs milliseconds, not a torch import; ``_crash.py`` holds the
harness and the invariants. The soak (``benchmarks/reliability_soak.py --kills 50``) runs the same
series longer.
"""

from __future__ import annotations

import os

import pytest
from _crash import OPS, concurrency_round, kill_series

KILLS = int(os.environ.get("CKPTTOOL_CI_KILLS", "6"))


@pytest.mark.parametrize("op", OPS)
def test_kill_9_leaves_old_or_new_whole_and_loses_no_backup(zygote, versions, tmp_path, op):
    figures = kill_series(zygote, op, tmp_path / op, versions, kills=KILLS, seed=OPS.index(op))
    assert figures.failures == []
    assert figures.kills + figures.completed == KILLS
    assert figures.kills >= KILLS - 1  # the delays are drawn inside the loop's running time
    assert (figures.torn, figures.manifest_unparsable, figures.lost_backups) == (0, 0, 0)
    assert (figures.missing_records, figures.duplicate_records) == (0, 0)


def test_eight_processes_generate_and_back_up_the_same_names(zygote, tmp_path):
    zygote.run("generate", tmp_path, iters=1)  # the file every worker replaces (and backs up first)
    fig = concurrency_round(zygote, tmp_path, procs=8)
    assert fig.failures == []
    assert fig.final_is_a_candidate and fig.final_loads and fig.manifests_parse
    assert fig.backup_records == fig.backup_attempts == 16  # 8 generate replacements + 8 explicit backups
    assert (fig.duplicates, fig.missing) == (0, 0)

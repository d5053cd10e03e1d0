"""``python -m pruning_runner ...`` = ``ckpttool run-prune ...``."""

from __future__ import annotations

import sys

from ckpttool.cli._root import main

if __name__ == "__main__":
    main(["run-prune", *sys.argv[1:]])

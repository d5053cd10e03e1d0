"""The CLI through its real error boundary (``ckpttool.cli.main``), in-process, for the reliability tests."""

from __future__ import annotations

import pytest

from ckpttool.cli import main


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of ``ckpttool ARGS``."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out = capsys.readouterr()
    return info.value.code, out.out, out.err

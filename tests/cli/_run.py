"""Run the CLI in-process through its real error boundary (ckpttool.cli.main)."""

from __future__ import annotations

from dataclasses import dataclass

from ckpttool.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(capsys, *args: str) -> Result:
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    c = capsys.readouterr()
    return Result(code, c.out, c.err)

"""The one place the CLI prints. Results go to stdout, warnings/errors/hints to stderr.

Library code never prints; commands call these helpers with the library's dataclasses rendered.
Anything a file or the user supplied (names, paths, reasons, error messages that quote them) is
escaped on the way out with the one function in :mod:`ckpttool.report.escape`: a message cannot start
a second line (a forged ``::error`` workflow command on stderr), move the cursor or open rich markup.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ckpttool.report.escape import escape_text


def _console(stderr: bool = False):
    from rich.console import Console  # rich only at the edge

    stream = sys.stderr if stderr else sys.stdout
    # piped output (CI logs, files) gets wide tables rather than rich's 80-column default
    width = None if stream.isatty() else 160
    # emoji off: ':cross_mark:' in a path or a --reason prints as typed
    return Console(stderr=stderr, soft_wrap=True, highlight=False, width=width, emoji=False)


def stdout_console():
    return _console(stderr=False)


def stderr_console():
    return _console(stderr=True)


def emit_json(obj: Any) -> None:
    """Machine-readable result on stdout (one JSON document)."""
    click.echo(json.dumps(obj, indent=2, sort_keys=False, default=str))


def warn(message: str) -> None:
    click.echo(f"warning: {escape_text(message)}", err=True)


def hint(message: str) -> None:
    click.echo(f"hint: {escape_text(message)}", err=True)


def fail_line(message: str) -> None:
    """The one line a user sees for a known error (escaped: whatever it quotes, it stays one line)."""
    click.echo(f"error: {escape_text(message)}", err=True)


def is_json(fmt: str) -> bool:
    return fmt == "json"


def print_to_stdout(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")

"""Click CLI. The root only registers commands and owns the one error boundary."""

from ckpttool.cli._root import cli, main

__all__ = ["cli", "main"]

"""Root group: registers one module per command and turns known errors into one line + exit code.

Set CKPTTOOL_DEBUG=1 to see the traceback of a known error as well.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import click

from ckpttool.cli._output import fail_line
from ckpttool.errors import CkptError

# command name -> module under ckpttool.cli exposing `command` (a click.Command).
# Imported lazily so that `ckpttool verify` never pays for timm or the runner.
_COMMANDS = {
    "inspect": "inspect_cmd",
    "verify": "verify_cmd",
    "generate": "generate_cmd",
    "backup": "backup_cmd",
    "restore": "restore_cmd",
    "run-prune": "run_prune_cmd",
    "runs": "runs_cmd",
    "demo": "demo_cmd",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx):
        return [name for name, mod in _COMMANDS.items() if _module_exists(mod)]

    def get_command(self, ctx, name):
        mod = _COMMANDS.get(name)
        if mod is None or not _module_exists(mod):
            return None
        return importlib.import_module(f"ckpttool.cli.{mod}").command


def _module_exists(mod: str) -> bool:
    return importlib.util.find_spec(f"ckpttool.cli.{mod}") is not None


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ckpttool")
def cli() -> None:
    """ckpttool: build, inspect, verify and back up init checkpoints; run gated structured pruning."""


# Packages of the `torch` extra: the light install (verify, inspect, backup, restore, runs) has none.
_TORCH_EXTRA = frozenset({"torch", "torchvision", "timm", "matplotlib", "sklearn"})


def _missing_extra(error: ModuleNotFoundError) -> str | None:
    """The one line for a command that needs a package of an extra that is not installed."""
    root = (error.name or "").partition(".")[0]
    if root not in _TORCH_EXTRA:
        return None
    command = next((a for a in sys.argv[1:] if a in _COMMANDS), "this command")
    return (
        f"`ckpttool {command}` needs {root}, which is not installed (the light install verifies, inspects "
        "and backs up without it); install it with: pip install 'ckpttool[torch]'"
    )


def main(argv: list[str] | None = None) -> None:
    """Console entry point: the single error boundary."""
    try:
        rv = cli.main(args=argv, prog_name="ckpttool", standalone_mode=False)
    except click.exceptions.Abort:
        fail_line("aborted")
        sys.exit(130)
    except click.ClickException as e:  # usage errors: one line, exit 2
        fail_line(e.format_message())
        sys.exit(2)
    except CkptError as e:
        if os.environ.get("CKPTTOOL_DEBUG"):
            raise
        fail_line(str(e))
        sys.exit(e.exit_code)
    except ModuleNotFoundError as e:
        extra = _missing_extra(e)
        if extra is None or os.environ.get("CKPTTOOL_DEBUG"):
            raise
        fail_line(extra)
        sys.exit(2)
    except KeyboardInterrupt:
        fail_line("interrupted")
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)

"""`ckpttool runs`: list pruning runs (by init) from their run folders' records; `runs compare`."""

from __future__ import annotations

import click

from ckpttool.cli._output import emit_json, stdout_console, warn


def cell(value: object):
    """A table cell shown literally: no rich markup, control characters escaped (run.json is hostile)."""
    from rich.text import Text

    from pruning_runner.runs import printable

    return Text(printable(str(value)))


@click.group("runs", invoke_without_command=True)
@click.option("--init", "init", help="Only runs started from this init file or sha256 (prefix).")
@click.option("--root", default="runs", show_default=True, type=click.Path(file_okay=False), help="Folder of run folders.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="A table or one JSON document on stdout.")
@click.pass_context
def command(ctx: click.Context, init: str | None, root: str, fmt: str) -> None:
    """List runs with their init's sha256, verdict, method, states done and best accuracy.

    Example: ckpttool runs --init init_model/vit_small_cifar10_pretrained_init.pth.tar
    """
    if ctx.invoked_subcommand is not None:
        return
    from pruning_runner.runs import printable, scan_runs

    scan = scan_runs(root, init=init)
    for folder, why in scan.unreadable:  # one line each; the healthy runs are still listed
        warn(f"skipped {printable(folder)}: {printable(why)}")
    runs = scan.runs
    if fmt == "json":
        emit_json({"root": root, "runs": [r.to_dict() for r in runs],
                   "unreadable": [{"path": f, "reason": w} for f, w in scan.unreadable]})
        return
    from rich.table import Table

    table = Table(title=cell(f"runs under {root}" + (f" from init {init}" if init else "")))
    table.add_column("run", overflow="fold")
    for col in ("init sha256", "verdict", "method", "dataset", "target", "states", "best test %", "status"):
        table.add_column(col, no_wrap=True, min_width=min(12, len(col) + 1))
    for r in runs:
        table.add_row(*(cell(v) for v in (
            r.path, r.init_sha256[:12], r.verdict, r.method, r.dataset, r.target,
            f"{r.states_done}/{r.states_total}",
            "-" if r.best_test_acc is None else f"{100 * r.best_test_acc:.2f}", r.status,
        )))
    console = stdout_console()
    console.print(table) if runs else console.print("no runs found")


def _register() -> None:
    from ckpttool.cli.runs_compare_cmd import compare

    command.add_command(compare)


_register()

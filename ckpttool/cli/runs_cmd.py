"""`ckpttool runs`: list pruning runs (by init) from their run folders' records."""

from __future__ import annotations

import click

from ckpttool.cli._output import emit_json, stdout_console


@click.command("runs")
@click.option("--init", "init", help="Only runs started from this init file or sha256 (prefix).")
@click.option("--root", default="runs", show_default=True, type=click.Path(file_okay=False), help="Folder of run folders.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def command(init: str | None, root: str, fmt: str) -> None:
    """List runs with their init's sha256, verdict, method, states done and best accuracy."""
    from pruning_runner.runs import list_runs

    runs = list_runs(root, init=init)
    if fmt == "json":
        emit_json({"root": root, "runs": [r.to_dict() for r in runs]})
        return
    from rich.table import Table

    table = Table(title=f"runs under {root}" + (f" from init {init}" if init else ""))
    table.add_column("run", overflow="fold")
    for col in ("init sha256", "verdict", "method", "dataset", "target", "states", "best test %", "status"):
        table.add_column(col, no_wrap=True, min_width=min(12, len(col) + 1))
    for r in runs:
        table.add_row(
            r.path, r.init_sha256[:12], r.verdict, r.method, r.dataset, r.target,
            f"{r.states_done}/{r.states_total}",
            "-" if r.best_test_acc is None else f"{100 * r.best_test_acc:.2f}", r.status,
        )
    console = stdout_console()
    console.print(table) if runs else console.print("no runs found")

"""`ckpttool runs compare RUN_DIR...`: runs side by side, a table per state and one figure."""

from __future__ import annotations

import click

from ckpttool.cli._output import emit_json, stdout_console


@click.command("compare")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--plot", type=click.Path(dir_okay=False),
              help="Write test accuracy vs parameters removed here (PNG; a panel per dataset).")
@click.option("--x-axis", "x_axis", type=click.Choice(["params", "flops"]), default="params", show_default=True,
              help="The plot's x axis: fraction of parameters or of FLOPs per image removed.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Tables or one JSON document on stdout.")
def compare(run_dirs: tuple[str, ...], plot: str | None, x_axis: str, fmt: str) -> None:
    """Compare runs state by state: sparsity, kept heads/neurons, params, FLOPs, best val, test at best val.

    Example: ckpttool runs compare runs/*_refill_cifar10 runs/*_rsst_cifar10 --plot compare.png
    """
    from pruning_runner.compare import compare_runs, plot_comparison

    runs = compare_runs(run_dirs)
    panels = plot_comparison(runs, plot, x=x_axis) if plot else None
    if fmt == "json":
        emit_json({"runs": [r.to_dict() for r in runs], "plot": plot, "panels": panels})
        return
    _print_tables(runs)
    if plot:
        stdout_console().print(f"plot: {plot}", markup=False)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _print_tables(runs) -> None:
    from rich.table import Table

    from ckpttool.cli.runs_cmd import cell

    console = stdout_console()
    for k in sorted({s.state for r in runs for s in r.states}):
        table = Table(title=f"state {k}")
        table.add_column("run", overflow="fold")
        table.add_column("method / dataset / verdict")
        for col in ("params removed %", "heads", "neurons", "params", "MFLOPs/image", "best val %",
                    "test % @best val"):
            table.add_column(col, justify="right", no_wrap=True)
        for r in runs:
            s = next((s for s in r.states if s.state == k), None)
            if s is None:
                continue
            table.add_row(*(cell(v) for v in (
                r.record.path, r.label, _pct(s.params_removed), f"{s.kept_heads}/{s.total_heads}",
                f"{s.kept_neurons}/{s.total_neurons}", f"{s.params:,}",
                "-" if s.flops is None else f"{s.flops / 1e6:,.2f}", _pct(s.best_val_acc),
                _pct(s.test_acc_at_best_val),
            )))
        console.print(table)
    if not any(r.states for r in runs):
        console.print("no finished states yet")

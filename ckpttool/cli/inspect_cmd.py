"""`ckpttool inspect FILE`: per-tensor statistics."""

from __future__ import annotations

import click

from ckpttool.cli._options import format_option
from ckpttool.cli._output import emit_json, print_to_stdout
from ckpttool.inspection import SORT_COLUMNS, inspect_file, select_tensors
from ckpttool.report.escape import escape_text


@click.command("inspect")
@click.argument("file", type=click.Path(path_type=str))
@click.option("--filter", "pattern", metavar="GLOB", help="Only tensors whose name matches, e.g. 'blocks.0.*'.")
@click.option("--sort", type=click.Choice(SORT_COLUMNS), help="Sort by a column (numbers descending).")
@click.option("--top", type=click.IntRange(min=1), help="Show only the first N rows.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Write a PNG: each group coloured by what the verdict made of it, std and spectral ratio along the depth.")
@format_option
def command(file: str, pattern: str | None, sort: str | None, top: int | None, plot_path: str | None, fmt: str) -> None:
    """Per-tensor statistics of FILE: mean, std, kurtosis, zeros, spectral ratio, status.

    FILE may be a shard index (model.safetensors.index.json) or a folder holding one model: a sharded
    model is inspected as one.
    """
    report = inspect_file(file)
    rows = select_tensors(report.tensors, pattern=pattern, sort=sort, top=top)
    if plot_path:
        from ckpttool.plot import save_verdict_plot

        save_verdict_plot(report.tensors, report.verdict, plot_path, title=report.path.name)
    if fmt == "json":
        d = report.to_dict()
        keep = {t.name for t in rows}
        d["tensors"] = [t for t in d["tensors"] if t["name"] in keep]
        if sort or top:
            order = {t.name: i for i, t in enumerate(rows)}
            d["tensors"].sort(key=lambda t: order[t["name"]])
        emit_json(d)
        return
    from ckpttool.report.text import render_tensor_table

    print_to_stdout(render_tensor_table(rows, title=f"{report.path} ({report.format})"))
    s = report.summary
    status = ", ".join(f"{v} {k}" for k, v in s["by_status"].items())
    dtypes = ", ".join(f"{v} {k}" for k, v in s["by_dtype"].items())
    shown = f" ({len(rows)} shown)" if len(rows) != len(report.tensors) else ""
    print_to_stdout(
        f"{s['tensors']} tensors{shown}, {s['parameters']:,} values; {status}; dtypes: {dtypes}; "
        f"sha256 {report.sha256}"
    )
    if report.shards:
        print_to_stdout(escape_text(f"sharded model, sha256 of the index; {len(report.shards)} shards: " + ", ".join(
            f"{sh.path.name} (sha256 {sh.sha256}, {sh.size:,} bytes)" for sh in report.shards)))
    if plot_path:
        click.echo(f"plot written to {escape_text(plot_path)}", err=True)

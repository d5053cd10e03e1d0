"""`ckpttool demo`: the main job on an embedded default, no GPU, no network."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import click

from ckpttool.cli._output import emit_json, stdout_console


@click.command("demo")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), help="Keep the demo's files here (default: a temp folder, removed after).")
@click.option("--epochs", "run_epochs", type=click.IntRange(min=1), default=2, show_default=True, help="Epochs per pruning state in the runner step.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def command(workdir: Path | None, run_epochs: int, fmt: str) -> None:
    """Generate, verify, catch a misnamed file, back up and restore, and run a gated pruning run, on CPU.

    Everything happens in a temp folder (or --workdir), in about a minute or two.
    """
    from ckpttool.demo import run_demo

    keep = workdir is not None
    work = workdir or Path(tempfile.mkdtemp(prefix="ckpttool-demo-"))
    if keep and work.exists() and any(work.iterdir()):
        from ckpttool.errors import InvalidArgumentError

        raise InvalidArgumentError(f"--workdir {work} is not empty; choose a new folder")
    con = stdout_console()
    steps = []
    try:
        for i, step in enumerate(run_demo(work, run_epochs=run_epochs), start=1):
            steps.append(step)
            if fmt == "text":
                mark = "[green]ok[/]" if step.ok else "[red]UNEXPECTED[/]"
                con.print(f"[bold]{i}. {step.title}[/]  {mark}  [dim]{step.seconds:.1f}s[/]")
                for line in step.lines:
                    con.print(f"   {line}", markup=False, highlight=False)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    ok = all(s.ok for s in steps)
    if fmt == "json":
        emit_json({"passed": ok, "workdir": str(work) if keep else None, "steps": [
            {"title": s.title, "ok": s.ok, "lines": list(s.lines), "seconds": round(s.seconds, 2), "data": s.data}
            for s in steps]})
    else:
        total = sum(s.seconds for s in steps)
        con.print(f"demo {'[green]passed[/]' if ok else '[red]FAILED[/]'} in {total:.0f}s"
                  + (f"; files kept in {work}" if keep else ""))
    sys.exit(0 if ok else 1)

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
    from ckpttool._threads import apply_cpu_thread_policy

    apply_cpu_thread_policy()  # before torch starts: no busy-waiting thread pool on a shared machine
    from ckpttool.demo import run_demo

    keep = workdir is not None
    work = workdir or Path(tempfile.mkdtemp(prefix="ckpttool-demo-"))
    if keep and work.exists() and any(work.iterdir()):
        from ckpttool.errors import InvalidArgumentError

        raise InvalidArgumentError(f"--workdir {work} is not empty; choose a new folder")
    con = stdout_console()
    steps = []
    bar = _StepBar(enabled=fmt == "text")
    try:
        for i, step in enumerate(run_demo(work, run_epochs=run_epochs, progress=bar.update), start=1):
            bar.close()
            steps.append(step)
            if fmt == "text":
                mark = "[green]ok[/]" if step.ok else "[red]UNEXPECTED[/]"
                con.print(f"[bold]{i}. {step.title}[/]  {mark}  [dim]{step.seconds:.1f}s[/]")
                for line in step.lines:
                    con.print(f"   {line}", markup=False, highlight=False)
    finally:
        bar.close()
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


class _StepBar:
    """A rich progress bar on stderr for the demo's long steps; removed when the step's result prints."""

    _TITLES = {"train": "training the stand-in weights", "run": "pruning run (Refill on digits)"}

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.progress = None
        self.task = None

    def update(self, p) -> None:
        if not self.enabled:
            return
        if self.progress is None:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            from ckpttool.cli._output import stderr_console

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                                     console=stderr_console(), transient=True)
            self.progress.start()
            self.task = self.progress.add_task(self._TITLES.get(p.step, p.step), total=p.total, detail="")
        self.progress.update(self.task, completed=p.completed, total=p.total, detail=p.detail)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

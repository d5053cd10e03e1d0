"""`ckpttool run-prune`: gated iterative structured pruning (Refill / RSST) of a timm ViT.

Thin: flags (+ optional TOML) -> RunConfig -> pruning_runner.loop -> rich progress and tables.
"""

from __future__ import annotations

import os
from typing import Any

import click
from click.core import ParameterSource

from ckpttool.cli._output import emit_json, stderr_console, stdout_console
from ckpttool.errors import InvalidArgumentError

# options that may change when resuming (execution only; never the experiment)
_RESUME_OK = {"device", "amp", "compile", "checkpoint_every", "eval_batch_size"}
_NOT_CONFIG = {"config", "resume", "fmt"}


def _choice(*values: str) -> click.Choice:
    return click.Choice(values)


@click.command("run-prune")
@click.option("--init", type=click.Path(dir_okay=False), help="Init checkpoint (its verdict gates the run).")
@click.option("--dataset", type=_choice("cifar10", "cifar100", "digits", "synthetic"))
@click.option("--data", type=click.Path(file_okay=False), help="Dataset folder (CIFAR).")
@click.option("--download", is_flag=True, default=None, help="Download the dataset when missing.")
@click.option("--synthetic-size", type=int, help="Images in the synthetic train+val pool.")
@click.option("--val-size", type=int, help="Training images held out for validation.")
@click.option("--method", type=_choice("refill", "rsst"))
@click.option("--target", type=_choice("head", "mlp", "both"))
@click.option("--rate", type=float, help="Fraction of the REMAINING groups removed at each prune.")
@click.option("--final-sparsity", type=float, help="Fraction removed after the last state (sets the rate).")
@click.option("--states", type=int, help="Pruning states (state 0 is dense).")
@click.option("--epochs", type=int, help="Epochs per state.")
@click.option("--criterion", type=_choice("magnitude", "l2", "taylor", "remain"))
@click.option("--ranking", type=_choice("layer", "global"))
@click.option("--min-heads-per-layer", type=int)
@click.option("--taylor-batches", type=int)
@click.option("--rewind", type=_choice("lt", "rewind_lt"))
@click.option("--rewind-epoch", type=int)
@click.option("--reg-max", type=float, help="RSST: lambda reached at the end of a state.")
@click.option("--reg-schedule", type=_choice("x", "x2", "x3", "exp", "exp_custom_exponents"))
@click.option("--reg-exponent", type=float)
@click.option("--compact-between-states/--no-compact-between-states", default=None)
@click.option("--optimizer", type=_choice("sgd", "adamw"))
@click.option("--lr", type=float)
@click.option("--batch-size", type=int)
@click.option("--eval-batch-size", type=int)
@click.option("--schedule", type=_choice("cosine", "multistep"))
@click.option("--warmup-epochs", type=float)
@click.option("--weight-decay", type=float)
@click.option("--label-smoothing", type=float)
@click.option("--momentum", type=float)
@click.option("--seed", type=int)
@click.option("--device", type=_choice("auto", "cpu", "cuda"))
@click.option("--amp/--no-amp", default=None, help="bf16 autocast on CUDA.")
@click.option("--compile", is_flag=True, default=None, help="torch.compile the model.")
@click.option("--checkpoint-every", type=int, help="Epochs between checkpoints (0: state ends only).")
@click.option("--arch", help="timm name, when the init has no metadata.")
@click.option("--img-size", type=int)
@click.option("--patch-size", type=int)
@click.option("--out", type=click.Path(file_okay=False), help="Run folder (default runs/<UTC>_<method>_<dataset>).")
@click.option("--config", type=click.Path(dir_okay=False), help="TOML with the same keys; flags override it.")
@click.option("--resume", type=click.Path(file_okay=False), help="Continue the run in this folder.")
@click.option("--allow-random", is_flag=True, default=None, help="Start from a random init on purpose.")
@click.option("--allow-partial", is_flag=True, default=None, help="Accept a partial init.")
@click.option("--format", "fmt", type=_choice("text", "json"), default="text", show_default=True)
@click.pass_context
def command(ctx: click.Context, config: str | None, resume: str | None, fmt: str, **options: Any) -> None:
    """Prune heads and/or MLP neurons of a ViT state by state, from a verified init.

    Example: ckpttool run-prune --init init_model/vit_small_cifar10_pretrained_init.pth.tar
    --dataset cifar10 --method refill --target head --rate 0.2 --states 16 --epochs 60
    """
    from ckpttool._threads import apply_cpu_thread_policy

    apply_cpu_thread_policy()  # before torch starts: threads for the free cores, no busy-waiting
    given = {
        k: v for k, v in options.items()
        if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE
    }
    from pruning_runner.config import resolve_config
    from pruning_runner.loop import resume_pruning, run_pruning

    quiet = os.environ.get("RANK", "0") != "0"  # torchrun: only rank 0 reports
    listener = _JsonListener() if (fmt == "json" or quiet) else _RichListener()
    try:
        if resume:
            if config:
                raise InvalidArgumentError("--config cannot be combined with --resume (the run keeps its config)")
            changed = sorted(set(given) - _RESUME_OK)
            if changed:
                raise InvalidArgumentError(
                    f"--resume continues the run as configured; drop {', '.join('--' + c.replace('_', '-') for c in changed)}"
                )
            result = resume_pruning(resume, listener=listener, overrides=given)
        else:
            cfg = resolve_config(config, given)
            result = run_pruning(cfg, listener=listener)
    finally:
        listener.close()
    if quiet:
        return
    if fmt == "json":
        emit_json({"run_dir": str(result.run_dir), "init": result.init, "states": list(result.states),
                   "final_model": str(result.final_model) if result.final_model else None})
    else:
        _print_table(stdout_console(), list(result.states), title=f"run {result.run_dir}")
        if result.final_model:
            stdout_console().print(f"compact model: {result.final_model}")


def _state_row(s: dict) -> list[str]:
    return [
        str(s["state"]),
        f"{s['kept_heads']}/{s['total_heads']}",
        f"{s['kept_neurons']}/{s['total_neurons']}",
        f"{s['params']:,}",
        f"{100 * s['best_val_acc']:.2f}",
        f"{100 * s['test_acc_at_best_val']:.2f}",
        "-" if s.get("rsst_norm_ratio") is None else f"{s['rsst_norm_ratio']:.3g}",
        f"{s['seconds']:.1f}",
    ]


def _print_table(console, states: list[dict], title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in ("state", "heads", "neurons", "params", "best val %", "test % @best val", "penalised/kept", "s"):
        table.add_column(col, justify="right")
    for s in states:
        table.add_row(*_state_row(s))
    console.print(table)


class _RichListener:
    """Progress bar per epoch and a table per state, on stderr."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = stderr_console()
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=self.console, transient=True)
        self.task = None
        self.started = False

    def __call__(self, event: Any) -> None:
        name = type(event).__name__
        if name == "RunStarted":
            init = event.init
            self.console.print(
                f"run {event.run_dir} ({'resumed' if event.resumed else 'new'}) on {event.device}"
                f"{f' x{event.world_size}' if event.world_size > 1 else ''}; init {init['path']} "
                f"sha256 {init['sha256'][:12]} verdict {init['verdict']}"
            )
            if event.head_reinitialised:
                self.console.print("classifier head re-initialised (init has another class count)")
        elif name == "EpochStarted":
            if not self.started:
                self.progress.start()
                self.started = True
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(f"state {event.state} epoch {event.epoch}", total=event.steps,
                                               completed=event.start_step)
        elif name == "StepDone":
            if self.task is not None:
                self.progress.update(self.task, completed=event.step)
        elif name == "EpochEnded":
            m = event.metrics
            extra = f" penalised/kept {m['rsst_norm_ratio']:.3g}" if m.get("rsst_norm_ratio") is not None else ""
            self.progress.console.print(
                f"state {m['state']} epoch {m['epoch']}: loss {m['train_loss']:.4f} train {100 * m['train_acc']:.2f}% "
                f"val {100 * m['val_acc']:.2f}% test {100 * m['test_acc']:.2f}% "
                f"({m['images_per_s'] or 0:.0f} img/s){extra}"
            )
        elif name == "StateEnded":
            _print_table(self.progress.console, [event.result], title=f"state {event.result['state']}")

    def close(self) -> None:
        if self.started:
            self.progress.stop()


class _JsonListener:
    def __call__(self, event: Any) -> None:
        pass

    def close(self) -> None:
        pass

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
from ckpttool.report.escape import escape_text

# options that may change when resuming (execution only; never the experiment)
_RESUME_OK = {"device", "amp", "compile", "compile_backend", "checkpoint_every", "eval_batch_size", "deterministic"}
_NOT_CONFIG = {"config", "resume", "fmt"}


def _choice(*values: str) -> click.Choice:
    return click.Choice(values)


def _default(name: str) -> str | None:
    """RunConfig's default for ``name`` as help text shows it; None when it has none."""
    from dataclasses import fields

    from pruning_runner.config import RunConfig

    value = {f.name: f.default for f in fields(RunConfig)}[name]
    if value is None:
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _opt(*decls: str, help: str, **kw: Any):
    """An option whose default lives in RunConfig (None here: only flags actually given override the TOML)."""
    name = decls[0].split("/")[0].lstrip("-").replace("-", "_")
    default = _default(name)
    if default is not None:
        help = f"{help}  [default: {default}]"
    return click.option(*decls, help=help, **kw)


@click.command("run-prune")
@_opt("--init", type=click.Path(dir_okay=False), help="Init checkpoint; its verdict gates the run (required).")
@_opt("--dataset", type=_choice("cifar10", "cifar100", "digits", "synthetic"), help="Dataset (required).")
@_opt("--data", type=click.Path(file_okay=False),
      help="Folder holding the CIFAR folder or archive (digits and synthetic need none)  [default: ./data].")
@_opt("--download", is_flag=True, default=None, help="Download the dataset when it is missing (rank 0 only).")
@_opt("--synthetic-size", type=int, help="Images in the synthetic train+val pool  [default: the loader's].")
@_opt("--val-size", type=int,
      help="Training images held out for validation, at least 100  [default: 5000 for CIFAR, else max(100, 10%)].")
@_opt("--method", type=_choice("refill", "rsst"), help="Pruning method (required).")
@_opt("--target", type=_choice("head", "mlp", "both"), help="Groups to prune: attention heads, MLP neurons or both (required).")
@_opt("--rate", type=float, help="Fraction of the REMAINING groups removed at each prune (or --final-sparsity).")
@_opt("--final-sparsity", type=float, help="Fraction removed after the last state (sets the rate).")
@_opt("--states", type=int, help="Pruning states; state 0 is dense (required).")
@_opt("--epochs", type=int, help="Training epochs per state (required).")
@_opt("--criterion", type=_choice("magnitude", "l2", "taylor", "remain"), help="Group importance criterion.")
@_opt("--ranking", type=_choice("layer", "global"), help="Same fraction per block (layer) or across blocks (global).")
@_opt("--min-heads-per-layer", type=int, help="Never fewer heads than this in a block.")
@_opt("--taylor-batches", type=int, help="Batches over which the taylor criterion accumulates |w * dL/dw|.")
@_opt("--rewind", type=_choice("lt", "rewind_lt"), help="Rewind survivors to the init (lt) or to epoch --rewind-epoch of state 0.")
@_opt("--rewind-epoch", type=int, help="rewind_lt: epochs of state 0 after which the rewind snapshot is taken.")
@_opt("--reg-max", type=float, help="RSST: penalty lambda reached on the last step of a state.")
@_opt("--reg-schedule", type=_choice("x", "x2", "x3", "exp", "exp_custom_exponents"),
      help="RSST: how lambda grows over a state.")
@_opt("--reg-exponent", type=float, help="RSST: exponent p of exp_custom_exponents.")
@_opt("--compact-between-states/--no-compact-between-states", default=None,
      help="Train each state on a physically smaller model.")
@_opt("--optimizer", type=_choice("sgd", "adamw"), help="Optimizer.")
@_opt("--lr", type=float, help="Peak learning rate  [default: 1e-3 for adamw, 0.05 for sgd].")
@_opt("--batch-size", type=int, help="Global batch size (split over torchrun processes).")
@_opt("--eval-batch-size", type=int, help="Evaluation batch size per process.")
@_opt("--schedule", type=_choice("cosine", "multistep"), help="Learning-rate schedule within a state.")
@_opt("--warmup-epochs", type=float, help="Linear learning-rate warm-up at the start of every state.")
@_opt("--weight-decay", type=float, help="Weight decay (matrices only).")
@_opt("--label-smoothing", type=float, help="Label smoothing of the cross-entropy loss.")
@_opt("--momentum", type=float, help="SGD momentum.")
@_opt("--seed", type=int, help="Seed of the data order, augmentation and new weights (recorded in run.json).")
@_opt("--deterministic/--no-deterministic", default=None,
      help="GPU runs: deterministic algorithms only and no TF32, so a rerun repeats bit for bit; costs speed "
           "(fp32 matmuls without TF32, deterministic kernels), not measured here (no GPU).")
@_opt("--device", type=_choice("auto", "cpu", "cuda"), help="Where to train (auto: CUDA when available).")
@_opt("--amp/--no-amp", default=None, help="bf16 autocast on CUDA (fp32 master weights).")
@_opt("--compile", is_flag=True, default=None, help="torch.compile the training model (recompiled each state).")
@_opt("--compile-backend", help="torch.compile backend, with --compile.")
@_opt("--checkpoint-every", type=int, help="Epochs between checkpoints (0: state ends only).")
@_opt("--arch", help="timm model name, when the init has no metadata.")
@_opt("--img-size", type=int, help="Model input size, when the init has no metadata  [default: 32].")
@_opt("--patch-size", type=int, help="Patch size, when the init has no metadata  [default: the arch's].")
@_opt("--out", type=click.Path(file_okay=False), help="Run folder  [default: runs/<UTC time>_<method>_<dataset>].")
@click.option("--config", type=click.Path(dir_okay=False), help="TOML file with the same keys; flags override it.")
@click.option("--resume", type=click.Path(file_okay=False), help="Continue the run in this folder from its checkpoint.")
@_opt("--allow-random", is_flag=True, default=None, help="Accept a random init (a random start on purpose).")
@_opt("--allow-partial", is_flag=True, default=None, help="Accept a partial init (some groups look untouched).")
@click.option("--format", "fmt", type=_choice("text", "json"), default="text", show_default=True,
              help="Result on stdout: a table or one JSON document.")
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
        _print_table(stdout_console(), list(result.states), title=f"run {escape_text(result.run_dir)}")
        if result.final_model:
            stdout_console().print(f"compact model: {escape_text(result.final_model)}", markup=False)


def _state_row(s: dict) -> list[str]:
    return [
        str(s["state"]),
        f"{s['kept_heads']}/{s['total_heads']}",
        f"{s['kept_neurons']}/{s['total_neurons']}",
        f"{s['params']:,}",
        "-" if s.get("flops") is None else f"{s['flops'] / 1e6:,.2f}",
        f"{100 * s['best_val_acc']:.2f}",
        f"{100 * s['test_acc_at_best_val']:.2f}",
        "-" if s.get("rsst_norm_ratio") is None else f"{s['rsst_norm_ratio']:.3g}",
        f"{s['seconds']:.1f}",
    ]


def _print_table(console, states: list[dict], title: str) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title))  # a path in the title is shown literally, never as markup
    for col in ("state", "heads", "neurons", "params", "MFLOPs/image", "best val %", "test % @best val",
                "penalised/kept", "s"):
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
            self.console.print(escape_text(
                f"run {event.run_dir} ({'resumed' if event.resumed else 'new'}) on {event.device}"
                f"{f' x{event.world_size}' if event.world_size > 1 else ''}; init {init['path']} "
                f"sha256 {init['sha256'][:12]} verdict {init['verdict']}"
            ), markup=False)
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

"""`ckpttool generate`: build an init checkpoint from timm, check it, write it safely."""

from __future__ import annotations

from pathlib import Path

import click

from ckpttool.cli._options import format_option
from ckpttool.cli._output import emit_json, is_json, stderr_console, stdout_console
from ckpttool.errors import InvalidArgumentError, VerdictMismatchError
from ckpttool.report.escape import escape_markup, escape_text

_WEIGHT_INIT_CHOICES = ["default", "jax", "jax_nlhb", "moco"]


@click.command("generate")
@click.option("--arch", help="vit_tiny | vit_small | vit_base, or any timm model name (optionally name.tag).")
@click.option("--dataset", help="cifar10 | cifar100 (sets the head's classes), or a label with --num-classes.")
@click.option("--init", "inits", multiple=True, type=click.Choice(["pretrained", "random"]),
              help="pretrained (ImageNet weights, fresh head) or random (timm's init). With --all: repeatable; "
                   "default pretrained.")
@click.option("--num-classes", type=int, help="Classes of the fresh head (>= 1), instead of the dataset's.")
@click.option("--img-size", type=int, help="Input size (32 for native CIFAR); pretrained position "
                                            "embeddings are resampled to it.")
@click.option("--patch-size", type=int, help="ViT patch size (4 for native CIFAR); pretrained patch "
                                              "embeddings are resampled to it.")
@click.option("--revision", help="Hub branch, tag or commit to pin (--init pretrained from the hub).")
@click.option("--weights-file", type=click.Path(path_type=Path, dir_okay=False),
              help="Local .safetensors/.pth weights instead of the hub (loaded safely).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="torch seed before create_model: the random init and a fresh head are reproducible.")
@click.option("--weight-init", type=click.Choice(_WEIGHT_INIT_CHOICES),
              help="timm ViT init mode for --init random (default = timm's).")
@click.option("--model-kwargs", metavar="JSON",
              help='Advanced: extra timm create_model kwargs, e.g. \'{"depth": 2}\'.')
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              help="Destination file (.pth.tar or .safetensors). Default: "
                   "OUT_DIR/{arch}_{dataset}_{init}_init.pth.tar.")
@click.option("--out-dir", type=click.Path(path_type=Path, file_okay=False), default=Path("init_model"),
              show_default=True, help="Folder for default file names; holds MANIFEST.json and backup_old/.")
@click.option("--force", is_flag=True, help="Replace an existing file (it is backed up first).")
@click.option("--all", "all_", is_flag=True,
              help="Generate vit_tiny/vit_small/vit_base x cifar10/cifar100 (x each --init).")
@format_option
def command(arch, dataset, inits, num_classes, img_size, patch_size, revision, weights_file, seed,
            weight_init, model_kwargs, out, out_dir, force, all_, fmt):
    """Build an init checkpoint from timm and write it only if it is what was asked.

    Pretrained weights come from the Hugging Face hub (or its cache with HF_HUB_OFFLINE=1) or
    --weights-file; there is never a fallback to random weights. Every tensor is reported as
    pretrained, resampled or fresh, and the verdict must match --init before anything is written.
    """
    from ckpttool._threads import apply_cpu_thread_policy
    from ckpttool.generate import (
        GenerateRequest,
        generate_each,
        generate_init,
        matrix_requests,
        parse_model_kwargs,
    )

    apply_cpu_thread_policy()

    base = GenerateRequest(
        arch=arch or "", dataset=dataset, init=(inits[0] if inits else "pretrained"),
        num_classes=num_classes, img_size=img_size, patch_size=patch_size, revision=revision,
        weights_file=weights_file, seed=seed,
        weight_init=None if weight_init is None else ("" if weight_init == "default" else weight_init),
        model_kwargs=parse_model_kwargs(model_kwargs), out=out, out_dir=out_dir, force=force,
    )
    try:
        if all_:
            if arch or dataset or num_classes is not None:
                raise InvalidArgumentError("--all generates every arch x dataset; drop --arch/--dataset/--num-classes")
            if weights_file is not None:
                raise InvalidArgumentError("--all builds several archs; --weights-file fits one, drop it")
            requests = matrix_requests(base, inits=tuple(dict.fromkeys(inits)) or ("pretrained",))
            outcome = _run_matrix(requests, generate_each, quiet=is_json(fmt))
            results = list(outcome.written)
        else:
            if not arch:
                raise InvalidArgumentError("pass --arch (e.g. vit_small), or --all")
            if len(inits) > 1:
                raise InvalidArgumentError("give --init once (several only with --all)")
            if not inits:
                raise InvalidArgumentError("pass --init pretrained or --init random")
            results = [generate_init(base)]
    except VerdictMismatchError as e:
        _render_refusal(e)
        raise
    if is_json(fmt):
        emit_json(results[0].to_dict() if not all_ else {
            "files": [r.to_dict() for r in results], "failed": [f.to_dict() for f in outcome.failed]})
    elif all_:
        _render_summary(results, outcome.failed)
    else:
        _render_one(results[0])
    if all_ and outcome.failed:
        from ckpttool.errors import BatchFailedError

        raise BatchFailedError(
            f"generate --all: {len(outcome.failed)} of {len(requests)} files failed (listed above: "
            f"{', '.join(_label(f.request) for f in outcome.failed)}); the other {len(results)} were written",
            exit_code=outcome.exit_code)


def _label(request) -> str:
    return f"{request.arch} {request.dataset} {request.init}"


def _run_matrix(requests, generate_each, *, quiet: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=stderr_console(), transient=False, disable=quiet) as bar:
        task = bar.add_task("generate", total=len(requests))

        def on_progress(ev):
            r = ev.request
            if ev.stage == "start":
                bar.update(task, description=_label(r))
            else:
                if ev.stage == "failed":
                    bar.console.print(escape_text(f"{_label(r)}: failed - {ev.error}"), markup=False,
                                      highlight=False)
                bar.advance(task)

        return generate_each(requests, progress=on_progress)


def _origin_table(built):
    from rich.table import Table

    counts = built.origin_counts()
    table = Table()
    table.add_column("origin")
    table.add_column("tensors", justify="right")
    for origin, n in counts.items():
        table.add_row(origin, str(n))
    return table


def _not_pretrained_table(built):
    from rich.table import Table

    rows = built.not_pretrained()
    if not rows:
        return None
    table = Table()
    for col in ("tensor", "origin", "shape", "source shape"):
        table.add_column(col)
    for o in rows:
        src = "-" if o.source_shape is None else str(list(o.source_shape))
        table.add_row(o.name + (" (head)" if o.head else ""), o.origin, str(list(o.shape)), src)
    return table


def _render_one(result) -> None:
    con = stdout_console()
    b = result.built
    con.print(f"[bold]{b.arch.label}[/] ({b.arch.full_name}) {b.dataset.name} ({b.dataset.num_classes} classes), "
              f"init {b.init}, img {b.img_size} patch {b.patch_size}")
    con.print(f"source: {b.source.describe()}")
    con.print("where each tensor came from:")
    con.print(_origin_table(b))
    extra = _not_pretrained_table(b) if b.init == "pretrained" else None  # random: all fresh by design
    if extra is not None:
        con.print("tensors not taken as-is from the source:")
        con.print(extra)
    con.print(f"verdict: [bold]{b.verdict.verdict}[/] - {b.verdict.reason}")
    if result.backup is not None:
        con.print(f"replaced file backed up as {result.backup.id}")
    con.print(f"wrote {result.path}")
    con.print(f"sha256 {result.sha256}  ({result.size} bytes; pinned in {result.manifest})")


def _render_summary(results, failed=()) -> None:
    from rich.table import Table

    table = Table()
    for col in ("file", "verdict", "pretrained", "resampled", "fresh", "sha256"):
        table.add_column(col)
    for r in results:
        c = r.built.origin_counts()
        table.add_row(str(r.path), r.built.verdict.verdict, str(c["pretrained"]), str(c["resampled"]),
                      str(c["fresh"]), r.sha256[:16])
    for f in failed:
        table.add_row(escape_markup(f.path or _label(f.request)), "[red]FAILED[/] (not written)", "-", "-", "-", "-")
    con = stdout_console()
    con.print(table)
    if failed:
        con.print(f"{len(failed)} of {len(failed) + len(results)} files failed, nothing written for them:")
        for f in failed:
            con.print(escape_text(f"  {_label(f.request)}: {f.error}"), markup=False, highlight=False)


def _render_refusal(e: VerdictMismatchError) -> None:
    con = stderr_console()
    built = getattr(e, "built", None)
    if built is not None:
        con.print("what was built (not written):")
        con.print(_origin_table(built))
        extra = _not_pretrained_table(built) if built.init == "pretrained" else None
        if extra is not None:
            con.print("tensors not taken as-is from the source:")
            con.print(extra)
    v = e.evidence
    if v is not None and hasattr(v, "verdict"):
        con.print(f"verdict: {v.verdict} - {v.reason}")
        untouched = getattr(v, "untouched_groups", ())
        if untouched:
            con.print(f"groups that look untouched: {', '.join(untouched)}")

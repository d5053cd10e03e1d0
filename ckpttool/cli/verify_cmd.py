"""`ckpttool verify PATH...`: verdicts with exit codes for CI."""

from __future__ import annotations

import sys

import click

from ckpttool.cli._output import emit_json, fail_line, print_to_stdout
from ckpttool.errors import InvalidArgumentError
from ckpttool.report import FORMATS, get_renderer
from ckpttool.verify import verify_paths


@click.command("verify")
@click.argument("paths", nargs=-1, type=click.Path(path_type=str))
@click.option(
    "--expect",
    type=click.Choice(["auto", "pretrained", "random", "any"]),
    default="auto",
    show_default=True,
    help="auto: a name containing 'pretrained' must be pretrained, 'random' must be random, else any.",
)
@click.option("--rule", "rules", multiple=True, metavar="TENSOR:STAT>VALUE", help="Extra rule, reported and enforced (repeatable).")
@click.option("--include-head", is_flag=True, help="Count the classifier head in the verdict.")
@click.option("--count-stem", is_flag=True,
              help="Let an untouched-looking input layer (stem, patch_embed) make a checkpoint partial.")
@click.option("--manifest", "manifest", type=click.Path(dir_okay=False), help="Check files against a MANIFEST.json.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
def command(paths: tuple[str, ...], expect: str, rules: tuple[str, ...], include_head: bool, count_stem: bool,
            manifest: str | None, fmt: str) -> None:
    """Verdict pretrained / random / partial / corrupt for each checkpoint under PATHS.

    Exit 0: every file passed; 1: a verdict or rule did not meet the expectation;
    2: a file could not be read or was refused as unsafe, or the arguments were wrong.
    """
    if not paths and not manifest:
        raise InvalidArgumentError("give at least one PATH or --manifest FILE (see 'ckpttool verify --help')")
    if manifest and paths and fmt != "text":
        raise InvalidArgumentError(f"--format {fmt} prints one document: run --manifest and PATHS in separate calls")
    codes = []
    if manifest:
        codes.append(_check_manifest(manifest, fmt))
    if paths:
        run = verify_paths(paths, expect=expect, rules=rules, include_head=include_head, count_stem=count_stem)
        for e in run.errors:
            fail_line(e.error)
        out = get_renderer(fmt)(run)
        if out:
            print_to_stdout(out)
        codes.append(run.exit_code)
    sys.exit(max(codes))


def _check_manifest(manifest: str, fmt: str) -> int:
    from ckpttool.manifest import check_manifest

    check = check_manifest(manifest)
    if fmt == "json":
        emit_json(check.to_dict())
    else:
        from ckpttool.report.manifest_text import render_manifest_check

        print_to_stdout(render_manifest_check(check))
    return 0 if check.passed else 1

"""`ckpttool verify PATH...`: verdicts with exit codes for CI."""

from __future__ import annotations

import sys

import click

from ckpttool.cli._output import emit_json, fail_line, hint, print_to_stdout
from ckpttool.errors import InvalidArgumentError
from ckpttool.report import FORMATS, get_renderer
from ckpttool.report.escape import escape_text
from ckpttool.verify import verify_paths


@click.command("verify")
@click.argument("paths", nargs=-1, type=click.Path(path_type=str))  # files, folders, or hf://ORG/REPO[@REV][/FILE]
@click.option(
    "--expect",
    type=click.Choice(["auto", "pretrained", "random", "any"]),
    default="auto",
    show_default=True,
    help="auto: a name containing 'pretrained' must be pretrained, 'random' must be random, else any. "
         "An inconclusive verdict (too small to tell) meets neither pretrained nor random, only any.",
)
@click.option("--rule", "rules", multiple=True, metavar="TENSOR:STAT>VALUE", help="Extra rule, reported and enforced (repeatable).")
@click.option("--include-head", is_flag=True, help="Count the classifier head in the verdict.")
@click.option("--count-stem", is_flag=True,
              help="Let an untouched-looking input layer (stem, patch_embed) make a checkpoint partial.")
@click.option("--manifest", "manifest", type=click.Path(dir_okay=False), help="Check files against a MANIFEST.json.")
@click.option("--lfs-oids", is_flag=True,
              help="With --manifest: check a listed file that is a Git LFS pointer by its oid and size, "
                   "without the content (its verdict is not checked).")
@click.option("--no-hashes", is_flag=True,
              help="Skip the file's sha256 and the weights digest (reported as null): the same checks, "
                   "for screening many or large files quickly. Not with --manifest.")
@click.option("--remote", is_flag=True,
              help="For hf:// paths: judge the model's safetensors in place by HTTP range requests (headers, "
                   "then only the bytes the statistics need) without downloading it. NaN/Inf are checked only "
                   "in the bytes read (the report says how many); no sha256 or weights digest.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
              help="text, json, junit (JUnit XML), github (workflow annotations) or sarif (SARIF 2.1.0).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), metavar="FILE.png",
              help="For one checkpoint: write a PNG of its groups coloured by the verdict (needs the torch extra).")
def command(paths: tuple[str, ...], expect: str, rules: tuple[str, ...], include_head: bool, count_stem: bool,
            manifest: str | None, lfs_oids: bool, no_hashes: bool, remote: bool, fmt: str,
            plot_path: str | None) -> None:
    """Verdict pretrained / random / partial / corrupt for each checkpoint under PATHS.

    A PATH may be a hub file, hf://ORG/REPO[@REVISION]/FILE, or a hub repo, hf://ORG/REPO[@REVISION]
    (its weights as transformers finds them: model.safetensors.index.json with every shard, else
    model.safetensors, then the pytorch_model.bin pair): downloaded into the Hugging Face cache first
    (HF_HUB_OFFLINE=1 reads the cache only) and reported with its repo, commit and sha256s.

    A shard index (model.safetensors.index.json, pytorch_model.bin.index.json), or a folder holding
    one, is one model judged across all its shards.

    Exit 0: every file passed; 1: a verdict or rule did not meet the expectation;
    2: a file could not be read or was refused as unsafe, or the arguments were wrong.
    """
    if not paths and not manifest:
        raise InvalidArgumentError("give at least one PATH or --manifest FILE (see 'ckpttool verify --help')")
    if manifest and paths and fmt != "text":
        raise InvalidArgumentError(f"--format {fmt} prints one document: run --manifest and PATHS in separate calls")
    if no_hashes and manifest:
        raise InvalidArgumentError("--manifest checks files by their sha256; drop --no-hashes")
    if lfs_oids and not manifest:
        raise InvalidArgumentError("--lfs-oids checks pointers against a manifest; add --manifest FILE")
    if plot_path and not paths:
        raise InvalidArgumentError("--plot draws one checkpoint given as PATH; add it")
    if remote:
        _check_remote_paths(paths, manifest, plot_path)
    codes = []
    if manifest:
        codes.append(_check_manifest(manifest, fmt, lfs_oids))
    if paths and remote:
        codes.append(_verify_remote(paths, fmt, expect=expect, rules=rules, include_head=include_head,
                                    count_stem=count_stem))
    elif paths:
        paths, hub = _fetch_hub_paths(paths)
        if plot_path:
            _check_one_file(paths)
        run = verify_paths(paths, expect=expect, rules=rules, include_head=include_head, count_stem=count_stem,
                           hashes=not no_hashes)
        for e in run.errors:
            fail_line(e.error)
        out = _with_hub_sources(get_renderer(fmt)(run), fmt, hub)
        if out:
            print_to_stdout(out)
        if plot_path and run.files:
            from ckpttool.plot import save_verdict_plot

            f = run.files[0]
            save_verdict_plot(f.stats, f.verdict, plot_path, title=f.path.name)
            click.echo(f"plot written to {escape_text(plot_path)}", err=True)
        codes.append(run.exit_code)
    sys.exit(max(codes))


def _check_remote_paths(paths: tuple[str, ...], manifest: str | None, plot_path: str | None) -> None:
    from ckpttool.hub_paths import is_hub_path

    if manifest or plot_path:
        raise InvalidArgumentError("--remote reads hub models in place; it takes neither --manifest nor --plot")
    local = [p for p in paths if not is_hub_path(p)]
    if local or not paths:
        raise InvalidArgumentError(f"--remote reads hf://ORG/REPO[@REV][/FILE] paths only, not {local[0] if local else 'none'}"
                                   "; drop --remote for local files")


def _verify_remote(paths: tuple[str, ...], fmt: str, **options) -> int:
    """Judge each hub model in place; the report as for downloaded files, plus what was read."""
    import json

    from ckpttool.remote import verify_remote
    from ckpttool.verify import VerifyRun

    reports, read = [], {}
    for p in paths:
        report, got = verify_remote(p, **options)
        reports.append(report)
        read[str(report.path)] = got
    run = VerifyRun(tuple(reports), ())
    out = get_renderer(fmt)(run)
    if fmt == "json":
        doc = json.loads(out)
        for f in doc["files"]:
            f["remote"] = read[f["path"]].to_dict()
        out = json.dumps(doc, indent=2)
    else:
        lines = [escape_text(
            f"{uri}: repo {got.repo_id}, commit {got.commit}, read in place: {got.bytes_read:,} of {got.bytes_total:,} "
            f"bytes ({got.bytes_read / max(1, got.bytes_total):.1%}) of {len(got.files)} file(s); NaN/Inf checked "
            f"only in the bytes read ({got.nonfinite_read} found)") for uri, got in read.items()]
        if fmt == "text":
            out = "\n".join(lines) + "\n" + out
        else:
            for line in lines:
                click.echo(line, err=True)
    print_to_stdout(out)
    return run.exit_code


def _check_one_file(paths: tuple[str, ...]) -> None:
    """--plot draws one file: refuse before reading anything when PATHS hold more or fewer."""
    from ckpttool.loading import find_checkpoints

    found = [f for p in paths for f in find_checkpoints(p)]
    if len(found) != 1:
        raise InvalidArgumentError(f"--plot draws one checkpoint, and PATHS hold {len(found)}; pass one file")


def _check_manifest(manifest: str, fmt: str, lfs_oids: bool) -> int:
    from ckpttool.manifest import check_manifest

    check = check_manifest(manifest, lfs_oids=lfs_oids)
    if check.lfs_pointers and not lfs_oids:
        hint(f"{len(check.lfs_pointers)} listed file(s) are Git LFS pointers without their content; fetch it, "
             "or add --lfs-oids to check each pointer's oid against the manifest without the content")
    if fmt == "json":
        emit_json(check.to_dict())
    else:
        from ckpttool.report.manifest_text import render_manifest_check

        print_to_stdout(render_manifest_check(check))
    return 0 if check.passed else 1


def _fetch_hub_paths(paths: tuple[str, ...]) -> tuple[tuple[str, ...], dict]:
    """Download hf:// paths (torch-free); returns the local paths and {local path: (uri, HubWeights)}."""
    from ckpttool.hub_paths import is_hub_path, resolve_hub_path

    hub, local = {}, []
    for p in paths:
        if is_hub_path(p):
            got = resolve_hub_path(p)
            hub[str(got.path)] = (p, got)
            p = str(got.path)
        local.append(p)
    return tuple(local), hub


def _with_hub_sources(out: str, fmt: str, hub: dict) -> str:
    """Name each downloaded file's repo, resolved commit and sha256 in the report."""
    if not hub:
        return out
    if fmt == "json":
        import json

        doc = json.loads(out)
        for f in doc.get("files", []) + doc.get("errors", []):
            if f.get("path") in hub:
                uri, got = hub[f["path"]]
                f["hub"] = {"uri": uri, **got.to_dict()}
        return json.dumps(doc, indent=2)
    from ckpttool.report.escape import escape_text

    lines = [escape_text(f"{uri}: repo {got.repo_id}, commit {got.commit}, "
                         + (f"{got.filename} sha256 {got.sha256} with {len(got.shards)} shards"
                            if got.shards else f"sha256 {got.sha256}") + f" (cached at {path})")
             for path, (uri, got) in hub.items()]
    if fmt != "text":  # junit / github: keep their document intact, name the sources on stderr
        for line in lines:
            click.echo(line, err=True)
        return out
    return "\n".join(lines) + "\n" + out

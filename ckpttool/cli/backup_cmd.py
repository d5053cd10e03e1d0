"""`ckpttool backup PATH...` and `ckpttool backup list`.

`backup` is a group whose default subcommand takes paths, so both spellings work. A file literally
named ``list`` is backed up with ``ckpttool backup ./list``.
"""

from __future__ import annotations

from pathlib import Path

import click

from ckpttool.cli._options import format_option
from ckpttool.cli._output import emit_json, is_json, stdout_console
from ckpttool.errors import InvalidArgumentError
from ckpttool.report.escape import escape_text, plain_text

_DEFAULT = "_paths"


class _DefaultGroup(click.Group):
    """A group that runs its hidden default subcommand when the first word is not a subcommand."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = [_DEFAULT, *args]
        return super().parse_args(ctx, args)


@click.group("backup", cls=_DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
def command():
    """Back up init files into backup_old/ (content-addressed, never overwriting), or list backups.

    \b
    ckpttool backup PATH... [--reason TEXT] [--move] [--root DIR]
    ckpttool backup list [--root DIR] [--format json]

    The backup folder is ROOT/backup_old, ROOT defaulting to each file's own folder. A shard index
    (model.safetensors.index.json) is backed up with every shard it names, as one record; a folder
    backs up every model in it.
    """


@command.command(_DEFAULT, hidden=True)
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--reason", default="", help="Why, stored in the record.")
@click.option("--move", is_flag=True, help="Remove the original once the stored copy is verified.")
@click.option("--root", type=click.Path(path_type=Path, file_okay=False),
              help="Folder holding backup_old/ (default: each file's folder).")
@format_option
def _backup_paths(paths, reason, move, root, fmt):
    from ckpttool.backup import backup_file
    from ckpttool.loading import find_checkpoints

    # a folder: every model in it (a sharded model once, as its index with its shards)
    files = dict.fromkeys(f for p in paths for f in (find_checkpoints(p) if p.is_dir() else [p]))
    records = [backup_file(f, reason=reason, move=move, root=root) for f in files]
    if is_json(fmt):
        emit_json({"backups": [r.to_dict() for r in records]})
        return
    con = stdout_console()
    for r in records:  # paths and ids as plain text: '[/]' in a file name is not markup
        action = "moved" if r.moved else "copied"
        con.print(escape_text(f"{action} {r.original_path} -> {r.backup_dir / r.object_path}"), markup=False)
        con.print(escape_text(f"  id {r.id}  sha256 {r.sha256}  verdict {r.verdict}"), markup=False)
        if r.parts:
            con.print(escape_text(f"  sharded model: {len(r.parts)} shards backed up with it: "
                                  + ", ".join(p.name for p in r.parts)), markup=False)


@command.command("list")
@click.option("--root", type=click.Path(path_type=Path, file_okay=False), default=Path("init_model"),
              show_default=True, help="Folder holding backup_old/.")
@format_option
def _list(root, fmt):
    """List the backups recorded under ROOT/backup_old, oldest first."""
    from rich.table import Table

    from ckpttool.backup import list_backups, resolve_backup_dir

    backup_dir = resolve_backup_dir(root=root)
    if not backup_dir.is_dir():
        raise InvalidArgumentError(f"no backup folder {backup_dir}; pass --root DIR (the folder holding backup_old/)")
    records = list_backups(backup_dir)
    if is_json(fmt):
        emit_json({"backup_dir": str(backup_dir), "backups": [r.to_dict() for r in records]})
        return
    table = Table(title=plain_text(f"backups in {backup_dir}"), title_justify="left")
    for col in ("id", "original", "verdict", "size", "reason", "utc"):
        table.add_column(col)
    for r in records:  # every cell plain text: a --reason of '[/]' must not break the listing for good
        table.add_row(*(plain_text(v) for v in (r.id, r.original_path, r.verdict, r.size, r.reason, r.created_utc)))
    stdout_console().print(table)

"""`ckpttool restore ID_OR_PATH [--to PATH]`: put a backup back, atomically."""

from __future__ import annotations

from pathlib import Path

import click

from ckpttool.cli._options import format_option
from ckpttool.cli._output import emit_json, is_json, stdout_console
from ckpttool.report.escape import escape_text


@click.command("restore")
@click.argument("id_or_path")
@click.option("--to", type=click.Path(path_type=Path, dir_okay=False),
              help="Where to write (default: the path it was backed up from, which must lie below ROOT).")
@click.option("--root", type=click.Path(path_type=Path, file_okay=False), default=Path("init_model"),
              show_default=True, help="Folder holding backup_old/ (when ID_OR_PATH is an id).")
@format_option
def command(id_or_path, to, root, fmt):
    """Restore a backup by id (or unique prefix) or by its path inside backup_old/.

    Without --to, the recorded path must lie below ROOT (the folder holding backup_old/).
    The stored copy's sha256 is checked first; whatever the restore replaces is backed up
    ("replaced by restore"); the file is written to a temp file and renamed into place, so a
    process that already opened the old file keeps reading it.
    """
    from ckpttool.backup import restore_backup

    result = restore_backup(id_or_path, to=to, root=root)
    if is_json(fmt):
        emit_json(result.to_dict())
        return
    con = stdout_console()

    def say(text: str) -> None:  # plain text, escaped: ids and paths come from a manifest
        con.print(escape_text(text), markup=False)

    if result.unchanged:
        say(f"{result.target} already holds backup {result.record.id} (sha256 {result.record.sha256}); nothing to do")
        return
    if result.replaced is not None:
        say(f"backed up the replaced file as {result.replaced.id}")
    for r in result.replaced_shards:
        say(f"backed up the replaced shard {r.original_path} as {r.id}")
    say(f"restored {result.record.id} -> {result.target}  sha256 {result.record.sha256}")
    if result.record.parts:
        say(f"  with its {len(result.record.parts)} shards beside it: " + ", ".join(p.name for p in result.record.parts))

"""Human text for `verify` and `inspect`, through rich. Returns strings so every renderer has one shape.

Every fragment that came from a file (paths, tensor and key names, reasons, rule messages) goes
through :mod:`ckpttool.report.escape`: control characters are shown as escapes, and inside markup
strings ``[`` is escaped too, so a name like ``[/]`` or ``[bold]`` prints literally.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence

from ckpttool.report.escape import escape_markup, escape_text, plain_text
from ckpttool.verdict.stats import TensorStats
from ckpttool.verify import FileReport, VerifyRun

_VERDICT_STYLE = {"pretrained": "green", "random": "yellow", "partial": "magenta", "inconclusive": "cyan",
                  "corrupt": "red"}


def _console(buf: io.StringIO):
    from rich.console import Console

    # emoji off: ':cross_mark:' in a file name stays text
    return Console(file=buf, force_terminal=sys.stdout.isatty(), width=120, highlight=False, soft_wrap=True,
                   emoji=False)


def render_text(run: VerifyRun) -> str:
    buf = io.StringIO()
    con = _console(buf)
    for f in run.files:
        _render_file(con, f)
    n_pass = sum(f.passed for f in run.files)
    con.print(
        f"{n_pass}/{len(run.files)} passed"
        + (f", {len(run.errors)} unreadable" if run.errors else "")
        + (" [green]OK[/]" if run.passed else " [red]FAILED[/]")
    )
    return buf.getvalue().rstrip("\n")


def _render_file(con, f: FileReport) -> None:
    v = f.verdict
    mark = "[green]PASS[/]" if f.passed else "[red]FAIL[/]"
    style = _VERDICT_STYLE.get(v.verdict, "white")
    con.print(f"{mark} [bold]{escape_markup(f.path)}[/]  [{style}]{escape_markup(v.verdict)}[/] "
              f"(expected {escape_markup(f.expected)})", markup=True)

    def line(text: str) -> None:  # a detail line: plain text, escaped as a whole
        con.print(f"     {escape_text(text)}", markup=False)

    line(f"{v.tensors_trained} trained, {v.tensors_init_like} init-like, "
         f"{v.tensors_init_constant} init-constant of {v.tensors_total} tensors"
         f"{'' if v.head_included else ' (head excluded)'}; " + (f"sha256 {f.sha256[:16]}…" if f.sha256 else "not hashed"))
    line(v.reason)
    for note in sharding_notes(f):
        line(note)
    if v.untouched_groups:
        line(f"untouched: {', '.join(v.untouched_groups)}")
    for name, why in v.untouched_tensors:  # the tensors that show it, where the group alone would not
        line(f"  at init: {name} ({why})")
    if v.uncounted_groups:
        line(f"input layer looks untouched (not counted; --count-stem counts it): {', '.join(v.uncounted_groups)}")
    if v.inconclusive_groups:
        line(f"too small to tell (no sign of training, not counted): {', '.join(v.inconclusive_groups)}")
    if v.head:
        line("head: " + ", ".join(f"{h.name} ({h.status})" for h in v.head))
    for name, other in f.other_weight_sets:  # EMA copies...: judged too, a consumer may load them
        line(f"weight set '{name}': {other.verdict}; {other.reason}")
    if f.wrapper or f.non_tensor_keys:
        extra = []
        if f.wrapper:
            extra.append(f"unwrapped '{f.wrapper}'")
        if f.non_tensor_keys:
            extra.append(f"non-tensor entries: {', '.join(f.non_tensor_keys[:8])}")
        line("; ".join(extra))
    for r in f.rules:
        con.print(f"     rule {'[green]ok[/]' if r.passed else '[red]FAILED[/]'}: ", end="")
        con.print(escape_text(r.message), markup=False)


def sharding_notes(f: FileReport) -> list[str]:
    """What a report says about shards: a sharded model's shard files, or a file outside a model's index."""
    notes = []
    if f.shards:
        names = ", ".join(sh.path.name for sh in f.shards)
        notes.append(f"sharded model: {len(f.shards)} shards ({names}); the sha256 is the index file's")
    if f.not_in_index:
        names = ", ".join(p.name for p in f.not_in_index)
        notes.append(f"not part of the indexed model ({names}): judged on its own")
    return notes


def _num(v: float | None, fmt: str = ".4g") -> str:
    return "-" if v is None else format(v, fmt)


def render_tensor_table(tensors: Sequence[TensorStats], *, title: str = "") -> str:
    """The `inspect` table."""
    from rich.table import Table

    table = Table(title=plain_text(title) if title else None, show_lines=False, header_style="bold")
    for col, just in (
        ("name", "left"), ("shape", "left"), ("dtype", "left"), ("mean", "right"), ("std", "right"),
        ("min", "right"), ("max", "right"), ("kurt", "right"), ("zeros", "right"), ("nonfin", "right"),
        ("spec.ratio", "right"), ("status", "left"),
    ):  # fmt: skip
        table.add_column(col, justify=just, no_wrap=col != "name")
    styles = {"trained": "green", "init-like": "yellow", "init-constant": "cyan", "nonfinite": "red"}
    for t in tensors:
        approx = "~" if t.sampled is not None else ""  # from a fixed sample (the footnote says which)
        table.add_row(
            plain_text(t.name),
            "x".join(map(str, t.shape)) or "scalar",
            plain_text(t.dtype),
            approx + _num(t.mean),
            approx + _num(t.std),
            _num(t.min),
            _num(t.max),
            approx + _num(t.kurtosis, ".3g"),
            _num(t.zero_fraction, ".2f"),
            str(t.nonfinite),
            _num(t.spectral_ratio, ".3f"),
            f"[{styles.get(t.status, 'white')}]{escape_markup(t.status)}[/]",
        )
    buf = io.StringIO()
    con = _console(buf)
    con.width = 160
    con.print(table)
    sampled = [t.sampled for t in tensors if t.sampled is not None]
    if sampled:
        size = f"{min(sampled):,}" + (f"-{max(sampled):,}" if max(sampled) != min(sampled) else "")
        con.print(f"~ sampled: mean, std and kurtosis of {len(sampled)} large tensor(s) come from fixed samples "
                  f"of {size} entries; min, max, zeros and NaN/Inf count every entry", markup=False)
    return buf.getvalue().rstrip("\n")

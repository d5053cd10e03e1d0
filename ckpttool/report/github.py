"""GitHub Actions workflow commands: an ::error/::warning/::notice annotation per file (a warning
when a file passed with an input layer or small groups that show no training, reported but not
counted, or when it sits beside a shard index that does not name it)."""

from __future__ import annotations

from ckpttool.report.escape import escape_text
from ckpttool.report.text import sharding_notes
from ckpttool.verify import VerifyRun


def _data(s: str) -> str:
    # control characters first (no raw CR/LF can remain), then workflow-command escaping as GitHub
    # documents it: messages escape %, CR, LF ...
    return escape_text(s).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(s: str) -> str:
    # ... and property values (file=, title=) also ':' and ','
    return _data(s).replace(":", "%3A").replace(",", "%2C")


def render_github(run: VerifyRun) -> str:
    lines = []
    for f in run.files:
        v = f.verdict
        level = ("error" if not f.passed else "warning"
                 if v.uncounted_groups or v.inconclusive_groups or f.not_in_index else "notice")
        title = f"ckpttool verify: {f.verdict.verdict}"
        msg = f.verdict.reason if f.passed else f"{f.failure_reason}. {f.verdict.reason}"
        msg = " ".join([msg, *(f"{note}." for note in sharding_notes(f))])
        lines.append(f"::{level} file={_prop(str(f.path))},title={_prop(title)}::{_data(msg)}")
    for e in run.errors:
        lines.append(f"::error file={_prop(str(e.path))},title={_prop('ckpttool verify: unreadable')}::{_data(e.error)}")
    return "\n".join(lines)

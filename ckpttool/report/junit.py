"""JUnit XML: one testcase per file, so CI systems show each checkpoint as a test.

Every attribute and text from a file is escaped first: ElementTree escapes ``<&"`` but writes the
control characters XML 1.0 forbids as they are, which makes the whole report unreadable.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ckpttool.report.escape import escape_text as _x
from ckpttool.report.text import sharding_notes
from ckpttool.verify import VerifyRun


def render_junit(run: VerifyRun) -> str:
    failures = sum(1 for f in run.files if not f.passed)
    suite = ET.Element(
        "testsuite",
        name="ckpttool.verify",
        tests=str(len(run.files) + len(run.errors)),
        failures=str(failures),
        errors=str(len(run.errors)),
    )
    for f in run.files:
        case = ET.SubElement(suite, "testcase", classname="ckpttool.verify", name=_x(f.path))
        if not f.passed:
            node = ET.SubElement(case, "failure", message=_x(f.failure_reason or "failed"), type=_x(f.verdict.verdict))
            node.text = _x(f.verdict.reason)
        ET.SubElement(case, "system-out").text = _x("\n".join([
            f"verdict={f.verdict.verdict} expected={f.expected} sha256={f.sha256 or 'not-hashed'}",
            *sharding_notes(f)]))
    for e in run.errors:
        case = ET.SubElement(suite, "testcase", classname="ckpttool.verify", name=_x(e.path))
        ET.SubElement(case, "error", message=_x(e.error), type=_x(e.kind))
    ET.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, encoding="unicode")

"""Hostile names and the check that every output format contains them safely.

Shared by ``tests/reliability/test_output_injection.py`` (hypothesis) and the ``names`` row of
``benchmarks/reliability_soak.py``. A name is put everywhere a file can put one -- the path, the
wrapper, a non-tensor key, an untouched group, the verdict's reason, a refusal message -- of a real
:class:`~ckpttool.verify.FileReport`, and every renderer and the stderr error line are checked.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

# What no rendered output may hold raw (LF only between records).
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                    "\ud800-\udfff\ufffe\uffff]")
FRAGMENTS = (
    "\n", "\r", "\r\n", "\x1b[2K", "\x1b[32mPASS\x1b[0m", "\x1b]8;;http://x\x07", "\x00", "\x07", "\x0c", "\x7f",
    "\x85", "\x9b", "\u202e", "\u2066", "\u200f", "\u2028", "\udcff", "\ufffe", "\uffff", "\t",
    "[/]", "[bold]", "[", "]", "\\", "[link=x]", ":cross_mark:", "::error file=x,line=1::forged", "::", "%", "%0A",
    ":", ",", "<", "&", '"', "]]>", "<!--", "é", "中", "🙂", " ",
)


def hostile_name(rng: random.Random, max_parts: int = 8) -> str:
    """A name of fragments that attack a format, random code points and plain text."""
    parts = []
    for _ in range(rng.randint(1, max_parts)):
        roll = rng.random()
        if roll < 0.6:
            parts.append(rng.choice(FRAGMENTS))
        elif roll < 0.8:
            parts.append(chr(rng.randrange(0, 0x110000)))
        else:
            parts.append("blocks.0.attn")
    return "".join(parts)


def with_name(report, name: str):
    """``report`` (a FileReport) and a FileError, both carrying ``name`` wherever a file can put one."""
    from ckpttool.verify import FileError, VerifyRun

    verdict = replace(report.verdict, reason=name, untouched_groups=(name,))
    bad = replace(report, path=Path(name), wrapper=name, non_tensor_keys=(name,), verdict=verdict,
                  expected="pretrained", passed=False)
    return VerifyRun((bad,), (FileError(Path(name), f"refused to load {name}: {name}", "UnsafeCheckpointError"),))


def output_problems(report, name: str) -> list[str]:
    """Every way the outputs for ``name`` are unsafe; [] when they are all safe."""
    from ckpttool.cli._output import fail_line
    from ckpttool.report import get_renderer
    from ckpttool.report.escape import escape_text

    run = with_name(report, name)
    problems = []
    outputs = {}
    for fmt in ("text", "github", "junit", "json"):
        try:
            outputs[fmt] = get_renderer(fmt)(run)
        except Exception as e:  # noqa: BLE001 - a renderer that crashes on a name is what we count
            return [f"{fmt}: {type(e).__name__}: {e}"]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        fail_line(run.errors[0].error)
    outputs["stderr"] = err.getvalue()
    for fmt, text in outputs.items():
        if fmt != "json" and (m := UNSAFE.search(text)):
            problems.append(f"{fmt}: raw {m.group()!r}")
    if outputs["stderr"].count("\n") != 1:
        problems.append("stderr: not one line")
    if len(outputs["github"].splitlines()) != 2 or not all(
            s.startswith(("::error ", "::warning ", "::notice ")) for s in outputs["github"].splitlines()):
        problems.append("github: not one workflow command per line")
    try:
        names = [c.get("name") for c in ET.fromstring(outputs["junit"]).iter("testcase")]
        if names != [escape_text(Path(name))] * 2:
            problems.append(f"junit: names {names!r}")
    except (ET.ParseError, UnicodeEncodeError) as e:
        problems.append(f"junit: not well-formed ({e})")
    doc = json.loads(outputs["json"])
    if doc["files"][0]["non_tensor_keys"] != [name] or doc["errors"][0]["path"] != str(Path(name)):
        problems.append("json: the raw name did not round-trip")
    if escape_text(Path(name)) not in outputs["text"]:
        problems.append("text: the escaped path is not shown as it is")
    return problems

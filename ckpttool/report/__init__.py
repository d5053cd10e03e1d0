"""Renderers for `verify` results, one per output format behind one interface: ``render(run) -> str``.

text (rich), json, junit (JUnit XML for CI test tabs), github (workflow annotations), sarif (SARIF
2.1.0 for code scanning).
"""

from __future__ import annotations

from collections.abc import Callable

from ckpttool.verify import VerifyRun

FORMATS = ("text", "json", "junit", "github", "sarif")


def get_renderer(fmt: str) -> Callable[[VerifyRun], str]:
    """The renderer for ``fmt``; each takes a VerifyRun and returns the text for stdout."""
    if fmt == "json":
        from ckpttool.report.json_format import render_json

        return render_json
    if fmt == "junit":
        from ckpttool.report.junit import render_junit

        return render_junit
    if fmt == "github":
        from ckpttool.report.github import render_github

        return render_github
    if fmt == "sarif":
        from ckpttool.report.sarif import render_sarif

        return render_sarif
    if fmt == "text":
        from ckpttool.report.text import render_text

        return render_text
    from ckpttool.errors import InvalidArgumentError

    raise InvalidArgumentError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")

"""The one escaping function for text that came from a file, applied by every renderer before output.

A tensor name, a dict key, a global's module name in a refusal message or a file name can hold any
character. Printed raw, a newline starts a new line that CI reads as a GitHub workflow command
(``::error ...``), ESC / CR sequences redraw a FAIL as a PASS on a terminal, bidi overrides reorder
what is shown, characters XML 1.0 forbids make a JUnit report unreadable, and lone surrogates (file
names that are not UTF-8) crash the write. :func:`escape_text` replaces each such character with a
visible escape (``\\n``, ``\\x1b``, ``\\u202e``), so the output keeps one line per record and shows the
name for what it is. The library keeps the raw strings; only output is escaped (JSON has its own
escaping and needs none).
"""

from __future__ import annotations

import re

# C0 controls, DEL and C1 controls; Unicode bidi marks, embeddings, overrides and isolates; the line
# and paragraph separators; lone surrogates; and the two non-characters XML 1.0 forbids.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufffe\uffff]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_text(text: object) -> str:
    """``str(text)`` with every control, bidi, separator, surrogate and XML-forbidden character
    replaced by a visible backslash escape; everything else (printable Unicode too) is unchanged.

    Example:
        >>> escape_text("blocks.0\\n::error::forged\\x1b[32m")
        'blocks.0\\\\n::error::forged\\\\x1b[32m'
    """
    return _UNSAFE.sub(_escape_char, str(text))


def escape_markup(text: object) -> str:
    """:func:`escape_text`, then rich's markup escape: for a fragment inside a rich markup string."""
    from rich.markup import escape

    return escape(escape_text(text))


def plain_text(text: object):
    """A rich ``Text`` of the escaped string: a table cell or title that is never read as markup."""
    from rich.text import Text

    return Text(escape_text(text))

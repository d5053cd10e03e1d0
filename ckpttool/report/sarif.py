"""SARIF 2.1.0 (the OASIS format GitHub code scanning and security dashboards read): one result per
file that failed, was refused as unsafe or could not be read; files that passed are not results.

Each result names its rule (below), level ``error``, a message with the evidence (verdict, what was
expected, the verdict's reason, or the one-line read error) and the file as its location. Text from
a file (tensor and group names, read errors quoting them) goes through the one escaping function,
as in every other format; the location is the path percent-encoded as a URI, relative to the
checkout (``%SRCROOT%``) when the path is relative, so code scanning ties it to the repository file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import quote

from ckpttool.report.escape import escape_text
from ckpttool.verify import FileError, FileReport, VerifyRun

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"

# rule id -> (name, short description, help); the order is the ruleIndex
RULES = {
    "verdict-mismatch": (
        "VerdictMismatch",
        "The checkpoint's verdict (or a --rule) does not meet what was expected",
        "The weights are not what the file's name or --expect says (e.g. a random or partial init named "
        "pretrained). Regenerate the file, or restore the right one from backup_old/.",
    ),
    "unsafe-pickle": (
        "UnsafePickle",
        "The checkpoint's pickle imports globals outside the allow-list; it was refused without running it",
        "Never load this file with torch.load(weights_only=False). Re-save the weights as safetensors or "
        "with torch.save(model.state_dict()).",
    ),
    "corrupt": (
        "CorruptCheckpoint",
        "The checkpoint holds NaN/Inf values, or its bytes are not a valid checkpoint (truncated, garbage)",
        "Regenerate the file or restore it from a backup.",
    ),
    "unreadable": (
        "UnreadableCheckpoint",
        "The checkpoint could not be read (a Git LFS pointer without its content, beyond a size limit, missing)",
        "Fetch the content (git lfs pull; actions/checkout with lfs: true) or check the path.",
    ),
}
_RULE_INDEX = {rule: i for i, rule in enumerate(RULES)}
# FileError.kind -> rule; anything else is "unreadable"
_ERROR_RULES = {"UnsafeCheckpointError": "unsafe-pickle", "CheckpointFormatError": "corrupt"}


def render_sarif(run: VerifyRun) -> str:
    """One SARIF 2.1.0 log (one run of the ``ckpttool`` tool) as a JSON string."""
    from ckpttool import __version__

    results = [_file_result(f) for f in run.files if not f.passed]
    results += [_error_result(e) for e in run.errors]
    rules = [
        {
            "id": rule,
            "name": name,
            "shortDescription": {"text": short},
            "fullDescription": {"text": short},
            "help": {"text": help_text},
            "defaultConfiguration": {"level": "error"},
            # code scanning ranks security alerts by this; a pickle that would run code is one
            "properties": {"tags": ["security"], "security-severity": "8.0"} if rule == "unsafe-pickle"
            else {"tags": ["correctness"]},
        }
        for rule, (name, short, help_text) in RULES.items()
    ]
    log = {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "ckpttool", "version": __version__, "semanticVersion": __version__,
                                "rules": rules}},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    }
    return json.dumps(log, indent=2, ensure_ascii=False)


def _file_result(f: FileReport) -> dict:
    v = f.verdict
    corrupt = v.verdict == "corrupt" or any(o.verdict == "corrupt" for _, o in f.other_weight_sets)
    message = f"{f.failure_reason}. {v.reason}"
    properties = {
        "verdict": v.verdict,
        "expected": f.expected,
        "sha256": f.sha256 or None,
        "untouchedGroups": [escape_text(g) for g in v.untouched_groups],
    }
    if f.shards:  # the location is the index; these are the files that hold the weights
        properties["shards"] = [{"path": escape_text(sh.path), "sha256": sh.sha256, "size": sh.size} for sh in f.shards]
    if f.not_in_index:
        properties["notInIndex"] = [escape_text(p) for p in f.not_in_index]
    return _result("corrupt" if corrupt else "verdict-mismatch", f.path, message, properties)


def _error_result(e: FileError) -> dict:
    return _result(_ERROR_RULES.get(e.kind, "unreadable"), e.path, e.error, {"error": e.kind})


def _result(rule: str, path: Path, message: str, properties: dict) -> dict:
    location = _artifact_location(Path(path))
    return {
        "ruleId": rule,
        "ruleIndex": _RULE_INDEX[rule],
        "level": "error",
        "message": {"text": escape_text(message)},
        # a checkpoint has no lines; code scanning shows a result only with a region (its GH1003), so
        # the file-level finding sits on line 1, as other scanners of binary artifacts do
        "locations": [{"physicalLocation": {"artifactLocation": location, "region": {"startLine": 1}}}],
        # one alert per file and rule across runs, whatever the message says this time
        "partialFingerprints": {"ckpttoolFileRule/v1": hashlib.sha256(
            f"{location['uri']}\0{rule}".encode()).hexdigest()[:32]},
        "properties": properties,
    }


def _artifact_location(path: Path) -> dict:
    """The file as a URI: percent-encoded (every control, bidi or non-ASCII character becomes %XX, so
    the URI shows the name for what it is and still names the real file); relative to the checkout
    (``%SRCROOT%``) when the path is relative, a ``file://`` URI when it is absolute."""
    try:
        uri = quote(path.as_posix(), safe="/", errors="surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte: the visible escape instead
        uri = quote(escape_text(path.as_posix()), safe="/")
    return {"uri": f"file://{uri}"} if path.is_absolute() else {"uri": uri, "uriBaseId": "%SRCROOT%"}

"""JSON: the machine-readable shape documented in the README."""

from __future__ import annotations

import json

from ckpttool.verify import VerifyRun


def render_json(run: VerifyRun) -> str:
    return json.dumps(run.to_dict(), indent=2)

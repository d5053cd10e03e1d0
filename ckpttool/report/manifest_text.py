"""Human text for `verify --manifest`: a sorted diff, one line per finding (names escaped)."""

from __future__ import annotations

from ckpttool.manifest import ManifestCheck
from ckpttool.report.escape import escape_text


def render_manifest_check(check: ManifestCheck) -> str:
    lines = [f"manifest {check.manifest}: {len(check.checked)} file(s) checked"]
    lines += [f"  missing            {p}" for p in check.missing]
    for m in check.sha256_mismatches:
        lines.append(f"  sha256 mismatch    {m.path}: expected {m.expected[:16]}…, found {m.actual[:16]}…{m.actual[64:]}")
    for m in check.verdict_mismatches:
        lines.append(f"  verdict mismatch   {m.path}: expected {m.expected}, found {m.actual} ({m.reason})")
    if check.lfs_oids_checked:
        lines += [f"  lfs pointer        {p}: checked by its oid (content not fetched, verdict not checked)"
                  for p in check.lfs_pointers]
    lines += [f"  shard not pinned   {p}: its model's index is listed, this shard is not" for p in check.unpinned_shards]
    lines += [f"  unlisted (warning) {p}" for p in check.unlisted]
    lines.append("manifest OK" if check.passed else "manifest FAILED")
    return "\n".join(escape_text(line) for line in lines)

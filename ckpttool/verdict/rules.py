"""User rules such as the old guard ``blocks.0.attn.qkv.weight:std>0.05``.

A rule is reported and can fail a check, but it never replaces the verdict: the old guard was wrong
both ways (see design.md), so it stays available only as something a user asks for by name.
"""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ckpttool.errors import InvalidArgumentError
from ckpttool.verdict.stats import NUMERIC_FIELDS

RULE_STATS = NUMERIC_FIELDS  # the TensorStats fields a rule may test
_OPS = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
_RULE_RE = re.compile(
    r"^(?P<tensor>[^:]+):(?P<stat>[a-z_]+)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<value>[-+0-9.eE]+|nan|inf)$"
)


@dataclass(frozen=True)
class Rule:
    """A parsed rule: every tensor matching ``tensor`` (a name or glob) must satisfy ``stat op value``."""

    text: str
    tensor: str
    stat: str
    op: str
    value: float


@dataclass(frozen=True)
class RuleResult:
    """The outcome of one rule on one file."""

    rule: str
    passed: bool
    tensors: tuple[str, ...]  # the tensors the rule matched
    actual: tuple[float | None, ...]  # the statistic per matched tensor
    message: str

    def to_dict(self) -> dict:
        return {
            "rule": self.rule,
            "passed": self.passed,
            "tensors": list(self.tensors),
            "actual": list(self.actual),
            "message": self.message,
        }


def parse_rule(text: str) -> Rule:
    """Parse ``TENSOR:STAT OP VALUE``.

    Example:
        >>> parse_rule("blocks.0.attn.qkv.weight:std>0.05").stat
        'std'
    """
    m = _RULE_RE.match(text.strip())
    if not m:
        raise InvalidArgumentError(
            f"cannot parse rule {text!r}: expected TENSOR:STAT OP VALUE, e.g. 'blocks.0.attn.qkv.weight:std>0.05'"
        )
    stat = m["stat"]
    if stat not in RULE_STATS:
        raise InvalidArgumentError(
            f"rule {text!r}: unknown statistic {stat!r}; choose one of {', '.join(RULE_STATS)}"
        )
    return Rule(text=text.strip(), tensor=m["tensor"], stat=stat, op=m["op"], value=float(m["value"]))


def evaluate_rule(rule: Rule, stats: Sequence) -> RuleResult:
    """Evaluate ``rule`` over a checkpoint's TensorStats. No matching tensor fails the rule."""
    matched = [s for s in stats if s.name == rule.tensor or fnmatch.fnmatchcase(s.name, rule.tensor)]
    if not matched:
        return RuleResult(rule.text, False, (), (), f"no tensor matches {rule.tensor!r}")
    cmp = _OPS[rule.op]
    actual = tuple(getattr(s, rule.stat) for s in matched)
    failing = [s.name for s, v in zip(matched, actual, strict=True) if v is None or not cmp(v, rule.value)]
    if failing:
        shown = ", ".join(f"{s.name}={_fmt(v)}" for s, v in zip(matched, actual, strict=True) if s.name in failing[:3])
        more = f" and {len(failing) - 3} more" if len(failing) > 3 else ""
        msg = f"{rule.text}: failed for {shown}{more}"
    else:
        msg = f"{rule.text}: holds ({', '.join(_fmt(v) for v in actual[:3])}{'...' if len(actual) > 3 else ''})"
    return RuleResult(rule.text, not failing, tuple(s.name for s in matched), actual, msg)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.6g}"

"""Redaction (SPEC §6.3, §6.5): secrets and token-like text replaced by ``[REDACTED]``.

:func:`redact` is applied to everything an agent prints and to every log line the bot keeps.
:data:`SECRET_RULES` (one :class:`SecretRule` per kind of secret) is the table redaction
shares with the pre-push secret scan (:mod:`bot.worker.guard`), which refuses a push that
adds a secret; this module holds the table so that code outside the worker (the agent
subprocess runner) can redact without importing the worker. Standard library only.

A token starts at a word boundary, or right after an escape sequence (``\\n``, ``\\u0022``,
``%3D``…): agents print JSON and URL-encoded text, where the letter or digit before a token
belongs to the escape. GitHub's installation tokens come in two formats, the old opaque one
(``ghs_`` and 36 letters and digits) and the stateless one (``ghs_<app id>_<JWT>``, some 520
characters with two dots); both are matched, and redacted, whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["REDACTED", "SECRET_RULES", "TOKEN_START", "SecretRule", "redact", "starts_token"]

REDACTED = "[REDACTED]"


@dataclass(frozen=True, slots=True)
class SecretRule:
    """One kind of secret: ``regex`` finds it; group ``group`` is the secret value, and
    ``public_prefix`` matches the non-secret start of that value (shown in messages).

    ``fast`` is ``regex`` without its leading word-boundary check, which would keep the regex
    engine from jumping to the rule's literal prefix: scanning searches with ``fast`` and
    checks the boundary itself. ``requires``: literals one of which a text must contain for
    the rule to be tried at all."""

    rule: str
    label: str
    regex: re.Pattern[str]
    group: int = 0
    public_prefix: re.Pattern[str] | None = None
    fast: re.Pattern[str] | None = None
    requires: tuple[str, ...] = ()


#: Where a token may start although a letter or digit comes right before it: after an escape
#: sequence (``\\n``, ``\\t``, ``\\u0022``, ``\\x22`` in JSON or code) or a percent escape
#: (``%20``, ``%3D`` in URL-encoded text). The letter or digit is the escape's, not a word the
#: token belongs to.
_AFTER_ESCAPE = (
    r"(?<=\\[A-Za-z])|(?<=\\x[0-9A-Fa-f]{2})|(?<=\\u[0-9A-Fa-f]{4})|(?<=%[0-9A-Fa-f]{2})"
)
#: A token starts at a word boundary or right after an escape sequence.
TOKEN_START = r"(?:(?<![A-Za-z0-9_])|" + _AFTER_ESCAPE + ")"
_WORD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_ESCAPE_BEFORE = re.compile(r"(?:\\[A-Za-z]|\\x[0-9A-Fa-f]{2}|\\u[0-9A-Fa-f]{4}|%[0-9A-Fa-f]{2})\Z")


def starts_token(text: str, pos: int) -> bool:
    """Whether a token may start at ``pos`` of ``text`` (:data:`TOKEN_START` as a function)."""
    if pos == 0 or text[pos - 1] not in _WORD_CHARS:
        return True
    return _ESCAPE_BEFORE.search(text, max(0, pos - 6), pos) is not None


def _rule(
    rule: str,
    label: str,
    pattern: str,
    group: int = 0,
    public_prefix: str | None = None,
    *,
    boundary: bool = True,
    requires: tuple[str, ...] = (),
) -> SecretRule:
    """A rule whose ``pattern`` must start at a word boundary or after an escape sequence
    (:data:`TOKEN_START`; unless ``boundary`` is off)."""
    prefix = re.compile(public_prefix) if public_prefix else None
    if not boundary:
        return SecretRule(rule, label, re.compile(pattern), group, prefix, None, requires)
    return SecretRule(
        rule, label, re.compile(TOKEN_START + pattern), group, prefix, re.compile(pattern), requires
    )


SECRET_RULES: tuple[SecretRule, ...] = (
    _rule(
        "private_key",
        "a private key",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
        boundary=False,
    ),
    # Installation tokens, old (ghs_ + 36) and stateless (ghs_<app id>_<JWT>, ~520 characters
    # with dots; GitHub's recommended pattern is ghs_[A-Za-z0-9._]{36,}). Before the generic
    # rule, so that redaction takes the whole token, not its part up to the first dot.
    _rule(
        "github_token",
        "a GitHub token",
        r"(ghs_(?=[A-Za-z0-9._-]*[0-9])[A-Za-z0-9._-]{35,}[A-Za-z0-9_-])",
        1,
        r"ghs_",
    ),
    _rule("github_token", "a GitHub token", r"(gh[pousr]_[A-Za-z0-9]{36,255})\b", 1, r"gh[pousr]_"),
    _rule(
        "github_token",
        "a GitHub fine-grained token",
        r"(github_pat_[A-Za-z0-9_]{22,255})",
        1,
        r"github_pat_",
    ),
    _rule("aws_access_key", "an AWS access key id", r"((?:AKIA|ASIA)[A-Z0-9]{16})\b", 1, r"AKIA|ASIA"),
    _rule(
        "aws_secret_key",
        "an AWS secret access key",
        r"(?i)aws_?secret(?:_?access)?_?key[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])",
        1,
        boundary=False,
        requires=("ecret", "ECRET"),
    ),
    _rule(
        "anthropic_key",
        "an Anthropic API key",
        r"(sk-ant-[A-Za-z0-9_\-]{20,})",
        1,
        r"sk-ant-(?:api\d\d-|admin\d\d-)?",
    ),
    _rule(
        "openai_key",
        "an OpenAI API key",
        r"(sk-(?!ant-)(?=[A-Za-z0-9_\-]*[0-9])(?=[A-Za-z0-9_\-]*[A-Za-z])[A-Za-z0-9_\-]{20,})",
        1,
        r"sk-(?:proj-|svcacct-|admin-)?",
    ),
    _rule("slack_token", "a Slack token", r"(xox[abpr]-[A-Za-z0-9\-]{10,})", 1, r"xox[abpr]-"),
    _rule(
        "google_api_key",
        "a Google API key",
        r"(AIza[0-9A-Za-z_\-]{35})(?![0-9A-Za-z_\-])",
        1,
        r"AIza",
    ),
)


def redact(text: str, secrets: Iterable[str] = (), *, patterns: bool = True) -> str:
    """``text`` with each of ``secrets`` (and, with ``patterns``, anything that looks like a
    token by :data:`SECRET_RULES`) replaced by ``[REDACTED]``."""
    values = sorted({s for s in secrets if s and s.strip()}, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, REDACTED)
    if patterns:
        for rule in SECRET_RULES:
            if rule.rule == "private_key":
                continue
            if rule.requires and not any(literal in text for literal in rule.requires):
                continue
            text = _redact_rule(rule, text)
    return text


def _redact_rule(rule: SecretRule, text: str) -> str:
    """``text`` with every match of ``rule`` redacted. A rule with a ``fast`` regex is searched
    with it (the engine can then jump to the rule's literal prefix) and each match's start is
    checked with :func:`starts_token`: the same matches as ``rule.regex``, much faster."""
    if rule.fast is None:
        return rule.regex.sub(lambda m: _redact_group(m, rule.group), text)
    out: list[str] = []
    done = pos = 0
    while True:
        match = rule.fast.search(text, pos)
        if match is None:
            break
        start = match.start()
        if not starts_token(text, start):
            pos = start + 1
            continue
        out.append(text[done:start])
        out.append(_redact_group(match, rule.group))
        done = pos = max(match.end(), start + 1)
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)


def _redact_group(match: re.Match[str], group: int) -> str:
    whole = match.group(0)
    if group == 0:
        return REDACTED
    start, end = match.span(group)
    offset = match.start(0)
    return whole[: start - offset] + REDACTED + whole[end - offset :]

"""Pre-push checks (SPEC §6.5): protected paths and secrets in what the agent changed.

Pure functions over the diff the worker computes. A non-empty list of violations means the
attempt fails with a clear message and nothing is pushed. Messages never contain a secret:
only a short redacted prefix of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

DEFAULT_PROTECTED: tuple[str, ...] = (".github/workflows/**",)

REDACTED = "[REDACTED]"


@dataclass(frozen=True, slots=True)
class ChangedFile:
    """One file in the diff: its path, git status letter and the text it adds.

    ``status`` is git's letter (``A`` added, ``M`` modified, ``D`` deleted, ``R`` renamed,
    ``C`` copied, ``T`` type change). ``added_text`` is the added lines (for a new file, its
    content); empty for deletions and binary files. ``old_path`` is the source of a rename/copy.
    """

    path: str
    status: str = "M"
    added_text: str = ""
    old_path: str | None = None


@dataclass(frozen=True, slots=True)
class Violation:
    """Why a push is refused: which file, which rule, and a message safe to show anyone."""

    path: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} [{self.rule}]"


# --------------------------------------------------------------------------------------
# gitignore-like path patterns
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PathPattern:
    """One compiled pattern: ``regex`` matches a path or a directory prefix of it."""

    source: str
    regex: re.Pattern[str]
    negated: bool
    dir_only: bool


def _translate_segment(segment: str) -> str:
    out: list[str] = []
    i, n = 0, len(segment)
    while i < n:
        c = segment[i]
        if c == "\\" and i + 1 < n:
            out.append(re.escape(segment[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = segment.find("]", i + 2 if i + 1 < n and segment[i + 1] in "!^" else i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = segment[i + 1 : end]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\").replace("/", "") + "]")
                i = end + 1
                continue
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def compile_pattern(pattern: str) -> PathPattern | None:
    """Compile one gitignore-style pattern; ``None`` for blank lines and ``#`` comments.

    A pattern without an inner ``/`` matches a name at any depth; with one it is anchored at
    the repository root. ``**`` spans directories, ``*``/``?``/``[..]`` stay within one name,
    a trailing ``/`` matches directories only, a leading ``!`` re-includes.
    """
    source = pattern
    text = pattern.strip()
    if not text or text.startswith("#"):
        return None
    negated = text.startswith("!")
    if negated:
        text = text[1:]
    dir_only = text.endswith("/")
    text = text.rstrip("/")
    anchored = "/" in text
    text = text.lstrip("/")
    if not text:
        return None
    segments = text.split("/")
    if not anchored and segments[0] != "**":
        segments.insert(0, "**")
    parts: list[str] = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment == "**":
            parts.append(".*" if index == last else "(?:[^/]+/)*")
        else:
            parts.append(_translate_segment(segment) + ("" if index == last else "/"))
    return PathPattern(source, re.compile("^" + "".join(parts) + "$"), negated, dir_only)


def _normalise(path: str) -> str:
    path = path.replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path.strip("/")


def _pattern_matches(compiled: PathPattern, path: str) -> bool:
    parts = path.split("/")
    # Directory prefixes first: a matched directory covers everything inside it.
    for depth in range(1, len(parts)):
        if compiled.regex.match("/".join(parts[:depth])):
            return True
    return not compiled.dir_only and bool(compiled.regex.match(path))


class PathMatcher:
    """A list of gitignore-style patterns compiled once.

    Patterns are read in order and the last one that matches decides, so ``!`` patterns
    carve exceptions out of earlier ones.
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns: tuple[PathPattern, ...] = tuple(
            c for c in (compile_pattern(p) for p in patterns) if c is not None
        )

    def matches(self, path: str) -> bool:
        """Whether ``path`` (repository-relative, ``/``-separated) is covered."""
        normalised = _normalise(path)
        if not normalised:
            return False
        matched = False
        for compiled in self.patterns:
            if _pattern_matches(compiled, normalised):
                matched = not compiled.negated
        return matched


def path_matches(path: str, patterns: Iterable[str]) -> bool:
    """Whether ``path`` is covered by ``patterns`` (see :class:`PathMatcher`)."""
    return PathMatcher(patterns).matches(path)


# --------------------------------------------------------------------------------------
# secrets
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SecretRule:
    """One kind of secret: ``regex`` finds it; group ``group`` is the secret value, and
    ``public_prefix`` matches the non-secret start of that value (shown in messages)."""

    rule: str
    label: str
    regex: re.Pattern[str]
    group: int = 0
    public_prefix: re.Pattern[str] | None = None


SECRET_RULES: tuple[SecretRule, ...] = (
    SecretRule(
        "private_key",
        "a private key",
        re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"),
    ),
    SecretRule(
        "github_token",
        "a GitHub token",
        re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{36,255})\b"),
        1,
        re.compile(r"gh[pousr]_"),
    ),
    SecretRule(
        "github_token",
        "a GitHub fine-grained token",
        re.compile(r"\b(github_pat_[A-Za-z0-9_]{22,255})"),
        1,
        re.compile(r"github_pat_"),
    ),
    SecretRule(
        "aws_access_key",
        "an AWS access key id",
        re.compile(r"\b((?:AKIA|ASIA)[A-Z0-9]{16})\b"),
        1,
        re.compile(r"AKIA|ASIA"),
    ),
    SecretRule(
        "aws_secret_key",
        "an AWS secret access key",
        re.compile(
            r"(?i)aws_?secret(?:_?access)?_?key[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"
        ),
        1,
    ),
    SecretRule(
        "anthropic_key",
        "an Anthropic API key",
        re.compile(r"\b(sk-ant-[A-Za-z0-9_\-]{20,})"),
        1,
        re.compile(r"sk-ant-(?:api\d\d-|admin\d\d-)?"),
    ),
    SecretRule(
        "openai_key",
        "an OpenAI API key",
        re.compile(r"\b(sk-(?!ant-)(?=[A-Za-z0-9_\-]*[0-9])(?=[A-Za-z0-9_\-]*[A-Za-z])[A-Za-z0-9_\-]{20,})"),
        1,
        re.compile(r"sk-(?:proj-|svcacct-|admin-)?"),
    ),
    SecretRule(
        "slack_token",
        "a Slack token",
        re.compile(r"\b(xox[abpr]-[A-Za-z0-9\-]{10,})"),
        1,
        re.compile(r"xox[abpr]-"),
    ),
    SecretRule(
        "google_api_key",
        "a Google API key",
        re.compile(r"\b(AIza[0-9A-Za-z_\-]{35})(?![0-9A-Za-z_\-])"),
        1,
        re.compile(r"AIza"),
    ),
)

_SSH_KEY_NAMES = frozenset({"id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "id_ecdsa_sk", "id_ed25519_sk"})
_KEY_FILE_SUFFIXES = (".pem", ".key")
_ENV_TEMPLATE_SUFFIXES = (".example", ".sample", ".template", ".dist", ".defaults")
_SECRET_KEY_NAME = re.compile(
    r"(?i)(secret|token|passw(or)?d|passwd|pwd|api_?key|private_?key|access_?key|credential|auth)"
)
_ENV_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*?)\s*$")
_PLACEHOLDER = re.compile(
    r"(?i)(example|changeme|change_me|change-me|placeholder|your[_\-]|dummy|fake|xxx|todo|replace|redacted|<|\$\{|\{\{)"
)


def redacted_hint(value: str, public_prefix: re.Pattern[str] | None = None) -> str:
    """Names a secret without revealing it: its well-known, non-secret prefix and ``…``."""
    if public_prefix is not None:
        match = public_prefix.match(value)
        if match:
            return match.group(0) + "…"
    return "…"


def _secret_hint(match: re.Match[str], rule: SecretRule) -> str:
    if rule.group == 0:
        return match.group(0)  # e.g. the PEM header line: names the kind, holds no key material
    return redacted_hint(match.group(rule.group), rule.public_prefix)


def find_secrets(text: str) -> list[tuple[SecretRule, str]]:
    """Every rule that fires on ``text``, once per rule, with a redacted hint of what it saw."""
    found: list[tuple[SecretRule, str]] = []
    seen: set[str] = set()
    for rule in SECRET_RULES:
        if rule.rule in seen:
            continue
        match = rule.regex.search(text)
        if match:
            seen.add(rule.rule)
            found.append((rule, _secret_hint(match, rule)))
    return found


def _env_secret_keys(text: str) -> list[str]:
    """Names of ``KEY=value`` assignments whose key looks secret and whose value looks real."""
    names: list[str] = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        match = _ENV_ASSIGNMENT.match(line)
        if not match:
            continue
        key, value = match.group(1), match.group(2)
        if value[:1] in ("'", '"') and value[-1:] == value[:1] and len(value) >= 2:
            value = value[1:-1]
        value = value.strip()
        if not _SECRET_KEY_NAME.search(key):
            continue
        if len(value) < 8 or len(set(value)) < 4 or _PLACEHOLDER.search(value) or value.startswith("$"):
            continue
        names.append(key)
    return names


def _is_env_file(name: str) -> bool:
    if name == ".env":
        return True
    if name.startswith(".env.") or name.endswith(".env"):
        return not name.endswith(_ENV_TEMPLATE_SUFFIXES)
    return False


def check_file(change: ChangedFile, *, protected: PathMatcher) -> list[Violation]:
    """The violations one changed file causes (see :func:`check_changes`)."""
    violations: list[Violation] = []
    paths = [change.path] + ([change.old_path] if change.old_path and change.old_path != change.path else [])
    for path in paths:
        if protected.matches(path):
            verb = "deletes" if change.status.startswith("D") else "changes"
            if path != change.path:
                verb = "moves"
            violations.append(
                Violation(
                    change.path,
                    "protected_path",
                    f"{verb} the protected path {path!r}; only humans may change it",
                )
            )
            break
    if change.status.startswith("D"):
        return violations

    name = _normalise(change.path).rsplit("/", 1)[-1]
    text = change.added_text or ""
    secrets = find_secrets(text)
    has_private_key = any(rule.rule == "private_key" for rule, _ in secrets)

    if name in _SSH_KEY_NAMES:
        violations.append(Violation(change.path, "secret_file", "adds an SSH private key file"))
        secrets = [(rule, hint) for rule, hint in secrets if rule.rule != "private_key"]
    elif name.endswith(_KEY_FILE_SUFFIXES) and has_private_key:
        violations.append(Violation(change.path, "secret_file", "adds a key file containing a private key"))
        secrets = [(rule, hint) for rule, hint in secrets if rule.rule != "private_key"]
    elif _is_env_file(name):
        keys = _env_secret_keys(text)
        if keys:
            shown = ", ".join(keys[:5]) + (", …" if len(keys) > 5 else "")
            violations.append(
                Violation(
                    change.path,
                    "env_file",
                    f"adds an environment file that sets secret-looking values ({shown})",
                )
            )

    for rule, hint in secrets:
        violations.append(Violation(change.path, rule.rule, f"adds {rule.label} ({hint})"))
    return violations


def check_changes(
    changes: Sequence[ChangedFile], *, protected: Sequence[str] = DEFAULT_PROTECTED
) -> list[Violation]:
    """All reasons to refuse pushing ``changes``: protected paths touched, secrets added,
    files that look like secrets. Empty when the push may go ahead."""
    matcher = PathMatcher(protected)
    violations: list[Violation] = []
    for change in changes:
        violations.extend(check_file(change, protected=matcher))
    return violations


def describe(violations: Sequence[Violation]) -> str:
    """A plain-words message for the attempt log and the status comment."""
    if not violations:
        return ""
    lines = ["Refusing to push: the changes break the pre-push checks."]
    lines.extend(f"- {v}" for v in violations)
    return "\n".join(lines)


def redact(text: str, secrets: Iterable[str] = (), *, patterns: bool = True) -> str:
    """``text`` with each of ``secrets`` (and, with ``patterns``, anything that looks like a
    token by the rules above) replaced by ``[REDACTED]``."""
    values = sorted({s for s in secrets if s and s.strip()}, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, REDACTED)
    if patterns:
        for rule in SECRET_RULES:
            if rule.rule == "private_key":
                continue
            text = rule.regex.sub(lambda m, g=rule.group: _redact_group(m, g), text)
    return text


def _redact_group(match: re.Match[str], group: int) -> str:
    whole = match.group(0)
    if group == 0:
        return REDACTED
    start, end = match.span(group)
    offset = match.start(0)
    return whole[: start - offset] + REDACTED + whole[end - offset :]

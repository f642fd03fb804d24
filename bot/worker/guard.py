"""Pre-push checks (SPEC §6.5): protected paths, file sizes and secrets in what the agent changed.

A :class:`GuardPolicy` (protected paths, the secrets the bot holds, the largest file it
pushes) makes one :class:`FileScan` per changed file; the worker streams each file's added
lines into it (:meth:`FileScan.feed`, any chunking) and collects :meth:`FileScan.finish`.
Memory stays bounded whatever the file's size: text is scanned in blocks of
:data:`SCAN_BLOCK` characters with an overlap of :data:`SCAN_OVERLAP`, and nothing else of
the file is kept. :func:`check_changes` is the same over texts already in memory.

Secrets are looked for in the text as written, and also decoded: base64 and hex blobs
(:data:`MIN_BASE64`/:data:`MIN_HEX` characters and up; at most :data:`MAX_DECODE_DEPTH`
levels; only decodings that are text are scanned again), backslash and URL escapes, string
literals split across concatenations or lines (``"ghp_abc" + "def…"``, JSON arrays of
parts) and bare fragments on consecutive lines. The secrets the bot itself holds (webhook
secret, App key, installation tokens) are found in plain, base64 and hex forms.

A non-empty list of violations means the attempt fails with a clear message and nothing is
pushed. Messages never contain a secret: only a short, public prefix of it.
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

# The secret patterns are redaction's (bot.redaction); ``redact`` and ``REDACTED`` are
# re-exported for callers that import them from here.
from bot.redaction import REDACTED as REDACTED
from bot.redaction import SECRET_RULES, SecretRule, starts_token
from bot.redaction import redact as redact

DEFAULT_PROTECTED: tuple[str, ...] = (".github/workflows/**",)


@dataclass(frozen=True, slots=True)
class ChangedFile:
    """One file in the diff: its path, git status letter and the text it adds.

    ``status`` is git's letter (``A`` added, ``M`` modified, ``D`` deleted, ``R`` renamed,
    ``C`` copied, ``T`` type change). ``added_text`` is the added lines (for a new file, its
    content) when the caller has them in memory; the worker streams them into a
    :class:`FileScan` instead and leaves this empty. ``old_path`` is the source of a
    rename/copy. ``size`` is the size in bytes of the file's new content (git's object size),
    ``None`` when unknown or deleted.
    """

    path: str
    status: str = "M"
    added_text: str = ""
    old_path: str | None = None
    size: int | None = None


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
# secrets: the rules (the pattern table, SECRET_RULES, is shared with bot.redaction)
# --------------------------------------------------------------------------------------

_RULE_ORDER = {rule.rule: index for index, rule in reversed(list(enumerate(SECRET_RULES)))}

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
_PEM_KEY = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")


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


def _search(rule: SecretRule, text: str) -> re.Match[str] | None:
    """The first match of ``rule`` in ``text`` (where the rule wants it, at a word boundary or
    just after an escape sequence such as ``\\n`` or ``%3D``)."""
    if rule.requires and not any(literal in text for literal in rule.requires):
        return None
    if rule.fast is None:
        return rule.regex.search(text)
    pos = 0
    while True:
        match = rule.fast.search(text, pos)
        if match is None:
            return None
        start = match.start()
        if starts_token(text, start):  # a word boundary, or just after an escape sequence
            return match
        pos = start + 1


def find_secrets(text: str) -> list[tuple[SecretRule, str]]:
    """Every rule that fires on ``text`` as written, once per rule, with a redacted hint of
    what it saw (no decoding: see :class:`FileScan` for that)."""
    found: list[tuple[SecretRule, str]] = []
    seen: set[str] = set()
    for rule in SECRET_RULES:
        if rule.rule in seen:
            continue
        match = _search(rule, text)
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


# --------------------------------------------------------------------------------------
# secrets the bot holds
# --------------------------------------------------------------------------------------

#: Shorter known secrets are not looked for (they would match ordinary text).
MIN_KNOWN_SECRET = 8


@dataclass(frozen=True, slots=True)
class KnownSecret:
    """A secret the bot itself holds (the webhook secret, the App's private key, an
    installation token): refused in the agent's changes in plain, base64 and hex forms.
    ``label`` names it in messages (``"the App's webhook secret"``); ``value`` never shows."""

    label: str
    value: str = field(repr=False)


def _base64_cores(data: bytes) -> list[str]:
    """The base64 text of ``data`` at each of the three byte alignments it can have inside a
    longer base64 blob, without the edge characters that mix in neighbouring bytes."""
    cores = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + data).decode("ascii").rstrip("=")
        first = -(-8 * shift // 6)  # the first character made only of data's bits
        last = (8 * (shift + len(data))) // 6
        cores.append(encoded[first:last])
    return cores


def _encoded_forms(value: str) -> list[tuple[str, str]]:
    data = value.encode("utf-8")
    forms = [(value, ""), (data.hex(), "hex-encoded"), (data.hex().upper(), "hex-encoded")]
    for core in _base64_cores(data):
        forms += [(core, "base64-encoded"), (core.replace("+", "-").replace("/", "_"), "base64-encoded")]
    return forms


def known_secret_needles(secrets: Iterable[KnownSecret | str]) -> tuple[tuple[str, str, str], ...]:
    """``(text to look for, label, how it is encoded)`` for each form of each secret: the
    value, its base64 (at every alignment, standard and URL-safe) and hex. A PEM key is
    looked for by its base64 lines (its header is public, and the guard refuses any
    private-key header anyway); its base64 or hex forms are decoded by the scan. Forms that
    contain another form are left out."""
    forms: dict[str, tuple[str, str]] = {}
    for secret in secrets:
        if isinstance(secret, str):
            secret = KnownSecret("a secret the bot holds", secret)
        value = secret.value.strip()
        if len(value) < MIN_KNOWN_SECRET:
            continue
        if _PEM_KEY.search(value):
            candidates = [
                (line.strip(), "")
                for line in value.splitlines()
                if len(line.strip()) >= 40 and not line.lstrip().startswith("-----") and ":" not in line
            ]
        else:
            candidates = _encoded_forms(value)
        for form, how in candidates:
            if len(form) >= MIN_KNOWN_SECRET:
                forms.setdefault(form, (secret.label, how))
    kept: list[str] = []
    for form in sorted(forms, key=len):
        if not any(shorter in form for shorter in kept):
            kept.append(form)
    return tuple((form, *forms[form]) for form in kept)


# --------------------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------------------

#: Text is scanned in blocks of this many characters…
SCAN_BLOCK = 256 * 1024
#: …each one with the end of the block before it, so that nothing this long is cut in two.
SCAN_OVERLAP = 4096
#: Shortest base64 and hex runs that are decoded (a secret's encoding is longer).
MIN_BASE64 = 24
MIN_HEX = 32
#: How deep encodings are peeled (base64 of hex of …).
MAX_DECODE_DEPTH = 2
#: A decoding is scanned again only when it is text: this much of it is tried first.
_SAMPLE = 32
_TEXT_RATIO = 0.8

_B64_RUN = re.compile(r"[A-Za-z0-9+/_-]{%d,}" % MIN_BASE64)
_HEX_DIGITS = "0123456789abcdefABCDEF"
_TEXT_BYTES = bytes([9, 10, 13, *range(32, 127)])
_ESCAPE_HINT = re.compile(r"\\(?:u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|[0-7]{3}|/)")
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|[0-7]{1,3}|.)", re.S)
_SIMPLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "0": "\0"}
_PERCENT_HINT = re.compile(r"(?:%[0-9A-Fa-f]{2}){3}")
# String literals, and runs of them joined by concatenation (+ . .. || , \ or just space,
# line breaks included). Possessive quantifiers: no backtracking over long whitespace.
_STRING = r'"(?:[^"\\\n]|\\.)*+"|\'(?:[^\'\\\n]|\\.)*+\'|`(?:[^`\\]|\\.)*+`'
_LITERAL = re.compile(_STRING, re.S)
_LITERAL_RUN = re.compile(
    rf"(?:{_STRING})(?:\s*+(?:\+|\.\.?|\|\||,|\\)?+\s*+(?:{_STRING}))++", re.S
)
# Consecutive lines that are each one bare (or quoted) token-like fragment (searched in the
# text after a newline: a leading literal is much faster to search for than ``^``).
_FRAGMENT = r"[A-Za-z0-9+/=_.-]"
_FRAGMENT_LINES = re.compile(
    rf"\n(?:[ \t]*+[\"'`]?{_FRAGMENT}{{4,}}+[\"'`]?[ \t]*+[,+\\]?[ \t]*+(?=\n|\Z)\n?){{2,}}"
)
_FRAGMENT_TEXT = re.compile(rf"{_FRAGMENT}+")


def _is_text(data: bytes) -> bool:
    if not data:
        return False
    return len(data.translate(None, _TEXT_BYTES)) <= len(data) * (1 - _TEXT_RATIO)


def _b64(text: str) -> bytes:
    try:
        return binascii.a2b_base64(text)
    except (binascii.Error, ValueError):
        return b""


def _decode_base64(run: str) -> str | None:
    """The text a base64 (or base64url) run encodes, trying each alignment of a run that may
    have been cut out of a longer blob; ``None`` when it is not text."""
    body = run.rstrip("=")
    if "-" in body or "_" in body:
        body = body.replace("-", "+").replace("_", "/")
    a2b, text_bytes, most = binascii.a2b_base64, _TEXT_BYTES, _SAMPLE * 3 // 4 * (1 - _TEXT_RATIO)
    for shift in range(4):
        if len(body) - shift < MIN_BASE64 - 3:
            return None
        # whole quanta of base64 characters: decoding them cannot fail
        sample = a2b(body[shift : shift + min(_SAMPLE, (len(body) - shift) // 4 * 4)])
        if len(sample.translate(None, text_bytes)) > most:
            continue
        part = body[shift:]
        whole = len(part) - len(part) % 4
        data = _b64(part[:whole])
        rest = part[whole:]
        if len(rest) >= 2:
            data += _b64(rest + "=" * (4 - len(rest)))
        return data.decode("utf-8", "replace") if _is_text(data) else None
    return None


def _decode_hex(run: str) -> str | None:
    """The text an all-hex run encodes (at either alignment); ``None`` when it is not text."""
    for shift in (0, 1):
        part = run[shift:]
        part = part[: len(part) - len(part) % 2]
        if not _is_text(bytes.fromhex(part[:_SAMPLE])):
            continue
        data = bytes.fromhex(part)
        return data.decode("utf-8", "replace") if _is_text(data) else None
    return None


def _unescape_one(match: re.Match[str]) -> str:
    escape = match.group(1)
    if escape[0] in "ux" and len(escape) > 1:
        return chr(int(escape[1:], 16))
    if escape[0] in "01234567" and (len(escape) > 1 or escape != "0"):
        return chr(int(escape, 8))
    return _SIMPLE_ESCAPES.get(escape, escape)


def _decodings(text: str) -> Iterator[tuple[str, str]]:
    """``(decoded text, how)`` for every encoded blob in ``text`` worth scanning again."""
    for match in _B64_RUN.finditer(text):
        run = match.group()
        if len(run) >= MIN_HEX:
            digits = run[2:] if run[:2] in ("0x", "0X") else run
            if len(digits) >= MIN_HEX and not digits.strip(_HEX_DIGITS):
                decoded = _decode_hex(digits)
                if decoded:
                    yield decoded, "hex-encoded"
                continue
        decoded = _decode_base64(run)
        if decoded:
            yield decoded, "base64-encoded"
    if "\\" in text and _ESCAPE_HINT.search(text):
        yield _ESCAPE.sub(_unescape_one, text), "escaped"
    if "%" in text and _PERCENT_HINT.search(text):
        yield urllib.parse.unquote(text, errors="replace"), "URL-encoded"


def _joined_views(text: str) -> Iterator[tuple[str, str]]:
    """Texts split in pieces put back together: adjacent string literals (``"ghp_abc" +
    "def…"``, implicit concatenation, JSON arrays of parts, over line breaks) and runs of
    lines that are each a bare fragment. One string per kind, runs separated by newlines."""
    literal_runs = []
    for match in _LITERAL_RUN.finditer(text):
        joined = "".join(part[1:-1] for part in _LITERAL.findall(match.group()))
        if len(joined) >= 16:
            literal_runs.append(joined)
    if literal_runs:
        yield "\n".join(literal_runs), "split across strings"
    fragment_runs = []
    for match in _FRAGMENT_LINES.finditer("\n" + text):
        joined = "".join(_FRAGMENT_TEXT.findall(match.group()))
        if len(joined) >= 16:
            fragment_runs.append(joined)
    if fragment_runs:
        yield "\n".join(fragment_runs), "split across lines"


# --------------------------------------------------------------------------------------
# the checks
# --------------------------------------------------------------------------------------

MIB = 1024 * 1024


def format_size(size: float) -> str:
    """``10 MiB``, ``1.5 MiB``, ``12 KiB``, ``300 bytes``."""
    if size >= MIB:
        return f"{round(size / MIB, 1):g} MiB"
    if size >= 1024:
        return f"{round(size / 1024, 1):g} KiB"
    return f"{int(size)} bytes"


class GuardPolicy:
    """What the pre-push checks refuse: changes to ``protected`` paths, files larger than
    ``max_file_size`` bytes (``None``: no limit), secrets (by pattern, decoded or not) and
    any form of ``known_secrets``."""

    def __init__(
        self,
        *,
        protected: Sequence[str] | PathMatcher = DEFAULT_PROTECTED,
        known_secrets: Iterable[KnownSecret | str] = (),
        max_file_size: int | None = None,
    ) -> None:
        if max_file_size is not None and max_file_size <= 0:
            raise ValueError("max_file_size must be positive")
        self.protected = protected if isinstance(protected, PathMatcher) else PathMatcher(protected)
        self.needles = known_secret_needles(known_secrets)
        self.max_file_size = max_file_size

    def __repr__(self) -> str:
        return (
            f"GuardPolicy(protected={[p.source for p in self.protected.patterns]!r}, "
            f"known_secrets={len(self.needles)} forms, max_file_size={self.max_file_size!r})"
        )

    def too_large(self, change: ChangedFile) -> bool:
        return (
            self.max_file_size is not None
            and change.size is not None
            and change.size > self.max_file_size
            and not change.status.startswith("D")
        )

    def scanner(self, change: ChangedFile) -> FileScan:
        return FileScan(change, self)

    def check(self, change: ChangedFile) -> list[Violation]:
        """The violations of one file whose added text is in ``change.added_text``."""
        scan = self.scanner(change)
        if scan.wants_text:
            scan.feed(change.added_text)
        return scan.finish()

    def check_all(self, changes: Iterable[ChangedFile]) -> list[Violation]:
        return [v for change in changes for v in self.check(change)]


class FileScan:
    """The checks of one changed file, fed its added text in pieces of any size (lines are
    ``\\n``-terminated). Holds at most about two blocks of text whatever the file's size;
    the cost is linear in the text (decodings are scanned once more at most
    :data:`MAX_DECODE_DEPTH` times, and only those that are text)."""

    def __init__(self, change: ChangedFile, policy: GuardPolicy) -> None:
        self.change = change
        self.policy = policy
        self.deleted = change.status.startswith("D")
        self.too_large = policy.too_large(change)
        #: Whether the caller should feed the added text at all.
        self.wants_text = not self.deleted and not self.too_large
        self._name = _normalise(change.path).rsplit("/", 1)[-1]
        self._env = _is_env_file(self._name)
        self._found: dict[str, tuple[str, int, str]] = {}  # key -> (rule, order, message)
        self._env_keys: dict[str, None] = {}
        self._pending: list[str] = []
        self._pending_len = 0
        self._tail = ""
        self._finished: list[Violation] | None = None

    # -- feeding ------------------------------------------------------------------------

    def feed(self, text: str) -> None:
        if not text or not self.wants_text:
            return
        self._pending.append(text)
        self._pending_len += len(text)
        if self._pending_len >= SCAN_BLOCK:
            self._drain(final=False)

    def _drain(self, *, final: bool) -> None:
        data = "".join(self._pending)
        self._pending, self._pending_len = [], 0
        start = 0
        while len(data) - start >= SCAN_BLOCK or (final and start < len(data)):
            end = min(start + SCAN_BLOCK, len(data))
            if end < len(data):
                newline = data.rfind("\n", start + SCAN_BLOCK // 2, end)
                if newline != -1:
                    end = newline + 1
            self._scan_block(data[start:end])
            start = end
        if start < len(data):
            self._pending, self._pending_len = [data[start:]], len(data) - start

    def _scan_block(self, block: str) -> None:
        text = self._tail + block
        self._scan(text, 0, "")
        for view, how in _joined_views(text):
            self._scan(view, 0, how)
        if self._env:
            self._env_keys.update(dict.fromkeys(_env_secret_keys(text)))
        if len(text) > SCAN_OVERLAP:
            tail = text[-SCAN_OVERLAP:]
            newline = tail.find("\n")
            self._tail = tail[newline + 1 :] if 0 <= newline < len(tail) - 1 else tail
        else:
            self._tail = text

    def _scan(self, text: str, depth: int, how: str) -> None:
        found = self._found
        suffix = f", {how}" if how else ""
        for order, rule in enumerate(SECRET_RULES):
            if rule.rule in found:
                continue
            match = _search(rule, text)
            if match:
                found[rule.rule] = (
                    rule.rule,
                    order,
                    f"adds {rule.label} ({_secret_hint(match, rule)}{suffix})",
                )
        for needle, label, form in self.policy.needles:
            key = "known_secret:" + label
            if key not in found and needle in text:
                said = ", ".join(part for part in (how, form) if part)
                found[key] = ("known_secret", len(SECRET_RULES), f"adds {label}" + (f" ({said})" if said else ""))
        if depth >= MAX_DECODE_DEPTH:
            return
        for decoded, kind in _decodings(text):
            self._scan(decoded, depth + 1, f"{how}, {kind}" if how else kind)

    # -- the verdict --------------------------------------------------------------------

    def finish(self) -> list[Violation]:
        """The violations of this file (see :func:`check_changes`); call once, after feeding."""
        if self._finished is not None:
            return list(self._finished)
        if self.wants_text:
            self._drain(final=True)
        self._finished = self._verdict()
        return list(self._finished)

    def _verdict(self) -> list[Violation]:
        change = self.change
        violations: list[Violation] = []
        paths = [change.path] + ([change.old_path] if change.old_path and change.old_path != change.path else [])
        for path in paths:
            if self.policy.protected.matches(path):
                verb = "deletes" if self.deleted else "changes"
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
        if self.deleted:
            return violations
        if self.too_large:
            assert change.size is not None and self.policy.max_file_size is not None
            size, limit = format_size(change.size), format_size(self.policy.max_file_size)
            if size == limit:  # just over: say it in bytes
                size, limit = f"{change.size:,} bytes", f"{self.policy.max_file_size:,}-byte"
            violations.append(
                Violation(
                    change.path,
                    "file_too_large",
                    f"is {size}, over the {limit} limit for one file (`max_file_size_mb` in "
                    ".github/patchwright.yml); its content was not read",
                )
            )

        findings = sorted(self._found.values(), key=lambda f: f[1])
        has_private_key = any(rule == "private_key" for rule, _, _ in findings)
        if self._name in _SSH_KEY_NAMES:
            violations.append(Violation(change.path, "secret_file", "adds an SSH private key file"))
            findings = [f for f in findings if f[0] != "private_key"]
        elif self._name.endswith(_KEY_FILE_SUFFIXES) and has_private_key:
            violations.append(Violation(change.path, "secret_file", "adds a key file containing a private key"))
            findings = [f for f in findings if f[0] != "private_key"]
        elif self._env and self._env_keys:
            keys = list(self._env_keys)
            shown = ", ".join(keys[:5]) + (", …" if len(keys) > 5 else "")
            violations.append(
                Violation(
                    change.path,
                    "env_file",
                    f"adds an environment file that sets secret-looking values ({shown})",
                )
            )
        for rule, _, message in findings:
            violations.append(Violation(change.path, rule, message))
        return violations


def check_changes(
    changes: Sequence[ChangedFile],
    *,
    protected: Sequence[str] = DEFAULT_PROTECTED,
    known_secrets: Iterable[KnownSecret | str] = (),
    max_file_size: int | None = None,
) -> list[Violation]:
    """All reasons to refuse pushing ``changes``: protected paths touched, files over
    ``max_file_size`` bytes, secrets added (as written or encoded, and any form of
    ``known_secrets``), files that look like secrets. Empty when the push may go ahead."""
    policy = GuardPolicy(protected=protected, known_secrets=known_secrets, max_file_size=max_file_size)
    return policy.check_all(changes)


def describe(violations: Sequence[Violation]) -> str:
    """A plain-words message for the attempt log and the status comment."""
    if not violations:
        return ""
    lines = ["Refusing to push: the changes break the pre-push checks."]
    lines.extend(f"- {v}" for v in violations)
    return "\n".join(lines)

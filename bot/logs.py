"""Structured logging: text or JSON lines, with delivery id, task id and repo on every line.

The ids travel in context variables, so a handler or worker sets them once (``log_context``)
and every log call below it carries them.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import TextIO
from urllib.parse import unquote_plus

_CONTEXT: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("patchwright_log_context")
CONTEXT_KEYS = ("delivery_id", "task_id", "repo")


@contextlib.contextmanager
def log_context(**values: str | int | None) -> Iterator[None]:
    """Attach ids (delivery_id, task_id, repo, …) to every log line written inside the block."""
    current = dict(_CONTEXT.get({}))
    current.update({k: str(v) for k, v in values.items() if v is not None and v != ""})
    token = _CONTEXT.set(current)
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.pw_context = _CONTEXT.get({})
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "pw_context", {}))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ctx = getattr(record, "pw_context", {})
        if ctx:
            line += " [" + " ".join(f"{k}={v}" for k, v in ctx.items()) + "]"
        return line


def configure_logging(fmt: str = "text", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Install one handler on the root logger (called once, from the CLI)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


# -- database URLs in messages ------------------------------------------------------------

#: What a password in a database URL is replaced with.
REDACTED_PASSWORD = "***"
#: Query parameter (or libpq keyword) names whose value is a secret: ``password``, ``passwd``,
#: ``sslpassword``, ``pwd``, ``pass``, ``secret``, ``*_token``…
_SECRET_KEY = re.compile(r"pass|pwd|secret|token|credential|api_?key", re.IGNORECASE)
#: ``key=value`` pairs of a libpq keyword/value connection string (``host=h password=x``).
_KEYWORD_PAIR = re.compile(r"""(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<value>'(?:[^'\\]|\\.)*'|[^\s']*)""")


def _is_secret_key(name: str) -> bool:
    return bool(_SECRET_KEY.search(unquote_plus(name)))


def _split_url(url: str) -> tuple[str, str, str] | None:
    """``scheme://userinfo@rest`` -> (``scheme://``, userinfo, what follows the ``@``); userinfo
    is "" when there is none. None for text that is not ``scheme://…``.

    Lenient on purpose: a password with an unescaped ``/`` or ``?`` still counts as userinfo
    (everything up to the last ``@`` before the query), so it is masked rather than shown."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return None
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, cut)
    if at == -1:
        # "u:pa?ss@host": the '@' follows the first '?', but what precedes it is no query.
        first = rest.find("@")
        if first != -1 and ":" in rest[:first] and "=" not in rest[:first]:
            at = first
    userinfo, after = (rest[:at], rest[at + 1 :]) if at != -1 else ("", rest)
    return scheme + sep, userinfo, after


def redact_url(url: str) -> str:
    """``url`` (a database URL or libpq connection string) with every password masked.

    Masks the password of ``scheme://user:password@host`` (the user stays), the value of every
    password-like query parameter (``?password=``, ``sslpassword``, ``passwd``…) and, for a
    ``key=value`` connection string, password-like values. Pure; for messages and logs."""
    parts = _split_url(url)
    if parts is None:
        return _KEYWORD_PAIR.sub(_mask_pair, url)
    prefix, userinfo, after = parts
    if userinfo:
        user, colon, _password = userinfo.partition(":")
        userinfo = f"{user}:{REDACTED_PASSWORD}@" if colon else f"{user}@"
    location, q, query = after.partition("?")
    if q:
        query, hash_, fragment = query.partition("#")
        pairs = []
        for pair in query.split("&"):
            key, eq, _value = pair.partition("=")
            pairs.append(f"{key}={REDACTED_PASSWORD}" if eq and _is_secret_key(key) else pair)
        after = location + "?" + "&".join(pairs) + hash_ + fragment
    return prefix + userinfo + after


def _mask_pair(match: re.Match[str]) -> str:
    if not _is_secret_key(match.group("key")):
        return match.group(0)
    return f"{match.group('key')}={REDACTED_PASSWORD}"


def url_secrets(url: str) -> list[str]:
    """The secret values ``url`` carries (as written and percent-decoded), longest first."""
    found: set[str] = set()
    parts = _split_url(url)
    if parts is None:
        for match in _KEYWORD_PAIR.finditer(url):
            if _is_secret_key(match.group("key")):
                value = match.group("value")
                found.update({value, value.strip("'")})
    else:
        _, userinfo, after = parts
        _user, colon, password = userinfo.partition(":")
        if colon:
            found.update({password, unquote_plus(password)})
        query = after.partition("?")[2].partition("#")[0]
        for pair in query.split("&"):
            key, eq, value = pair.partition("=")
            if eq and _is_secret_key(key):
                found.update({value, unquote_plus(value)})
    return sorted((s for s in found if s and s != REDACTED_PASSWORD), key=len, reverse=True)


def scrub_url_secrets(text: str, url: str) -> str:
    """``text`` (say, an error message about ``url``) with the secrets of ``url`` masked,
    wherever and however they appear in it."""
    for secret in url_secrets(url):
        text = text.replace(secret, REDACTED_PASSWORD)
    return text

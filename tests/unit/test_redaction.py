"""bot.redaction: the core redaction module the agent runner and the worker share."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

from bot import redaction
from bot.redaction import REDACTED, SECRET_RULES, redact

# Secrets are assembled at runtime so this file never contains one literally.
GH = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
GHS = "ghs_" + "Zz9" * 12
ANTHROPIC = "sk-ant-api03-" + "Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op8Qr9St0"
PEM_HEADER = "-----BEGIN RSA PRIVATE KEY-----"
#: GitHub's recommended pattern for installation tokens, old and stateless.
GITHUB_GHS_PATTERN = re.compile(r"ghs_[A-Za-z0-9\._]{36,}")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def stateless_installation_token(app_id: int = 123456) -> str:
    """A token shaped like GitHub's stateless ones: ``ghs_<app id>_<JWT>``, ~520 characters,
    two dots, base64url parts (``-`` and ``_`` included). Obviously fake, built at runtime."""
    header = _b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    claims = {"iss": str(app_id), "inst": 98765432, "exp": 1_700_000_000, "sub": "fake"}
    payload = _b64url(json.dumps(claims).encode())
    signature = _b64url(bytes(range(255, -1, -1)))  # an RS256 size; gives "-" and "_"
    return f"ghs_{app_id}_{header}.{payload}.{signature}"


GHS_STATELESS = stateless_installation_token()
ROOT = Path(__file__).resolve().parents[2]


def test_redact_replaces_given_secrets_longest_first_and_token_patterns() -> None:
    text = f"clone with {GHS}, key {ANTHROPIC} and password hunter2hunter2"
    assert redact(text, ["hunter2hunter2"]) == f"clone with {REDACTED}, key {REDACTED} and password {REDACTED}"
    assert redact("abcdefgh-ijkl", ["abcdefgh", "abcdefgh-ijkl"], patterns=False) == REDACTED
    assert redact(f"token {GH}", patterns=False) == f"token {GH}"
    assert redact(f"token {GH}") == f"token {REDACTED}"
    # Blank secrets are ignored rather than replacing every position in the text.
    assert redact("nothing to hide", ["", "  "]) == "nothing to hide"


def test_redact_keeps_the_text_around_a_grouped_secret_and_pem_headers() -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "EXAMPLEKEY"
    assert redact(f"aws_secret_access_key={secret}") == f"aws_secret_access_key={REDACTED}"
    # A PEM header names a kind of key and holds no key material: it stays readable.
    assert redact(PEM_HEADER) == PEM_HEADER


def test_guard_shares_the_rule_table_and_reexports_redact() -> None:
    from bot.worker import guard

    assert guard.redact is redact
    assert guard.REDACTED == REDACTED
    assert guard.SECRET_RULES is SECRET_RULES
    assert {rule.rule for rule in SECRET_RULES} >= {"private_key", "github_token", "openai_key"}
    assert set(redaction.__all__) == {"REDACTED", "SECRET_RULES", "TOKEN_START", "SecretRule", "redact", "starts_token"}


def test_neither_redaction_nor_the_agent_runner_imports_the_worker() -> None:
    code = (
        "import sys, bot.redaction, bot.agents.process\n"
        "print(sorted(m for m in sys.modules if m == 'bot.worker' or m.startswith('bot.worker.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_the_stateless_token_fixture_is_shaped_like_githubs() -> None:
    assert 480 <= len(GHS_STATELESS) <= 700
    assert GHS_STATELESS.count(".") == 2
    assert "-" in GHS_STATELESS and GHS_STATELESS.count("_") > 2
    assert GITHUB_GHS_PATTERN.search(GHS_STATELESS)


def test_a_stateless_installation_token_is_redacted_whole_in_a_log_line() -> None:
    token = GHS_STATELESS
    lines = [
        f"git push https://x-access-token:{token}@github.com/octo/demo.git",
        f"Authorization: token {token}",
        f"export GH_TOKEN={token}; echo done",
        json.dumps({"token": token, "expires_at": "2026-01-01T00:00:00Z"}),
        f"the token was {token}.",  # sentence punctuation stays
        f"first {token} second {stateless_installation_token(7)}",
    ]
    for line in lines:
        out = redact(line)
        assert REDACTED in out
        assert "ghs_" not in out, out
        assert not GITHUB_GHS_PATTERN.search(out), out
        # no piece of the token survives (the whole token, not its part up to the first dot)
        for part in token[4:].split("."):
            assert part not in out
    assert redact(f"the token was {token}.") == f"the token was {REDACTED}."


def test_every_github_token_prefix_stays_covered() -> None:
    body = "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    tokens = [f"{prefix}_{body}" for prefix in ("ghp", "gho", "ghu", "ghs", "ghr")]
    tokens.append("github_pat_11ABCDEFG0123456789_" + "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVW")
    tokens.append(GHS_STATELESS)
    for token in tokens:
        assert redact(f"token={token} rest") == f"token={REDACTED} rest", token
    # Not tokens: too short, or a prefix in prose.
    for text in ("ghs_tooshort", "prefixes ghp_, ghs_ and github_pat_", "xghs_" + body):
        assert redact(text) == text


def test_a_token_after_an_escape_sequence_is_redacted() -> None:
    """Agents print JSON (``\\n`` before a token) and URL-encoded text (``%20``, ``%3D``): the
    letter or digit of the escape is not a word the token belongs to."""
    for token in (GH, GHS, GHS_STATELESS):
        for line in (
            f'{{"type": "text", "text": "cloned with:\\n{token}\\n"}}',
            f"GET /?q=token%3D{token}&x=1",
            f"-H Authorization:%20token%20{token}",
            f'"\\u0022{token}\\u0022"',
            f"tab\\t{token}",
        ):
            out = redact(line)
            assert token[4:12] not in out and token[-8:] not in out, line
            assert REDACTED in out
    # glued to a word, it is not a token
    assert redact(f"x{GH}") == f"x{GH}"


def test_the_fast_search_finds_what_the_rule_regex_finds() -> None:
    """Redaction searches each rule's ``fast`` regex and checks the start with
    ``starts_token``: the same matches as the rule's own regex (``TOKEN_START`` + pattern)."""
    import random

    from bot.redaction import _redact_group, _redact_rule

    rand = random.Random(14)
    pieces = ["a", "_", "-", ".", " ", "\\n", "\\u0022", "\\x41", "%3D", "%2", "\\", "é", "x", "9", GH, GHS, GHS_STATELESS, ANTHROPIC]
    for _ in range(2000):
        text = "".join(rand.choice(pieces) for _ in range(rand.randint(1, 8)))
        for rule in SECRET_RULES:
            if rule.fast is None:
                continue
            expected = rule.regex.sub(lambda m, g=rule.group: _redact_group(m, g), text)
            assert _redact_rule(rule, text) == expected, (rule.label, text)

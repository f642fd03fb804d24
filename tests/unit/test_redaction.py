"""bot.redaction: the core redaction module the agent runner and the worker share."""

from __future__ import annotations

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
    assert set(redaction.__all__) == {"REDACTED", "SECRET_RULES", "SecretRule", "redact"}


def test_neither_redaction_nor_the_agent_runner_imports_the_worker() -> None:
    code = (
        "import sys, bot.redaction, bot.agents.process\n"
        "print(sorted(m for m in sys.modules if m == 'bot.worker' or m.startswith('bot.worker.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"

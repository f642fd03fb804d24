"""The secret scan decodes (issue 11, acceptance criterion 7): the encoded-secret corpus
(base64, hex, split across lines, in JSON strings, a PEM inside another file) is refused,
naming the file; plain code that merely mentions a token prefix is not. Secrets the bot holds
are refused in plain, base64 and hex forms. The scan streams in bounded memory."""

from __future__ import annotations

import base64
import codecs
import json
import os
import re
import secrets
import time
from collections.abc import Iterator

import pytest

from bot.worker.git import AddedLinesParser
from bot.worker.guard import (
    SCAN_BLOCK,
    ChangedFile,
    GuardPolicy,
    KnownSecret,
    check_changes,
    known_secret_needles,
    redact,
)

# Every token is assembled at runtime from an obviously fake body: none is in this file.
ALNUM = "FakeTokenForTests0123456789abcdefghijklmnopqrstuvwxyz"


def fake(prefix: str, length: int, alphabet: str = ALNUM) -> str:
    return prefix + (alphabet * (length // len(alphabet) + 1))[:length]


GHP = fake("ghp_", 36)
GHO = fake("gho_", 36)
GHU = fake("ghu_", 36)
GHR = fake("ghr_", 36)
GHS = fake("ghs_", 36)
PAT = fake("github_pat_", 82, ALNUM + "_")
# The stateless installation token: ghs_<app id>_<JWT>, ~520 characters with dots.
GHS_NEW = (
    "ghs_123456_"
    + base64.urlsafe_b64encode(b'{"alg":"RS256","typ":"JWT"}').decode().rstrip("=")
    + "."
    + fake("", 380, ALNUM + "-_")
    + "."
    + fake("", 86, ALNUM + "-_")
)
AWS = fake("AKIA", 16, "FAKE0123456789ABCDEFGHIJ")
ANTHROPIC = fake("sk-ant-api03-", 80, ALNUM + "-_")
OPENAI = fake("sk-proj-", 48)
PEM_BODY = "\n".join(fake("MIIEpAIBAAKCAQEA", 48, ALNUM + "+/") for _ in range(4))
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----\n"
ALL = (GHP, GHO, GHU, GHR, GHS, PAT, GHS_NEW, AWS, ANTHROPIC, OPENAI)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def hexed(text: str) -> str:
    return text.encode().hex()


def wrapped(text: str, width: int = 76) -> str:
    return "\n".join(text[i : i + width] for i in range(0, len(text), width))


def json_escaped(text: str) -> str:
    return "".join(f"\\u{ord(c):04x}" if c.isalpha() and i % 3 == 0 else c for i, c in enumerate(text))


CORPUS: dict[str, tuple[str, str, str]] = {
    # name: (path, content, rule)
    "base64 in yaml": ("deploy/values.yaml", f"auth:\n  token: {b64(GHP)}\n", "github_token"),
    "base64url": ("a.cfg", f"t={base64.urlsafe_b64encode(('x-access-token:' + GHS).encode()).decode()}\n", "github_token"),
    "base64 unaligned": ("b.txt", f"blob sha512-{b64('prefix ' + GHO + ' suffix')}\n", "github_token"),
    "base64 of base64": ("c.txt", f"{b64(b64(GHU))}\n", "github_token"),
    "base64 wrapped": ("d.txt", wrapped(b64("config:\n  " + "padding " * 20 + GHR + "\n" + "more " * 30)) + "\n", "github_token"),
    "hex in code": ("src/keys.py", f"KEY = bytes.fromhex('{hexed(AWS)}')\n", "aws_access_key"),
    "hex 0x": ("src/keys.c", f"const char *k = 0x{hexed(GHP)};\n", "github_token"),
    "hex upper": ("h.txt", hexed(ANTHROPIC).upper() + "\n", "anthropic_key"),
    "split python": ("src/settings.py", f'TOKEN = (\n    "{GHP[:12]}"\n    "{GHP[12:]}"\n)\n', "github_token"),
    "split plus": ("src/client.js", f"const t = '{PAT[:20]}' +\n  '{PAT[20:50]}' +\n  '{PAT[50:]}';\n", "github_token"),
    "split json array": (
        "config/parts.json",
        json.dumps({"parts": [OPENAI[:10], OPENAI[10:30], OPENAI[30:]]}, indent=2) + "\n",
        "openai_key",
    ),
    "split bare lines": ("notes.txt", f"the token:\n{GHS_NEW[:200]}\n{GHS_NEW[200:400]}\n{GHS_NEW[400:]}\n", "github_token"),
    "json unicode escapes": ("config/app.json", '{"token": "' + json_escaped(GHP) + '"}\n', "github_token"),
    "json hex escapes": ("src/x.py", "k = '" + "".join(f"\\x{b:02x}" for b in ANTHROPIC.encode()) + "'\n", "anthropic_key"),
    "url encoded": ("link.md", "[x](https://e.invalid/?t=" + "".join(f"%{b:02X}" for b in GHO.encode()) + ")\n", "github_token"),
    "pem in yaml": ("k8s/secret.yaml", "data:\n  key: |\n" + "".join(f"    {line}\n" for line in PEM.splitlines()), "private_key"),
    "pem in json": ("creds.json", json.dumps({"type": "service_account", "private_key": PEM}) + "\n", "private_key"),
    "pem base64 (k8s)": ("k8s/tls.yaml", f"data:\n  tls.key: {b64(PEM)}\n", "private_key"),
    "pem hex": ("k.hex", hexed(PEM) + "\n", "private_key"),
    "pem split strings": ("src/k.py", f'K = "-----BEGIN " \\\n    "RSA PRIVATE KEY-----\\n{PEM_BODY[:20]}"\n', "private_key"),
    "ghs stateless plain": ("src/ci.sh", f"export GH_TOKEN={GHS_NEW}\n", "github_token"),
    "ghs stateless base64": ("src/ci.env.txt", f"{b64('Authorization: token ' + GHS_NEW)}\n", "github_token"),
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_each_encoded_secret_is_refused_naming_the_file(name: str) -> None:
    path, content, rule = CORPUS[name]
    violations = check_changes([ChangedFile(path, "A", content), ChangedFile("src/ok.py", "M", "x = 1\n")])
    assert [v.rule for v in violations] == [rule], (name, violations)
    [violation] = violations
    assert violation.path == path and path in str(violation)
    message = str(violation)
    for secret in (*ALL, PEM_BODY):
        assert secret not in message
        assert secret[-10:] not in message  # not even a fragment of the random part
    assert "\n" not in message


def test_the_message_says_how_the_secret_was_hidden() -> None:
    [violation] = check_changes([ChangedFile("v.yaml", "A", f"token: {b64(GHP)}\n")])
    assert violation.message == "adds a GitHub token (ghp_…, base64-encoded)"
    [violation] = check_changes([ChangedFile("p.py", "A", f'T = "{GHP[:9]}" + "{GHP[9:]}"\n')])
    assert violation.message == "adds a GitHub token (ghp_…, split across strings)"


@pytest.mark.parametrize(
    "content",
    [
        # Code that merely mentions the prefixes, or obviously fake short tokens.
        'assert token.startswith("ghp_")\nassert len(token) == 40\n',
        'PREFIXES = (\n    "ghp_",\n    "gho_",\n    "ghu_",\n    "ghs_",\n    "ghr_",\n    "github_pat_",\n)\n',
        'token = "ghp_" + "x" * 36\nother = "ghs_" + secrets.token_hex(18)\n',
        'FAKE = "ghp_1234"\nALSO = "ghp_xxxxxxxx"\nassert redact("ghs_tooshort") == "ghs_tooshort"\n',
        "def test_token_regex():\n    assert RULE.match('ghp_' + 'a' * 10) is None\n",
        'GITHUB_TOKEN_PREFIX = "ghp_"\nabcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123 = 1\n',
        # Ordinary encoded data: text, images, hashes, lockfiles, JWT-like structures.
        f"greeting: {b64('hello world, this is an ordinary sentence with nothing secret in it')}\n",
        f"icon: data:image/png;base64,{base64.b64encode(bytes(range(256)) * 4).decode()}\n",
        f"sha256 = '{'ab12' * 16}'\ncommit = '{'0123456789abcdef' * 2}{'01234567'}'\n",
        '"integrity": "sha512-' + base64.b64encode(bytes(range(64))).decode() + '",\n',
        (
            base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=")
            + "."
            + base64.urlsafe_b64encode(b'{"sub":"1234567890","name":"Jane"}').decode().rstrip("=")
            + ".c2lnbmF0dXJl\n"
        ),
        "escaped = 'tab\\there, newline\\n, unicode caf\\u00e9, path C:\\\\dir, slash \\/ ok'\n",
        "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1L\n-----END PUBLIC KEY-----\n",
        "for x in items:\n    pass\n    continue\nelse:\n    break\n",
        "url = 'https://example.com/search?q=caf%C3%A9%20au%20lait&x=%2F%2F'\n",
    ],
)
def test_ordinary_code_and_data_pass(content: str) -> None:
    assert check_changes([ChangedFile("tests/test_tokens.py", "A", content)]) == []


# -- secrets the bot holds ------------------------------------------------------------------


def known() -> tuple[str, str, str, list[KnownSecret]]:
    webhook = "whsec-" + secrets.token_hex(12)
    token = "ghs_" + secrets.token_hex(18)
    opaque = "opaque-" + secrets.token_hex(8)
    return webhook, token, opaque, [
        KnownSecret("the App's webhook secret", webhook),
        KnownSecret("a token the bot used for this attempt", token),
        KnownSecret("a token the bot used for this attempt", opaque),
        KnownSecret("the App's private key", PEM),
    ]


def test_known_secrets_are_refused_in_plain_base64_and_hex() -> None:
    webhook, token, opaque, holder = known()
    cases = {
        "a.txt": webhook,
        "b.txt": b64(webhook),
        "c.txt": base64.b64encode(b"xy" + webhook.encode()).decode(),  # another alignment
        "d.txt": hexed(webhook),
        "e.txt": hexed(webhook).upper(),
        "f.py": f'OPAQUE = "{opaque[:5]}" "{opaque[5:]}"',
        "g.txt": base64.urlsafe_b64encode(("x-access-token:" + opaque).encode()).decode(),
        "h.txt": "\n".join(PEM_BODY.splitlines()[1:3]),  # key lines without the header
        "i.txt": wrapped(PEM_BODY.replace("\n", ""), 70),  # rewrapped
        "j.txt": hexed(PEM),
    }
    changes = [ChangedFile(path, "A", text + "\n") for path, text in cases.items()]
    violations = GuardPolicy(known_secrets=holder).check_all(changes)
    by_path = {v.path: v for v in violations if v.rule == "known_secret"}
    assert sorted(by_path) == sorted(cases), violations
    assert "webhook secret" in by_path["b.txt"].message and "base64" in by_path["b.txt"].message
    assert "token the bot used" in by_path["g.txt"].message
    assert "private key" in by_path["h.txt"].message
    for violation in violations:
        for value in (webhook, token, opaque, b64(webhook), hexed(webhook)):
            assert value not in str(violation)
    # Without the known secrets these are ordinary text (j.txt is a PEM header: still refused).
    assert {v.path for v in check_changes(changes)} == {"j.txt"}


def test_known_secret_needles_skip_short_values_and_redundant_forms() -> None:
    needles = known_secret_needles([KnownSecret("x", "short"), KnownSecret("y", "   "), "a-longer-secret"])
    texts = [text for text, _, _ in needles]
    assert texts and "short" not in texts
    assert "a-longer-secret" in texts and hexed("a-longer-secret") in texts
    assert b64("a-longer-secret") in texts  # 15 bytes: whole base64 quanta
    assert not any(a != b and a in b for a in texts for b in texts)
    assert "value" not in repr(KnownSecret("l", "a-longer-secret")) and "a-longer" not in repr(
        GuardPolicy(known_secrets=["a-longer-secret"])
    )


# -- streaming: block boundaries, long lines, memory ---------------------------------------------


def stream_scan(policy: GuardPolicy, change: ChangedFile, diff_chunks: Iterator[bytes]) -> list:
    """Run a file's diff through the worker's parser and the file's scan, as git.py does."""
    scan = policy.scanner(change)
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    parser = AddedLinesParser(lambda: None, lambda data: scan.feed(decoder.decode(data)))
    for chunk in diff_chunks:
        parser.feed(chunk)
    parser.close()
    scan.feed(decoder.decode(b"", final=True))
    return scan.finish()


def as_diff(text: bytes, chunk: int = 65536) -> Iterator[bytes]:
    header = b"diff --git a/f b/f\nnew file mode 100644\n--- /dev/null\n+++ b/f\n@@ -0,0 +1,9 @@\n"
    body = b"+" + text.replace(b"\n", b"\n+")
    data = header + body[:-1] if body.endswith(b"+") else header + body
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


@pytest.mark.parametrize("offset", [-40, -20, -3, 0, 5])
def test_a_secret_across_a_block_boundary_is_found(offset: int) -> None:
    filler = ("x = 1\n" * (SCAN_BLOCK // 6 + 1))[: SCAN_BLOCK + offset]
    text = (filler + f"key = '{GHP}'\n" + "y = 2\n" * 100).encode()
    for chunk in (7, 4096, 65536):
        violations = stream_scan(GuardPolicy(), ChangedFile("f", "A"), as_diff(text, chunk))
        assert [v.rule for v in violations] == ["github_token"], (offset, chunk)


def test_a_secret_inside_a_huge_line_is_found() -> None:
    line = "var a=" + "'" + "q" * (3 * SCAN_BLOCK + 123) + "';" + f"var k='{b64(GHP)}';" + "z" * SCAN_BLOCK
    violations = stream_scan(GuardPolicy(), ChangedFile("min.js", "A"), as_diff(line.encode() + b"\n"))
    assert [v.rule for v in violations] == ["github_token"]


def test_a_16_mib_diff_of_short_lines_is_scanned_in_bounded_memory(peak_rss) -> None:
    """The diff of a 16 MiB file of short lines once took ~720 MiB of the server's memory."""
    line = b"+x = 'ab'\n"
    block = line * (65536 // len(line))

    def chunks() -> Iterator[bytes]:
        yield b"diff --git a/big.txt b/big.txt\nnew file mode 100644\n--- /dev/null\n+++ b/big.txt\n@@ -0,0 +1 @@\n"
        for _ in range(16 * 1024 * 1024 // len(block)):
            yield block
        yield f"+token = '{GHP}'\n".encode()  # at the very end: the whole file was scanned

    policy = GuardPolicy(known_secrets=["e2e-webhook-secret"], max_file_size=100 * 1024 * 1024)
    started = time.perf_counter()
    with peak_rss() as grown:
        violations = stream_scan(policy, ChangedFile("big.txt", "A", size=16 * 1024 * 1024), chunks())
    elapsed = time.perf_counter() - started
    assert [v.rule for v in violations] == ["github_token"]
    print(f"16 MiB of short lines: peak RSS +{grown['MiB']:.1f} MiB, {elapsed:.2f} s")
    assert grown["MiB"] < 24, grown


def test_decoding_cost_is_bounded() -> None:
    """Nested encodings are peeled to a fixed depth; the text scanned stays proportional."""
    deep = GHP
    for _ in range(5):
        deep = b64(deep)
    assert check_changes([ChangedFile("deep.txt", "A", deep + "\n")]) == []  # beyond the depth
    two = b64(b64(GHP))
    assert [v.rule for v in check_changes([ChangedFile("two.txt", "A", two + "\n")])] == ["github_token"]
    noise = "\n".join(base64.b64encode(os.urandom(57)).decode() for _ in range(20000))  # ~1.5 MB
    started = time.perf_counter()
    assert check_changes([ChangedFile("noise.txt", "A", noise)]) == []
    assert time.perf_counter() - started < 5


# -- redaction ------------------------------------------------------------------------------


def test_redact_takes_the_whole_stateless_installation_token() -> None:
    text = f"token {GHS_NEW}. and {GHS} and x-access-token:{GHS_NEW}"
    out = redact(text)
    assert out == "token [REDACTED]. and [REDACTED] and x-access-token:[REDACTED]"
    assert not re.search(r"[A-Za-z0-9_-]{20}", out.replace("x-access-token", ""))


def test_the_size_limit_names_the_file_its_size_and_the_limit() -> None:
    policy = GuardPolicy(max_file_size=10 * 1024 * 1024)
    [violation] = policy.check(ChangedFile("data/big.bin", "A", size=200 * 1024 * 1024))
    assert str(violation).startswith("data/big.bin: is 200 MiB, over the 10 MiB limit")
    assert "max_file_size_mb" in str(violation) and "\n" not in str(violation)
    [just_over] = policy.check(ChangedFile("f", "M", size=10 * 1024 * 1024 + 1))
    assert "10,485,761 bytes, over the 10,485,760-byte limit" in just_over.message
    assert policy.check(ChangedFile("f", "M", size=10 * 1024 * 1024)) == []
    assert policy.check(ChangedFile("f", "D")) == []
    # Too large: the content is not even looked at (the scan does not want it).
    assert not policy.scanner(ChangedFile("f", "A", size=10**9)).wants_text
    with pytest.raises(ValueError):
        GuardPolicy(max_file_size=0)

"""Pre-push guard: protected paths (gitignore-like globs), secrets, secret-looking files."""

from __future__ import annotations

import pytest

from bot.worker.guard import (
    ChangedFile,
    PathMatcher,
    check_changes,
    compile_pattern,
    describe,
    find_secrets,
    path_matches,
    redact,
)

# Secrets are assembled at runtime so this file never contains one literally.
GH = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"  # 36 chars after the prefix
GHS = "ghs_" + "Zz9" * 12
GH_PAT = (
    "github_pat_" + "11ABCDEFG0123456789_" + "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVW"
)
AWS_ID = "AKIA" + "IOSFODNN7EXAMPL1"
AWS_STS = "ASIA" + "Q3RT6YUIOPASDFG2"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "EXAMPLEKEY"
OPENAI = "sk-proj-" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6"
ANTHROPIC = "sk-ant-api03-" + "Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op8Qr9St0"
SLACK = "xoxb-" + "123456789012-123456789012-AbCdEfGhIjKlMnOp"
GOOGLE = "AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----\n"


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        (".github/workflows/**", ".github/workflows/ci.yml", True),
        (".github/workflows/**", ".github/workflows/sub/deploy.yaml", True),
        (".github/workflows/**", ".github/dependabot.yml", False),
        (".github/workflows/**", "docs/.github/workflows/ci.yml", False),  # anchored: has a slash
        (".github/workflows/**", ".github/workflowsX/ci.yml", False),
        (".github/workflows", ".github/workflows/ci.yml", True),  # a directory covers its content
        ("/.github/workflows/", ".github/workflows/ci.yml", True),
        ("**/secrets/**", "a/b/secrets/x.txt", True),
        ("**/secrets/**", "secrets/x.txt", True),
        ("secrets/", "deep/down/secrets/x.txt", True),  # no inner slash: matches at any depth
        ("secrets/", "secrets", False),  # trailing slash: directories only, not a file
        ("*.pem", "certs/server.pem", True),
        ("*.pem", "certs/server.pem.txt", False),
        ("/*.md", "README.md", True),
        ("/*.md", "docs/README.md", False),
        ("docs/*.md", "docs/a.md", True),
        ("docs/*.md", "docs/sub/a.md", False),
        ("a/**/b", "a/b", True),
        ("a/**/b", "a/x/y/b", True),
        ("a/**/b", "a/x/y/c", False),
        ("file?.txt", "file1.txt", True),
        ("file?.txt", "file12.txt", False),
        ("file[0-9].txt", "file7.txt", True),
        ("file[!0-9].txt", "file7.txt", False),
        ("file[!0-9].txt", "fileA.txt", True),
        ("Makefile", "sub/Makefile", True),
        ("\\#notes", "#notes", True),
        ("src/*", "src/a/b.py", True),  # src/a matches: the directory covers b.py
        ("src/*", "srcx/a.py", False),
    ],
)
def test_glob_matcher(pattern: str, path: str, expected: bool) -> None:
    assert path_matches(path, [pattern]) is expected


def test_matcher_normalises_paths_and_ignores_comments() -> None:
    assert compile_pattern("# a comment") is None
    assert compile_pattern("   ") is None
    assert path_matches("./.github/workflows/ci.yml", [".github/workflows/**"])
    assert not path_matches("", [".github/workflows/**"])
    assert not path_matches("x.py", [])


def test_negation_last_match_wins() -> None:
    matcher = PathMatcher([".github/**", "!.github/ISSUE_TEMPLATE/**", "# comment"])
    assert matcher.matches(".github/workflows/ci.yml")
    assert not matcher.matches(".github/ISSUE_TEMPLATE/bug.md")
    assert not matcher.matches("src/app.py")


def test_protected_path_violations_for_modify_delete_and_rename() -> None:
    changes = [
        ChangedFile(".github/workflows/ci.yml", "M", "on: push\n"),
        ChangedFile(".github/workflows/old.yml", "D"),
        ChangedFile("ci/moved.yml", "R", "", old_path=".github/workflows/release.yml"),
        ChangedFile("src/app.py", "M", "print('hi')\n"),
    ]
    violations = check_changes(changes)
    assert [(v.path, v.rule) for v in violations] == [
        (".github/workflows/ci.yml", "protected_path"),
        (".github/workflows/old.yml", "protected_path"),
        ("ci/moved.yml", "protected_path"),
    ]
    assert "deletes" in violations[1].message
    assert "moves" in violations[2].message and ".github/workflows/release.yml" in violations[2].message


def test_custom_protected_paths_replace_the_default() -> None:
    changes = [ChangedFile(".github/workflows/ci.yml", "M"), ChangedFile("infra/prod.tf", "A", "x")]
    violations = check_changes(changes, protected=["infra/**"])
    assert [(v.path, v.rule) for v in violations] == [("infra/prod.tf", "protected_path")]
    assert check_changes(changes, protected=[]) == []


@pytest.mark.parametrize(
    ("text", "rule", "hint"),
    [
        (PEM, "private_key", "-----BEGIN RSA PRIVATE KEY-----"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n", "private_key", "OPENSSH"),
        ("-----BEGIN PRIVATE KEY-----\nMIIE\n", "private_key", "BEGIN PRIVATE KEY"),
        ("-----BEGIN PGP PRIVATE KEY BLOCK-----\n", "private_key", "PGP"),
        (f'token = "{GH}"', "github_token", "ghp_…"),
        (f"GITHUB_TOKEN={GHS}", "github_token", "ghs_…"),
        (f"auth: {GH_PAT}", "github_token", "github_pat_…"),
        (f"key_id = '{AWS_ID}'", "aws_access_key", "AKIA…"),
        (f"key_id = '{AWS_STS}'", "aws_access_key", "ASIA…"),
        (f'aws_secret_access_key = "{AWS_SECRET}"', "aws_secret_key", "…"),
        (f"AWS_SECRET_KEY: {AWS_SECRET}", "aws_secret_key", "…"),
        (f'client = OpenAI(api_key="{OPENAI}")', "openai_key", "sk-proj-…"),
        (f"ANTHROPIC_API_KEY={ANTHROPIC}", "anthropic_key", "sk-ant-api03-…"),
        (f"slack = '{SLACK}'", "slack_token", "xoxb-…"),
        (f"maps_key = '{GOOGLE}'", "google_api_key", "AIza…"),
    ],
)
def test_each_secret_kind_is_found_and_never_shown(text: str, rule: str, hint: str) -> None:
    violations = check_changes([ChangedFile("src/config.py", "A", text)])
    assert [v.rule for v in violations] == [rule]
    message = violations[0].message
    assert hint in message
    for secret in (GH, GHS, GH_PAT, AWS_ID, AWS_STS, AWS_SECRET, OPENAI, ANTHROPIC, SLACK, GOOGLE):
        assert secret not in message
        assert secret[-8:] not in message  # not even a fragment of the random part
    assert "src/config.py" in str(violations[0])


def test_anthropic_key_is_not_also_reported_as_openai() -> None:
    rules = [rule.rule for rule, _ in find_secrets(ANTHROPIC)]
    assert rules == ["anthropic_key"]


@pytest.mark.parametrize(
    "text",
    [
        "def task_manager(): return 'disk-usage-report-generator-v2'",
        "sk-learn-is-a-common-misspelling-of-scikit",  # no digit: not a key
        "ghp_tooshort",
        "AKIAshort",
        "aws_secret_access_key = os.environ['AWS_SECRET_ACCESS_KEY']",
        "-----BEGIN PUBLIC KEY-----\nMIIBIjAN\n",
        "-----BEGIN CERTIFICATE-----\nMIIB\n",
        "xoxb-",
        "import os\nprint('hello world')\n",
    ],
)
def test_ordinary_text_is_not_a_secret(text: str) -> None:
    assert check_changes([ChangedFile("src/app.py", "M", text)]) == []


def test_ssh_key_file_names_are_secret_files() -> None:
    violations = check_changes(
        [
            ChangedFile("deploy/id_rsa", "A", "-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n"),
            ChangedFile("home/.ssh/id_ed25519", "A", ""),
            ChangedFile("home/.ssh/id_ed25519.pub", "A", "ssh-ed25519 AAAAC3Nza user@host"),
        ]
    )
    # One violation per file: the name says it all, the key content is not reported twice.
    assert [(v.path, v.rule) for v in violations] == [
        ("deploy/id_rsa", "secret_file"),
        ("home/.ssh/id_ed25519", "secret_file"),
    ]


def test_pem_files_only_with_a_private_key() -> None:
    violations = check_changes(
        [
            ChangedFile("certs/server.pem", "A", PEM),
            ChangedFile(
                "certs/ca.pem", "A", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
            ),
            ChangedFile("certs/tls.key", "A", "-----BEGIN EC PRIVATE KEY-----\nMHcC\n"),
        ]
    )
    assert [(v.path, v.rule) for v in violations] == [
        ("certs/server.pem", "secret_file"),
        ("certs/tls.key", "secret_file"),
    ]


def test_env_files_with_secret_values() -> None:
    real = "DEBUG=1\nexport DB_PASSWORD='s3cr3t-Pa55w0rd!'\nSTRIPE_SECRET_KEY=\"rk_live_abc123XYZ987\"\n"
    placeholders = (
        "API_TOKEN=\nSECRET_KEY=changeme\nDB_PASSWORD=<your password>\nAUTH_TOKEN=${AUTH_TOKEN}\n"
        "# PASSWORD=hunter2hunter2\nACCESS_KEY=xxxxxxxxxxxx\nNAME=patchwright-demo-app\n"
    )
    violations = check_changes(
        [
            ChangedFile(".env", "A", real),
            ChangedFile("config/.env.production", "A", real),
            ChangedFile(".env.example", "A", real),  # templates are meant to be committed
            ChangedFile("app/.env", "A", placeholders),
        ]
    )
    assert [(v.path, v.rule) for v in violations] == [
        (".env", "env_file"),
        ("config/.env.production", "env_file"),
    ]
    assert "DB_PASSWORD" in violations[0].message and "STRIPE_SECRET_KEY" in violations[0].message
    assert "s3cr3t" not in violations[0].message and "rk_live" not in violations[0].message


def test_deleting_a_secret_file_is_fine_and_one_violation_per_rule() -> None:
    assert check_changes([ChangedFile("deploy/id_rsa", "D")]) == []
    violations = check_changes([ChangedFile("a.txt", "A", f"{GH}\n{GHS}\n{AWS_ID}")])
    assert sorted(v.rule for v in violations) == ["aws_access_key", "github_token"]


def test_describe_lists_every_violation() -> None:
    violations = check_changes([ChangedFile(".github/workflows/ci.yml", "M"), ChangedFile("k", "A", GH)])
    text = describe(violations)
    assert text.startswith("Refusing to push")
    assert ".github/workflows/ci.yml" in text and "github_token" in text and GH not in text
    assert describe([]) == ""


def test_redact_explicit_secrets_and_token_patterns() -> None:
    text = f"cloning with {GHS} and password hunter2hunter2 and {OPENAI}; done"
    out = redact(text, ["hunter2hunter2", "", "   "])
    assert GHS not in out and "hunter2hunter2" not in out and OPENAI not in out
    assert out == "cloning with [REDACTED] and password [REDACTED] and [REDACTED]; done"
    # Only the secret value is replaced, not the assignment around it.
    assert redact(f'aws_secret_access_key = "{AWS_SECRET}"') == 'aws_secret_access_key = "[REDACTED]"'
    assert redact("nothing to hide", ["x" * 10]) == "nothing to hide"
    assert redact(f"token {GH}", [], patterns=False) == f"token {GH}"
    # Longer secrets first, so a secret containing another is fully removed.
    assert redact("abcdefgh-ijkl", ["abcdefgh", "abcdefgh-ijkl"], patterns=False) == "[REDACTED]"


# -- GitHub's stateless installation tokens (ghs_<app id>_<JWT>, ~520 characters, dots) ------


def _stateless_token() -> str:
    """Shaped like GitHub's stateless installation tokens; obviously fake, built at runtime."""
    import base64
    import json

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    header = part(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    payload = part(json.dumps({"iss": "123456", "inst": 98765432, "sub": "fake"}).encode())
    return f"ghs_123456_{header}.{payload}.{part(bytes(range(255, -1, -1)))}"


GHS_STATELESS = _stateless_token()
TOKENS_BY_PREFIX = {
    "ghp_": GH,
    "gho_": "gho_" + GH[4:],
    "ghu_": "ghu_" + GH[4:],
    "ghr_": "ghr_" + GH[4:],
    "ghs_": GHS,
    "github_pat_": GH_PAT,
    "ghs_ stateless": GHS_STATELESS,
}


@pytest.mark.parametrize(
    "template",
    [
        "export GH_TOKEN={t}\n",
        "git remote add origin https://x-access-token:{t}@github.com/o/r.git\n",
        '{{"token": "{t}"}}\n',
        # After an escape sequence: the letter before the token is not a word it belongs to.
        '{{"log": "cloned with:\\n{t}\\n"}}\n',
        "curl 'https://e.invalid/?q=token%3D{t}'\n",
        'headers = "Authorization:%20token%20{t}"\n',
    ],
)
@pytest.mark.parametrize("name", list(TOKENS_BY_PREFIX))
def test_a_commit_adding_any_github_token_is_refused(name: str, template: str) -> None:
    token = TOKENS_BY_PREFIX[name]
    violations = check_changes([ChangedFile("src/ci.py", "A", template.format(t=token))])
    assert [v.rule for v in violations] == ["github_token"], (name, template)
    assert token[-8:] not in violations[0].message
    assert name.split()[0] + "…" in violations[0].message


@pytest.mark.parametrize("name", list(TOKENS_BY_PREFIX))
def test_a_token_glued_to_a_word_is_not_one(name: str) -> None:
    token = TOKENS_BY_PREFIX[name]
    assert check_changes([ChangedFile("src/a.py", "A", f"name = 'x{token}'\n")]) == []

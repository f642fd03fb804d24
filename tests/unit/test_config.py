import base64
from pathlib import Path

import pytest

from bot.config import (
    DEFAULT_DATABASE_URL,
    ConfigError,
    RepoConfigError,
    decode_private_key,
    dump_repo_config,
    load_settings,
    parse_repo_config,
)

PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n"


def test_defaults_need_nothing():
    s = load_settings({}, env_file=None)
    assert s.database_url == DEFAULT_DATABASE_URL
    assert s.github_url == "https://api.github.com"
    assert s.webhook_secret is None
    assert s.is_sqlite


def test_patchwright_variables_are_read():
    s = load_settings(
        {
            "PATCHWRIGHT_APP_ID": "42",
            "PATCHWRIGHT_WEBHOOK_SECRET": "s3cret",
            "PATCHWRIGHT_GITHUB_URL": "http://127.0.0.1:9999/api/v3/",
            "PATCHWRIGHT_PORT": "8081",
            "PATCHWRIGHT_WORKERS": "4",
            "PATCHWRIGHT_LOG_FORMAT": "json",
            "UNRELATED": "x",
        },
        env_file=None,
    )
    assert s.app_id == 42
    assert s.require_webhook_secret() == "s3cret"
    assert s.github_url == "http://127.0.0.1:9999/api/v3"
    assert (s.port, s.workers, s.log_format) == (8081, 4, "json")


def test_probot_names_are_fallbacks_and_lose_to_ours():
    s = load_settings({"APP_ID": "7", "WEBHOOK_SECRET": "probot"}, env_file=None)
    assert s.app_id == 7 and s.require_webhook_secret() == "probot"
    s = load_settings(
        {"WEBHOOK_SECRET": "probot", "PATCHWRIGHT_WEBHOOK_SECRET": "ours"}, env_file=None
    )
    assert s.require_webhook_secret() == "ours"


def test_env_file_is_read_and_environment_wins(tmp_path: Path):
    env = tmp_path / ".env"
    env.write_text("PATCHWRIGHT_PORT=4000\nPATCHWRIGHT_APP_SLUG=from-file\n")
    s = load_settings({"PATCHWRIGHT_PORT": "5000"}, env_file=env)
    assert s.port == 5000
    assert s.app_slug == "from-file"


def test_secrets_do_not_show_in_repr():
    s = load_settings({"PATCHWRIGHT_WEBHOOK_SECRET": "hunter2", "PATCHWRIGHT_ADMIN_TOKEN": "tok"}, env_file=None)
    assert "hunter2" not in repr(s) and "tok'" not in repr(s)


def test_invalid_value_names_the_variable():
    with pytest.raises(ConfigError, match="PATCHWRIGHT_PORT"):
        load_settings({"PATCHWRIGHT_PORT": "eighty"}, env_file=None)
    with pytest.raises(ConfigError, match="PATCHWRIGHT_LOG_FORMAT"):
        load_settings({"PATCHWRIGHT_LOG_FORMAT": "xml"}, env_file=None)


def test_missing_webhook_secret_says_which_variable():
    with pytest.raises(ConfigError, match="PATCHWRIGHT_WEBHOOK_SECRET"):
        load_settings({}, env_file=None).require_webhook_secret()
    with pytest.raises(ConfigError, match="PATCHWRIGHT_APP_ID"):
        load_settings({}, env_file=None).require_app_id()


@pytest.mark.parametrize(
    "value",
    [PEM, PEM.replace("\n", "\\n"), base64.b64encode(PEM.encode()).decode()],
    ids=["pem", "escaped", "base64"],
)
def test_private_key_forms(value):
    s = load_settings({"PATCHWRIGHT_PRIVATE_KEY": value}, env_file=None)
    assert s.private_key_pem() == PEM


def test_private_key_from_path_and_errors(tmp_path: Path):
    key = tmp_path / "app.pem"
    key.write_text(PEM)
    assert load_settings({"PRIVATE_KEY_PATH": str(key)}, env_file=None).private_key_pem() == PEM
    with pytest.raises(ConfigError, match="PATCHWRIGHT_PRIVATE_KEY_PATH"):
        load_settings({"PATCHWRIGHT_PRIVATE_KEY_PATH": str(tmp_path / "nope.pem")}, env_file=None).private_key_pem()
    with pytest.raises(ConfigError, match="No private key"):
        load_settings({}, env_file=None).private_key_pem()
    with pytest.raises(ConfigError, match="does not hold a private key"):
        decode_private_key("not a key")


def test_repo_config_empty_means_defaults():
    cfg = parse_repo_config("")
    assert cfg.trigger_label == "patchwright"
    assert cfg.budget.max_attempts == 5
    assert cfg.protected_paths == [".github/workflows/**"]
    assert parse_repo_config("# only a comment\n") == cfg


def test_repo_config_full_file():
    cfg = parse_repo_config(
        """
trigger_label: ai-fix
agent:
  preset: command
  command: "python agent.py {prompt_file}"
  network: false
  by_label:
    hard: {preset: claude, model: opus}
budget: {max_attempts: 3, max_cost_usd: 2.5, daily_cost_usd: 20}
ci:
  ignore: [lint]
protected_paths: [".github/**", "secrets/*"]
pull_requests: {draft: true}
state_labels: true
allowed_bots: [dependabot]
command_aliases: ["@pw"]
"""
    )
    assert cfg.trigger_label == "ai-fix"
    assert cfg.agent.preset == "command" and cfg.agent.network is False
    assert cfg.agent.by_label["hard"].model == "opus"
    assert (cfg.budget.max_attempts, cfg.budget.daily_cost_usd) == (3, 20)
    assert cfg.ci.ignore == ["lint"]
    assert cfg.pull_requests.draft is True
    assert cfg.command_aliases == ["pw"]
    # the dump round-trips
    assert parse_repo_config(dump_repo_config(cfg)) == cfg


def test_repo_config_unknown_keys_report_their_path_and_line():
    with pytest.raises(RepoConfigError) as info:
        parse_repo_config("budget:\n  max_attempts: 0\n  max_atempts: 3\ntrigger_lable: x\n")
    found = {(p.path, p.line) for p in info.value.problems}
    assert found == {("budget.max_attempts", 2), ("budget.max_atempts", 3), ("trigger_lable", 4)}
    assert all(p.message for p in info.value.problems)
    assert "unknown key" in str(info.value)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("- a\n- b\n", "expected a mapping"),
        ("a: [\n", "not valid YAML"),
        ("agent:\n  preset: gpt\n", "agent.preset"),
        ("protected_paths:\n  - ok\n  - 3\n", "protected_paths.1"),
    ],
)
def test_repo_config_bad_input(text, fragment):
    with pytest.raises(RepoConfigError, match=fragment.replace(".", r"\.").replace("[", r"\[")):
        parse_repo_config(text)


def test_agent_credentials_may_live_in_the_settings_file(tmp_path) -> None:
    from bot.config import agent_environ

    env_file = tmp_path / ".env"
    env_file.write_text(
        "PATCHWRIGHT_WEBHOOK_SECRET=never-for-agents\nWEBHOOK_SECRET=nor-this\n"
        "ANTHROPIC_API_KEY=sk-ant-from-file\nOPENAI_BASE_URL=http://127.0.0.1:9/v1\n"
    )
    environ = agent_environ({"PATH": "/usr/bin", "OPENAI_BASE_URL": "http://127.0.0.1:8/v1"}, env_file)
    assert environ == {
        "PATH": "/usr/bin",
        "ANTHROPIC_API_KEY": "sk-ant-from-file",
        "OPENAI_BASE_URL": "http://127.0.0.1:8/v1",  # the process environment wins
    }
    assert agent_environ({"PATH": "/bin"}, tmp_path / "missing.env") == {"PATH": "/bin"}

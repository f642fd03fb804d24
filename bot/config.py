"""Settings (process environment and ``.env``) and RepoConfig (``.github/patchwright.yml``).

``Settings`` is built once, in :mod:`bot.__main__`, from a mapping the caller passes in
(normally ``os.environ``); nothing in this module reads the environment by itself.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bot.errors import ExitCode, UserError
from bot.logs import redact_url

ENV_PREFIX = "PATCHWRIGHT_"
#: Probot's variable names, accepted when the PATCHWRIGHT_ one is not set.
PROBOT_FALLBACKS = ("APP_ID", "PRIVATE_KEY", "PRIVATE_KEY_PATH", "WEBHOOK_SECRET")
DEFAULT_DATABASE_URL = "sqlite:///./patchwright.db"
#: The agent presets ``PATCHWRIGHT_AGENT`` may name (bot.agents.presets implements them).
AGENT_PRESETS = ("claude", "codex", "aider", "command")
#: The database URL schemes the store opens (bot.store.factory).
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres")
#: ``PATCHWRIGHT_*`` names that are not settings but are read by the test suite.
NOT_SETTINGS = ("PATCHWRIGHT_TEST_", "PATCHWRIGHT_SHARED_DIR", "PATCHWRIGHT_SCREENSHOT_DIR")
REPO_CONFIG_PATH = ".github/patchwright.yml"


PUBLIC_READ_API_OVERRIDDEN = (
    "PATCHWRIGHT_PRIVATE_READ_API=false is ignored: the server listens on {host}, beyond "
    "loopback, so the read API and the dashboard need the admin token anyway. Listen on "
    "127.0.0.1 (PATCHWRIGHT_HOST) to keep them public, or remove the setting."
)
PRIVATE_READ_API_WITHOUT_TOKEN = (
    "The read API and the dashboard are private but PATCHWRIGHT_ADMIN_TOKEN is not set, so "
    "nobody can read them: set PATCHWRIGHT_ADMIN_TOKEN to a long random string."
)
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost", "ip6-loopback"})


def is_loopback_host(host: str) -> bool:
    """Whether listening on ``host`` reaches this machine only: a loopback address (127.0.0.0/8,
    ``::1``, also IPv4-mapped) or ``localhost``. Anything else — ``0.0.0.0``, ``::``, an empty
    host (every interface), another address or name — is beyond loopback."""
    name = host.strip().lower()
    if name in _LOOPBACK_NAMES:
        return True
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


class ConfigError(UserError):
    """A setting is missing or wrong. The message names the variable and says what to do."""

    code = ExitCode.CONFIG


UNKNOWN_PRESET = "PATCHWRIGHT_AGENT={value} is not an agent preset: {hint}"
UNKNOWN_SETTING = "{name} ({where}) is not a setting and is ignored: {hint}"
UNSUPPORTED_DATABASE_URL = (
    "unsupported database URL {url!r} in PATCHWRIGHT_DATABASE_URL: set it to sqlite:///path.db "
    "or postgresql://user@host/db"
)
INVALID_SETTING = "{name}{shown} is not valid: {problem}; fix it in the settings file or the environment"
DAMAGED_KEY = (
    "{variable} holds a damaged private key ({problem}): download a new private key from the "
    "GitHub App's settings page"
)
NOT_RSA_KEY = (
    "{variable} holds a {kind} key, but GitHub Apps sign with RSA: use the .pem file GitHub "
    "generated for the App"
)


def did_you_mean(value: str, choices: Sequence[str], *, otherwise: str) -> str:
    """``did you mean X?`` for the choice closest to ``value`` (difflib), else ``otherwise``."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]}?" if close else otherwise


class Settings(BaseSettings):
    """Process settings, from ``PATCHWRIGHT_*`` variables (and Probot's names as fallbacks)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    app_id: int | None = Field(
        default=None, validation_alias=AliasChoices("PATCHWRIGHT_APP_ID", "APP_ID", "app_id")
    )
    private_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("PATCHWRIGHT_PRIVATE_KEY", "PRIVATE_KEY", "private_key"),
    )
    private_key_path: Path | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "PATCHWRIGHT_PRIVATE_KEY_PATH", "PRIVATE_KEY_PATH", "private_key_path"
        ),
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "PATCHWRIGHT_WEBHOOK_SECRET", "WEBHOOK_SECRET", "webhook_secret"
        ),
    )
    app_slug: str | None = Field(
        default=None, validation_alias=AliasChoices("PATCHWRIGHT_APP_SLUG", "app_slug")
    )
    github_url: str = Field(
        default="https://api.github.com",
        validation_alias=AliasChoices("PATCHWRIGHT_GITHUB_URL", "github_url"),
    )
    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        validation_alias=AliasChoices("PATCHWRIGHT_DATABASE_URL", "database_url"),
    )
    data_dir: Path = Field(
        default=Path("./patchwright-data"),
        validation_alias=AliasChoices("PATCHWRIGHT_DATA_DIR", "data_dir"),
    )
    #: Also write each attempt's whole agent output (redacted) to <data_dir>/logs/<task>-<attempt>.log;
    #: the database keeps the first and last lines of a long run either way.
    full_agent_logs: bool = Field(
        default=False, validation_alias=AliasChoices("PATCHWRIGHT_FULL_AGENT_LOGS", "full_agent_logs")
    )
    host: str = Field(default="127.0.0.1", validation_alias=AliasChoices("PATCHWRIGHT_HOST", "host"))
    port: int = Field(
        default=3000, ge=0, le=65535, validation_alias=AliasChoices("PATCHWRIGHT_PORT", "port")
    )
    workers: int = Field(
        default=2, ge=0, le=256, validation_alias=AliasChoices("PATCHWRIGHT_WORKERS", "workers")
    )
    agent: str = Field(default="claude", validation_alias=AliasChoices("PATCHWRIGHT_AGENT", "agent"))
    sandbox: Literal["auto", "bwrap", "none"] = Field(
        default="auto", validation_alias=AliasChoices("PATCHWRIGHT_SANDBOX", "sandbox")
    )
    agent_command: str | None = Field(
        default=None, validation_alias=AliasChoices("PATCHWRIGHT_AGENT_COMMAND", "agent_command")
    )
    sandbox_paths: str = Field(
        default="",
        description="Extra paths the sandboxed agent may read (os.pathsep-separated)",
        validation_alias=AliasChoices("PATCHWRIGHT_SANDBOX_PATHS", "sandbox_paths"),
    )
    agent_allow_hosts: str = Field(
        default="",
        description="Hosts (comma-separated `host` or `host:port`) every agent may reach although they are local",
        validation_alias=AliasChoices("PATCHWRIGHT_AGENT_ALLOW_HOSTS", "agent_allow_hosts"),
    )
    agent_env: str = Field(
        default="",
        description="More variable names (comma-separated) a repository's `agent.env` may pass to a `command` agent",
        validation_alias=AliasChoices("PATCHWRIGHT_AGENT_ENV", "agent_env"),
    )
    model_prices: str = Field(
        default="",
        description="Token prices per model, model=input/cached_input/output USD per million tokens, ';'-separated",
        validation_alias=AliasChoices("PATCHWRIGHT_MODEL_PRICES", "model_prices"),
    )
    agent_max_processes: int = Field(
        default=512, ge=8, validation_alias=AliasChoices("PATCHWRIGHT_AGENT_MAX_PROCESSES", "agent_max_processes")
    )
    agent_memory_mb: int = Field(
        default=8192, ge=64, validation_alias=AliasChoices("PATCHWRIGHT_AGENT_MEMORY_MB", "agent_memory_mb")
    )
    agent_cpu_seconds: int = Field(
        default=4 * 3600, ge=1, validation_alias=AliasChoices("PATCHWRIGHT_AGENT_CPU_SECONDS", "agent_cpu_seconds")
    )
    agent_file_size_mb: int = Field(
        default=1024, ge=1, validation_alias=AliasChoices("PATCHWRIGHT_AGENT_FILE_SIZE_MB", "agent_file_size_mb")
    )
    agent_disk_mb: int = Field(
        default=4096,
        ge=1,
        description="What one agent run may write: its checkout, home and temporary files (MB)",
        validation_alias=AliasChoices("PATCHWRIGHT_AGENT_DISK_MB", "agent_disk_mb"),
    )
    admin_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("PATCHWRIGHT_ADMIN_TOKEN", "admin_token")
    )
    #: As set: True, False or None (not set, or empty). What applies is :attr:`read_api_private`.
    private_read_api: bool | None = Field(
        default=None,
        validation_alias=AliasChoices("PATCHWRIGHT_PRIVATE_READ_API", "private_read_api"),
    )
    log_format: Literal["text", "json"] = Field(
        default="text", validation_alias=AliasChoices("PATCHWRIGHT_LOG_FORMAT", "log_format")
    )
    log_level: str = Field(
        default="INFO", validation_alias=AliasChoices("PATCHWRIGHT_LOG_LEVEL", "log_level")
    )
    handler_timeout_s: float = Field(
        default=120.0,
        gt=0,
        validation_alias=AliasChoices("PATCHWRIGHT_HANDLER_TIMEOUT", "handler_timeout_s"),
    )
    dispatch_stale_s: float = Field(
        default=300.0,
        gt=0,
        validation_alias=AliasChoices("PATCHWRIGHT_DISPATCH_STALE_SECONDS", "dispatch_stale_s"),
    )
    reconcile_interval_s: float = Field(
        default=300.0,
        gt=0,
        validation_alias=AliasChoices("PATCHWRIGHT_RECONCILE_INTERVAL", "reconcile_interval_s"),
    )
    payload_retention_days: int = Field(
        default=30,
        ge=0,
        description="Days a processed webhook delivery keeps its payload in the ledger (0: forever); "
        "the row and its outcome stay",
        validation_alias=AliasChoices("PATCHWRIGHT_PAYLOAD_RETENTION_DAYS", "payload_retention_days"),
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only what the caller hands in: `load_settings` passes the environment explicitly,
        # so building Settings never reads os.environ behind the caller's back.
        return (init_settings, dotenv_settings)

    @field_validator("github_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("agent")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in AGENT_PRESETS:
            choices = ", ".join(AGENT_PRESETS)
            hint = did_you_mean(value.lower(), AGENT_PRESETS, otherwise=f"choose one of {choices}")
            if hint.startswith("did you"):
                hint += f" (the presets: {choices})"
            raise ValueError(UNKNOWN_PRESET.format(value=value, hint=hint))
        return value

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        if value.partition("://")[0].lower() not in DATABASE_SCHEMES or "://" not in value:
            raise ValueError(UNSUPPORTED_DATABASE_URL.format(url=redact_url(value)))
        return value

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @field_validator("private_read_api", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    # -- the web surface -------------------------------------------------------------------
    @property
    def read_api_private(self) -> bool:
        """Whether the read API, the dashboard, the event stream and ``/metrics`` need the
        admin token (SPEC §9): when set so, and always when the server listens beyond
        loopback — there ``PATCHWRIGHT_PRIVATE_READ_API=false`` is overridden."""
        return self.private_read_api is True or not is_loopback_host(self.host)

    def startup_warnings(self) -> list[str]:
        """What ``serve`` warns about at start-up: a public read API it refused, a private
        one nobody can read."""
        warnings = []
        if self.private_read_api is False and self.read_api_private:
            warnings.append(PUBLIC_READ_API_OVERRIDDEN.format(host=self.host or "all addresses"))
        if self.read_api_private and (self.admin_token is None or not self.admin_token.get_secret_value()):
            warnings.append(PRIVATE_READ_API_WITHOUT_TOKEN)
        return warnings

    # -- checks used by the commands that need them ---------------------------------------
    def require_webhook_secret(self) -> str:
        if self.webhook_secret is None or not self.webhook_secret.get_secret_value():
            raise ConfigError(
                "PATCHWRIGHT_WEBHOOK_SECRET is not set. The server refuses to start without a "
                "webhook secret, because unsigned deliveries could be forged. Set "
                "PATCHWRIGHT_WEBHOOK_SECRET (or WEBHOOK_SECRET) to the secret of your GitHub App, "
                "or run `patchwright serve --dev` to generate one for local testing."
            )
        return self.webhook_secret.get_secret_value()

    def require_app_id(self) -> int:
        if self.app_id is None:
            raise ConfigError(
                "PATCHWRIGHT_APP_ID is not set. Set it (or APP_ID) to your GitHub App's id, "
                "shown on the App's settings page; `patchwright setup` writes it for you."
            )
        return self.app_id

    def private_key_pem(self) -> str:
        """The App's private key as PEM text, from the value (PEM, escaped or base64) or the path."""
        if self.private_key is not None and self.private_key.get_secret_value().strip():
            return decode_private_key(self.private_key.get_secret_value())
        if self.private_key_path is not None:
            try:
                text = self.private_key_path.read_text()
            except OSError as exc:
                raise ConfigError(
                    f"PATCHWRIGHT_PRIVATE_KEY_PATH points to {str(self.private_key_path)!r}, "
                    f"which cannot be read ({exc.strerror}). Fix the path or set "
                    "PATCHWRIGHT_PRIVATE_KEY to the key itself."
                ) from None
            return decode_private_key(text, variable="PATCHWRIGHT_PRIVATE_KEY_PATH")
        raise ConfigError(
            "No private key: set PATCHWRIGHT_PRIVATE_KEY (PEM text or base64 of it) or "
            "PATCHWRIGHT_PRIVATE_KEY_PATH (a .pem file); Probot's PRIVATE_KEY and "
            "PRIVATE_KEY_PATH work too."
        )

    def with_private_key_loaded(self) -> Settings:
        """These settings holding the App's private key itself, read from
        ``PATCHWRIGHT_PRIVATE_KEY_PATH`` now — once, when a long-running command starts — so
        the running process never reads the file again (replacing or deleting it afterwards
        changes nothing until a restart). The path stays known, so the agent's sandbox still
        hides the file. Raises :class:`ConfigError` when the file cannot be read or holds no
        key; without any key configured, returns these settings unchanged."""
        if self.private_key is not None and self.private_key.get_secret_value().strip():
            return self
        if self.private_key_path is None:
            return self
        return self.model_copy(update={"private_key": SecretStr(self.private_key_pem())})

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:")


_PEM_RE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.+?-----END [A-Z ]*PRIVATE KEY-----", re.S)


def decode_private_key(value: str, *, variable: str = "PATCHWRIGHT_PRIVATE_KEY") -> str:
    """Accept PEM text, PEM with literal ``\\n`` escapes (common in .env files), or base64 of PEM."""
    text = value.strip()
    if "\\n" in text and "\n" not in text:
        text = text.replace("\\n", "\n")
    if not text.startswith("-----BEGIN"):
        try:
            text = base64.b64decode(text, validate=False).decode("utf-8").strip()
        except (binascii.Error, UnicodeDecodeError):
            text = ""
    if not _PEM_RE.search(text):
        raise ConfigError(
            f"{variable} does not hold a private key: expected PEM text starting with "
            "'-----BEGIN RSA PRIVATE KEY-----' (or the base64 of it)."
        )
    return text + ("\n" if not text.endswith("\n") else "")


def agent_environ(environ: Mapping[str, str], env_file: Path | None = Path(".env")) -> dict[str, str]:
    """Where agents' variables come from: the process environment over the settings file.

    The agents' provider credentials and endpoints (``ANTHROPIC_API_KEY``, ``OPENAI_BASE_URL``…)
    may be put in ``.env`` under the CLIs' own names, like the ``PATCHWRIGHT_*`` settings; the
    sandbox then passes each agent only the ones its preset names. Settings themselves
    (``PATCHWRIGHT_*`` and Probot's names) are never among them.
    """
    from dotenv import dotenv_values

    from_file: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        # An empty value in the file is no value (`.env.example` lists every name empty).
        from_file = {k: v for k, v in dotenv_values(env_file).items() if v is not None and v.strip()}
    merged = {**from_file, **environ}
    return {
        k: v
        for k, v in merged.items()
        if not k.startswith(ENV_PREFIX) and k not in PROBOT_FALLBACKS
    }


def load_settings(
    environ: Mapping[str, str], *, env_file: Path | None = Path(".env"), **overrides: Any
) -> Settings:
    """Build Settings from ``environ`` (wins) and ``env_file`` (when it exists).

    An empty value is no value: the setting keeps its default (so a copy of ``.env.example``,
    which lists every name, loads). Names that are no setting are ignored here;
    :func:`unknown_settings` reports them. Raises :class:`ConfigError` naming the variable,
    one line per invalid value.
    """
    from_env = _setting_values(environ)
    from_file = _setting_values(read_env_file(env_file))
    # A setting in the environment, under either of its names, replaces the file's.
    for name in PROBOT_FALLBACKS:
        if name in from_env or ENV_PREFIX + name in from_env:
            from_file.pop(name, None)
            from_file.pop(ENV_PREFIX + name, None)
    picked: dict[str, Any] = {**from_file, **from_env}
    picked.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**picked)
    except ValidationError as exc:
        raise ConfigError(_settings_errors(exc)) from None


def read_env_file(env_file: Path | None) -> dict[str, str]:
    """The variables of a settings file (``KEY=value`` lines, as python-dotenv reads them);
    nothing when there is no such file."""
    from dotenv import dotenv_values

    if env_file is None or not env_file.is_file():
        return {}
    return {k: v for k, v in dotenv_values(env_file).items() if v is not None}


def _setting_values(source: Mapping[str, str]) -> dict[str, str]:
    """The ``PATCHWRIGHT_*`` and Probot variables of ``source`` that hold a value; a
    ``PATCHWRIGHT_`` name beats its Probot fallback regardless of mapping order."""
    picked = {
        k: v
        for k, v in source.items()
        if (k.startswith(ENV_PREFIX) or k in PROBOT_FALLBACKS) and v is not None and v.strip()
    }
    for name in PROBOT_FALLBACKS:
        if ENV_PREFIX + name in picked:
            picked.pop(name, None)
    return picked


def setting_names() -> tuple[str, ...]:
    """Every variable name that is a setting: the ``PATCHWRIGHT_*`` ones and Probot's."""
    names: list[str] = []
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else []
        names.extend(c for c in choices if isinstance(c, str) and (c.startswith(ENV_PREFIX) or c in PROBOT_FALLBACKS))
    return tuple(dict.fromkeys(names))


def unknown_settings(environ: Mapping[str, str], env_file: Path | None) -> list[str]:
    """A warning per ``PATCHWRIGHT_*`` name in ``environ`` or ``env_file`` that is no setting
    (a typo leaves the setting at its default), with the closest setting's name."""
    known = setting_names()
    warnings = []
    for source, names in (
        ("in the environment", list(environ)),
        (f"in {env_file}", list(read_env_file(env_file))),
    ):
        for name in names:
            if not name.startswith(ENV_PREFIX) or name in known or name.startswith(NOT_SETTINGS):
                continue
            suffixes = [k.removeprefix(ENV_PREFIX) for k in known if k.startswith(ENV_PREFIX)]
            hint = did_you_mean(
                name.removeprefix(ENV_PREFIX), suffixes, otherwise="every setting is listed in .env.example"
            ).replace("did you mean ", "did you mean " + ENV_PREFIX)
            warnings.append(UNKNOWN_SETTING.format(name=name, where=source, hint=hint))
    return warnings


def check_private_key(pem: str, *, variable: str = "PATCHWRIGHT_PRIVATE_KEY") -> None:
    """Raise :class:`ConfigError` unless ``pem`` (from :meth:`Settings.private_key_pem`) is an
    RSA private key that parses: what signing the App's JWT needs."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        problem = str(exc).split("\n")[0].split(". ")[0] or type(exc).__name__
        raise ConfigError(DAMAGED_KEY.format(variable=variable, problem=problem)) from None
    except Exception as exc:  # cryptography's UnsupportedAlgorithm and friends
        raise ConfigError(DAMAGED_KEY.format(variable=variable, problem=type(exc).__name__)) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        kind = type(key).__name__.removesuffix("PrivateKey").removeprefix("_") or "non-RSA"
        raise ConfigError(NOT_RSA_KEY.format(variable=variable, kind=kind))


def key_variable(settings: Settings) -> str:
    """The variable the App's private key comes from (for messages)."""
    if settings.private_key is not None and settings.private_key.get_secret_value().strip():
        return "PATCHWRIGHT_PRIVATE_KEY"
    return "PATCHWRIGHT_PRIVATE_KEY_PATH"


#: Settings whose value an error message never repeats (secrets; a URL with a password).
_UNSHOWN = frozenset({"private_key", "webhook_secret", "admin_token", "database_url", "agent_command"})


def _settings_errors(exc: ValidationError) -> str:
    """One line per invalid value: the variable, its value (unless secret) and the problem."""
    lines = []
    aliases = {
        choice: name
        for name, field in Settings.model_fields.items()
        if isinstance(field.validation_alias, AliasChoices)
        for choice in field.validation_alias.choices
        if isinstance(choice, str)
    }
    for err in exc.errors():
        given = str(err["loc"][0]) if err["loc"] else "?"
        field = aliases.get(given, given)
        name = given if given.startswith(ENV_PREFIX) or given in PROBOT_FALLBACKS else (
            ENV_PREFIX + field.upper()
        )
        if err["type"] == "value_error" and "error" in err.get("ctx", {}):
            lines.append(str(err["ctx"]["error"]))  # our own validator's whole sentence
            continue
        value = err.get("input")
        shown = "" if field in _UNSHOWN or not isinstance(value, str | int | float) else f"={value}"
        lines.append(INVALID_SETTING.format(name=name, shown=shown, problem=err["msg"]))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Per-repository configuration: .github/patchwright.yml on the default branch.
# --------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgentChoice(_Strict):
    preset: Literal["claude", "codex", "aider", "command"] | None = None
    model: str | None = None
    command: str | None = Field(
        default=None, description="Template for the `command` preset: {prompt_file} {workdir} {model}"
    )


class AgentConfig(AgentChoice):
    network: bool = Field(default=True, description="Allow the agent network access in the sandbox")
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts (`host` or `host:port`) the agent may reach on private networks (not the server's own addresses)",
    )
    env: list[str] = Field(
        default_factory=list,
        description="Variables the `command` preset passes to the agent (provider keys, or names the server allows)",
    )
    timeout_minutes: float = Field(default=30, gt=0, le=24 * 60)
    by_label: dict[str, AgentChoice] = Field(
        default_factory=dict, description="Agent choice for issues carrying a given label"
    )


class BudgetConfig(_Strict):
    max_attempts: int = Field(default=5, ge=1, le=100)
    max_cost_usd: float = Field(default=10.0, gt=0)
    daily_cost_usd: float | None = Field(default=None, gt=0)
    max_feedback_retries: int = Field(default=20, ge=0, le=1000)


class CIConfig(_Strict):
    ignore: list[str] = Field(default_factory=list, description="Check names that never count")
    failure_conclusions: list[Literal["failure", "timed_out", "startup_failure", "cancelled", "action_required", "stale"]] = Field(
        default_factory=lambda: ["failure", "timed_out", "startup_failure"]
    )
    settle_minutes: float = Field(default=10, ge=0, le=24 * 60)


class PullRequestConfig(_Strict):
    draft: bool = False


class RepoConfig(_Strict):
    """The schema of ``.github/patchwright.yml``. Unknown keys are errors."""

    trigger_label: str = Field(default="patchwright", min_length=1, max_length=50)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    ci: CIConfig = Field(default_factory=CIConfig)
    protected_paths: list[str] = Field(default_factory=lambda: [".github/workflows/**"])
    pull_requests: PullRequestConfig = Field(default_factory=PullRequestConfig)
    state_labels: bool = False
    allowed_bots: list[str] = Field(default_factory=list)
    command_aliases: list[str] = Field(default_factory=list)
    max_concurrent_tasks: int = Field(default=2, ge=1, le=100)
    max_file_size_mb: float = Field(
        default=10,
        gt=0,
        le=100,
        description="The largest file (MiB) the bot pushes; GitHub refuses files over 100 MiB",
    )

    @field_validator("command_aliases")
    @classmethod
    def _aliases(cls, value: list[str]) -> list[str]:
        return [a.lstrip("@") for a in value]


@dataclass(frozen=True)
class ConfigProblem:
    """One error in a repo config file: where it is and what is wrong."""

    path: str  # dotted key path, e.g. "budget.max_attempts" ("" for the whole file)
    line: int | None  # 1-based line in the file, when known
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        key = f"{self.path}: " if self.path else ""
        return f"{where}{key}{self.message}"


class RepoConfigError(Exception):
    def __init__(self, problems: list[ConfigProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def parse_repo_config(text: str) -> RepoConfig:
    """Parse and validate a ``.github/patchwright.yml``; an empty file means all defaults.

    Raises :class:`RepoConfigError` listing every problem with its key path and line.
    """
    try:
        data = yaml.safe_load(text) if text.strip() else {}
        root = yaml.compose(text) if text.strip() else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise RepoConfigError([ConfigProblem("", line, f"not valid YAML: {problem}")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RepoConfigError(
            [ConfigProblem("", 1, f"expected a mapping of settings, got {type(data).__name__}")]
        )
    try:
        return RepoConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            problems.append(ConfigProblem(".".join(loc), _line_of(root, err["loc"]), _message(err)))
        raise RepoConfigError(problems) from None


def _message(err: Mapping[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key (check the spelling; see `patchwright check-config --help`)"
    return str(err["msg"])


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The line of the YAML node at ``loc`` (or of its nearest existing parent)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    # An unknown key points at the key itself; a bad value at the value.
                    line = key.start_mark.line + 1
                    node = value
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def dump_repo_config(config: RepoConfig) -> str:
    """The effective configuration as YAML (defaults filled in)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, default_flow_style=False)

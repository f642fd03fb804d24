"""The deployment files (``deploy/``) and the operator's guide (``docs/operating.md``) held to the
code they describe, without Docker, systemd or a network:

- every ``patchwright …`` command they run parses with the real CLI (``bot.__main__._parser``):
  the Dockerfile's ENTRYPOINT + CMD, compose's ``command``, the units' ``ExecStart``, and the
  commands in the guide's code blocks (commands in prose must at least name a real subcommand);
- every ``PATCHWRIGHT_*`` name they mention is a setting of :class:`bot.config.Settings`, and the
  values they set load;
- the health checks ask a route the app serves, open without the admin token when the server
  listens beyond loopback (as in a container);
- the reverse proxies forward ``POST /webhook`` and nothing else; the systemd units leave out the
  options that stop bubblewrap; a worker never shares a data dir;
- the guide lists every migration and only real metric names.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from pydantic import AliasChoices

from bot.__main__ import _parser
from bot.app import create_app
from bot.config import Settings, load_settings
from bot.web.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
COMPOSE = DEPLOY / "compose.yaml"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
CADDYFILE = DEPLOY / "proxy" / "Caddyfile"
NGINX = DEPLOY / "proxy" / "nginx.conf"
GUIDE = ROOT / "docs" / "operating.md"
MIGRATIONS = ROOT / "bot" / "store" / "migrations"

#: Commands the guide may name while they are being added elsewhere; once the CLI has one, its
#: arguments must parse like any other's.
PENDING_COMMANDS = frozenset({"doctor", "prune"})
#: Settings the guide may name while they are being added (the retention setting's name is to be
#: confirmed by whoever adds `prune`).
PENDING_SETTINGS = frozenset({"PATCHWRIGHT_PAYLOAD_RETENTION_DAYS"})
#: A value for every ``${NAME}`` compose interpolates (the real ones come from deploy/.env).
SAMPLE_VALUE = "sample1"
#: What a settings file holds besides the values these files set: the secrets setup writes.
SECRETS = {"PATCHWRIGHT_WEBHOOK_SECRET": "whsec-sample", "PATCHWRIGHT_ADMIN_TOKEN": "admin-sample"}
#: systemd options that stop bubblewrap (user namespaces, a fresh /proc, JIT compilers).
BWRAP_BREAKERS = ("RestrictNamespaces", "PrivateUsers", "ProtectKernelTunables", "ProtectKernelLogs",
                  "MemoryDenyWriteExecute")
FALSE_VALUES = {"no", "false", "0", "off", ""}


# -- the CLI and the settings --------------------------------------------------------------------


def setting_names() -> frozenset[str]:
    """Every ``PATCHWRIGHT_*`` name :class:`Settings` reads."""
    names: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        names.update(c for c in choices if isinstance(c, str) and c.startswith("PATCHWRIGHT_"))
    assert "PATCHWRIGHT_DATA_DIR" in names and "PATCHWRIGHT_WORKERS" in names  # the lookup works
    return frozenset(names)


SETTINGS = setting_names()


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_word(args: list[str]) -> str | None:
    """The subcommand in ``args`` (after the global ``--env-file FILE``)."""
    i = 0
    while i < len(args):
        if args[i] == "--env-file":
            i += 2
        elif args[i].startswith("-"):
            i += 1
        else:
            return args[i]
    return None


def check_cli(args: list[str], *, where: str, full: bool = True) -> None:
    """``patchwright ARGS`` is a real command: it parses (``full``), or (prose) names a real
    subcommand and, for ``tasks``/``deliveries``, a real action."""
    parser = _parser()
    word = command_word(args)
    commands = subcommands(parser)
    if word in PENDING_COMMANDS and word not in commands:
        return
    if not full:
        assert word in commands, f"{where}: `patchwright {' '.join(args)}`: no command {word!r}"
        rest = args[args.index(word) + 1:]
        actions = subcommands(commands[word])
        if actions and rest and not rest[0].startswith("-"):
            assert rest[0] in actions, f"{where}: `patchwright {' '.join(args)}`: no action {rest[0]!r}"
        return
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser.parse_args(args)
    except SystemExit:
        pytest.fail(f"{where}: `patchwright {' '.join(args)}` does not parse: {err.getvalue().strip()}")


def check_names(text: str, *, where: str, pending: frozenset[str] = frozenset()) -> list[str]:
    """Every ``PATCHWRIGHT_*`` name in ``text`` is a setting (``PATCHWRIGHT_*`` and
    ``PATCHWRIGHT_AGENT_*``-style wildcards aside); returns the names found."""
    names = [n for n in re.findall(r"\bPATCHWRIGHT_[A-Z0-9_]*[A-Z0-9]\b", text)]
    unknown = sorted({n for n in names if n not in SETTINGS and n not in pending})
    assert not unknown, f"{where}: not settings: {unknown}"
    return names


def check_values(values: Mapping[str, str], *, where: str) -> Settings:
    """The ``PATCHWRIGHT_*`` values a file sets are settings, and load."""
    ours = {k: v for k, v in values.items() if k.startswith("PATCHWRIGHT_")}
    unknown = sorted(set(ours) - SETTINGS)
    assert not unknown, f"{where} sets what is not a setting: {unknown}"
    return load_settings({**SECRETS, **ours}, env_file=None)


# -- shell command lines -------------------------------------------------------------------------

_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SUDO_VALUE_OPTIONS = {"-u", "-g", "-C", "-D", "-h", "-p", "-U"}
_DOCKER_VALUE_OPTIONS = {
    "--name", "--restart", "--stop-timeout", "--env-file", "-e", "--env", "-v", "--volume", "-p",
    "--publish", "--security-opt", "--network", "-u", "--user", "-w", "--workdir", "--mount",
    "--cap-add", "--cap-drop", "--entrypoint", "--init-path", "--memory", "--cpus", "--label", "-l",
}  # fmt: skip


def simple_commands(line: str) -> Iterator[list[str]]:
    """The simple commands of a shell line (split at ``&&``, ``||``, ``;`` and ``|``)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    current: list[str] = []
    try:
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote in prose: not a command line
        return
    for token in tokens:
        if token and set(token) <= set(";&|"):
            if current:
                yield current
            current = []
        else:
            current.append(token)
    if current:
        yield current


def _skip_options(tokens: list[str], i: int, value_options: set[str]) -> int:
    while i < len(tokens) and tokens[i].startswith("-"):
        i += 2 if tokens[i] in value_options else 1
    return i


def patchwright_args(tokens: list[str]) -> list[str] | None:
    """The arguments ``patchwright`` gets from this simple command, or None when it runs
    something else: ``[VAR=x …] [sudo [-u U]] [env VAR=x …] …/patchwright ARGS``,
    ``docker run [OPTS] patchwright… ARGS``, ``docker compose run [OPTS] SERVICE ARGS``,
    ``docker [compose] exec [OPTS] TARGET patchwright ARGS``."""
    i = 0
    while True:
        while i < len(tokens) and _ASSIGNMENT.match(tokens[i]):
            i += 1
        if i < len(tokens) and tokens[i] == "sudo":
            i = _skip_options(tokens, i + 1, _SUDO_VALUE_OPTIONS)
            continue
        if i < len(tokens) and os.path.basename(tokens[i]) == "env":
            i += 1
            continue
        break
    if i >= len(tokens):
        return None
    program, rest = tokens[i], tokens[i + 1:]
    if os.path.basename(program) == "patchwright":
        return rest
    if program != "docker" or not rest:
        return None
    if rest[0] == "compose":
        rest = rest[1:]
    if not rest or rest[0] not in ("run", "exec"):
        return None
    verb = rest[0]
    j = _skip_options(rest, 1, _DOCKER_VALUE_OPTIONS)
    if j >= len(rest):
        return None
    target, after = rest[j], rest[j + 1:]
    if verb == "exec":
        return patchwright_args(after) if after else None
    # `run`: the arguments go to the image's entrypoint, `patchwright` (our image and services)
    if target.split(":")[0] in ("patchwright", "worker") and after:
        return after
    return None


def code_blocks(markdown: str) -> Iterator[tuple[str, list[str]]]:
    """(language, lines) of each fenced code block."""
    language, lines, inside = "", [], False
    for line in markdown.splitlines():
        fence = re.match(r"^\s*```(\S*)", line)
        if fence and not inside:
            language, lines, inside = fence.group(1), [], True
        elif fence and inside:
            inside = False
            yield language, lines
        elif inside:
            lines.append(line)


def command_lines(language: str, lines: list[str]) -> Iterator[str]:
    """The command lines of a shell or console block: continuations joined, console output and
    here-documents left out."""
    if language not in ("bash", "sh", "shell", "console"):
        return
    joined, current, heredoc = [], "", None
    for raw in lines:
        if heredoc is not None:
            if raw.strip() == heredoc:
                heredoc = None
            continue
        line = raw.strip()
        if language == "console":
            if not line.startswith("$ ") and not current:
                continue
            line = line[2:] if line.startswith("$ ") else line
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        joined.append(current + line)
        current = ""
        marker = re.search(r"<<-?\s*'?\"?([A-Za-z_]+)", line)
        if marker:
            heredoc = marker.group(1)
    yield from joined


def comment_commands(text: str) -> Iterator[str]:
    """The example command lines in a file's ``#`` comments — those indented under the ``#``
    (``#   patchwright setup …``), unlike prose — with continuations joined."""
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        body = stripped[1:] if stripped.startswith("#") else ""
        if not body.startswith("  ") and not current:
            current = ""
            continue
        line = body.strip()
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        yield current + line
        current = ""


def check_command_line(line: str, *, where: str, full: bool = True) -> int:
    found = 0
    for tokens in simple_commands(line):
        args = patchwright_args(tokens)
        if args is None or (not full and not args):
            continue
        check_cli(args, where=where, full=full)
        found += 1
    return found


def test_command_line_reading() -> None:
    """The reader finds what each launcher hands to patchwright, and nothing else."""
    cases = {
        "patchwright serve --dev": ["serve", "--dev"],
        "sudo -u patchwright /opt/patchwright/bin/patchwright --env-file /e tasks list": ["--env-file", "/e", "tasks", "list"],
        "PATCHWRIGHT_DATABASE_URL=sqlite:////x.db patchwright tasks list": ["tasks", "list"],
        "/usr/bin/env PATCHWRIGHT_DATA_DIR=/d /opt/patchwright/bin/patchwright worker": ["worker"],
        "docker run --rm -v a:/b --security-opt seccomp=unconfined patchwright demo": ["demo"],
        "docker compose run --rm patchwright migrate": ["migrate"],
        "docker exec patchwright patchwright tasks list": ["tasks", "list"],
        "docker compose exec -T patchwright patchwright tasks list": ["tasks", "list"],
        "systemctl restart patchwright": None,
        "journalctl -u patchwright -f": None,
        "docker compose logs patchwright": None,
        "docker exec patchwright sqlite3 /var/lib/patchwright/patchwright.db": None,
        "useradd --system patchwright": None,
    }
    for line, expected in cases.items():
        (tokens,) = simple_commands(line)
        assert patchwright_args(tokens) == expected, line
    assert [patchwright_args(t) for t in simple_commands("docker compose run --rm patchwright migrate && docker compose up -d")] == [["migrate"], None]


# -- the Dockerfile ------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, rest = current.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return out


def dockerfile() -> dict[str, list[str]]:
    by_keyword: dict[str, list[str]] = {}
    for keyword, rest in dockerfile_instructions(DOCKERFILE.read_text()):
        by_keyword.setdefault(keyword, []).append(rest)
    return by_keyword


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in dockerfile().get("ENV", []):
        for item in shlex.split(rest):
            name, sep, value = item.partition("=")
            assert sep, f"ENV {rest!r}: write NAME=value"
            env[name] = value
    return env


def healthcheck_paths(argv: list[str]) -> list[str]:
    return re.findall(r"http://127\.0\.0\.1:[^/]*(/[A-Za-z0-9_/-]+)", " ".join(argv))


def test_dockerfile_runs_a_real_command_as_a_non_root_user() -> None:
    instructions = dockerfile()
    (entrypoint,) = instructions["ENTRYPOINT"]
    (cmd,) = instructions["CMD"]
    argv = json.loads(entrypoint) + json.loads(cmd)
    if os.path.basename(argv[0]) in ("tini", "tini-static", "dumb-init"):
        argv = argv[1:]
        if argv and argv[0] == "--":
            argv = argv[1:]
    assert os.path.basename(argv[0]) == "patchwright", argv
    assert argv[1:] == ["serve"]
    check_cli(argv[1:], where="Dockerfile ENTRYPOINT + CMD")
    (user,) = instructions["USER"]
    assert user.split(":")[0] not in ("0", "root"), "the image must not run as root"
    args = {rest.split("=")[0]: rest for rest in instructions["ARG"]}
    for name in ("CLAUDE_CODE_VERSION", "CODEX_VERSION", "AIDER_VERSION"):
        assert args.get(name) == f'{name}=""', f"ARG {name} must exist and be empty by default"


def test_dockerfile_settings_are_real_and_load() -> None:
    env = image_env()
    check_names(DOCKERFILE.read_text(), where="deploy/Dockerfile")
    settings = check_values(env, where="deploy/Dockerfile ENV")
    instructions = dockerfile()
    assert f'["{env["PATCHWRIGHT_DATA_DIR"]}"]' in instructions["VOLUME"], "the data dir is a volume"
    assert str(settings.port) in instructions["EXPOSE"]
    assert settings.database_url.startswith("sqlite:////"), "an absolute path, inside the volume"
    assert settings.database_url.removeprefix("sqlite:///").startswith(env["PATCHWRIGHT_DATA_DIR"])


def test_dockerfile_copies_only_what_exists_and_the_context_lets_in() -> None:
    allowed = [line[1:] for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")]
    for rest in dockerfile()["COPY"]:
        sources = shlex.split(rest)[:-1]
        for source in sources:
            if source.startswith("--"):
                continue
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert any(a == source or a.startswith(source + "/") for a in allowed), (
                f"COPY {source}: {DOCKERIGNORE.name} keeps it out of the build context"
            )
    ignored = DOCKERIGNORE.read_text().splitlines()
    assert ignored[[i for i, line in enumerate(ignored) if not line.startswith("#")][0]] == "**", (
        "the context is an allowlist: .env and keys never enter it"
    )


class IdleStore:
    """Enough of a store for the web app's routes."""

    async def list_tasks(self, **kwargs):
        return []

    async def list_deliveries(self, **kwargs):
        return []


async def answers(settings: Settings, paths: list[str]) -> dict[str, int]:
    app = create_app(settings, store=IdleStore())  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as client:
        return {path: (await client.get(path)).status for path in paths}


async def test_image_health_check_asks_a_route_open_beyond_loopback() -> None:
    """The image listens beyond loopback, where the dashboard needs the admin token; the health
    check must still get its answer without one."""
    (healthcheck,) = dockerfile()["HEALTHCHECK"]
    _, sep, command = f" {healthcheck}".partition(" CMD ")
    assert sep, f"HEALTHCHECK without CMD: {healthcheck}"
    argv = json.loads(command)  # the exec form: no shell in between
    paths = healthcheck_paths(argv)
    assert paths == ["/healthz"], argv
    settings = check_values(image_env(), where="deploy/Dockerfile ENV")
    assert settings.read_api_private, "the image listens beyond loopback"
    status = await answers(settings, [*paths, "/readyz", "/", "/api/tasks", "/metrics"])
    assert status == {"/healthz": 200, "/readyz": 200, "/": 401, "/api/tasks": 401, "/metrics": 401}


# -- compose.yaml --------------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str) -> str:
    def one(match: re.Match[str]) -> str:
        operator, default = match.group(2), match.group(3)
        return default if operator in (":-", "-") else SAMPLE_VALUE

    return _INTERPOLATION.sub(one, value)


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def patchwright_services() -> dict[str, dict]:
    services = compose()["services"]
    ours = {name: s for name, s in services.items() if "build" in s or str(s.get("image", "")).startswith("patchwright")}
    assert set(ours) == {"patchwright", "worker"}, ours
    return ours


def test_compose_services_run_real_commands_with_real_settings() -> None:
    text = COMPOSE.read_text()
    check_names(text, where="deploy/compose.yaml")
    for name, service in patchwright_services().items():
        check_cli(service["command"], where=f"compose service {name}")
        env = {k: interpolate(str(v)) for k, v in service["environment"].items()}
        settings = check_values(env, where=f"compose service {name}")
        assert settings.database_url.startswith("postgresql://"), "compose runs on PostgreSQL"
        assert service["env_file"] == ".env"
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (COMPOSE.parent / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        build_args = set(service["build"]["args"])
        assert build_args == {"CLAUDE_CODE_VERSION", "CODEX_VERSION", "AIDER_VERSION"}
    for match in _INTERPOLATION.finditer(text):  # ${PATCHWRIGHT_…} read from .env are settings too
        if match.group(1).startswith("PATCHWRIGHT_"):
            assert match.group(1) in SETTINGS, match.group(0)


def test_compose_serve_leaves_agents_to_the_workers_and_each_worker_has_its_own_data_dir() -> None:
    services = patchwright_services()
    serve, worker = services["patchwright"], services["worker"]
    assert serve["command"] == ["serve"] and worker["command"] == ["worker"]
    assert serve["environment"]["PATCHWRIGHT_WORKERS"] == "0", "serve runs no agents when workers run apart"
    assert int(worker["environment"].get("PATCHWRIGHT_WORKERS", "2")) > 0
    data_dir = worker["environment"]["PATCHWRIGHT_DATA_DIR"]
    named = set(compose().get("volumes") or {})
    for mount in worker.get("volumes", []):
        source, _, target = str(mount).partition(":")
        assert not (source in named and target.split(":")[0] == data_dir), (
            "a named volume at the data dir would be shared by every worker replica"
        )
    assert any(str(m).endswith(f":{data_dir}") for m in serve["volumes"]), "serve keeps its data dir in a named volume"
    assert {"seccomp=unconfined", "apparmor=unconfined", "systempaths=unconfined"} <= set(worker["security_opt"])
    assert "security_opt" not in serve, "serve runs no agent: it keeps Docker's defaults"
    assert worker["healthcheck"] == {"disable": True}, "a worker serves no HTTP"
    for port in serve["ports"]:
        assert str(port).startswith("127.0.0.1:"), "published on the host's loopback only (behind the proxy)"
    assert compose()["services"]["postgres"]["healthcheck"]["test"]


async def test_compose_health_check_asks_a_route_open_beyond_loopback() -> None:
    serve = patchwright_services()["patchwright"]
    paths = healthcheck_paths(serve["healthcheck"]["test"])
    assert paths == ["/healthz"]
    env = {k: interpolate(str(v)) for k, v in serve["environment"].items()}
    settings = load_settings({**SECRETS, **env, "PATCHWRIGHT_DATABASE_URL": "sqlite:////tmp/unused.db"}, env_file=None)
    assert settings.read_api_private
    assert (await answers(settings, paths)) == {"/healthz": 200}


# -- systemd units -------------------------------------------------------------------------------


def unit_entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of a unit file, every occurrence (repeated keys such as
    ``Environment=`` add up, which configparser would merge away)."""
    out: list[tuple[str, str, str]] = []
    section, current = "", ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        line, current = current + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=value: {line!r}"
        out.append((section, key.strip(), value.strip()))
    return out


def specifiers(value: str) -> str:
    return value.replace("%i", "1").replace("%I", "1")


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_runs_a_real_command_with_real_settings(unit: Path) -> None:
    text = unit.read_text()
    entries = unit_entries(text)
    service = {key: value for section, key, value in entries if section == "Service"}
    check_names(text, where=unit.name)
    (exec_start,) = [v for s, k, v in entries if s == "Service" and k == "ExecStart"]
    tokens = shlex.split(specifiers(exec_start))
    args = patchwright_args(tokens)
    assert args is not None, f"{unit.name}: ExecStart does not run patchwright: {exec_start}"
    check_cli(args, where=f"{unit.name} ExecStart")
    env: dict[str, str] = {}
    for section, key, value in entries:
        if section == "Service" and key == "Environment":
            for item in shlex.split(specifiers(value)):
                name, _, val = item.partition("=")
                env[name] = val
    env.update(dict(t.split("=", 1) for t in tokens if _ASSIGNMENT.match(t)))  # `env VAR=x …` wins
    check_values(env, where=f"{unit.name} Environment")
    assert service["User"] not in ("root", "0") and "EnvironmentFile" in service
    assert service.get("KillMode") == "mixed", "SIGTERM to the server alone: it stops its agents itself"


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_hardening_leaves_bubblewrap_working(unit: Path) -> None:
    service = {key: value for section, key, value in unit_entries(unit.read_text()) if section == "Service"}
    for key in BWRAP_BREAKERS:
        assert service.get(key, "").lower() in FALSE_VALUES, f"{unit.name}: {key}= stops bubblewrap"
    assert service.get("ProcSubset", "all") != "pid", f"{unit.name}: ProcSubset=pid stops bubblewrap"
    families = service.get("RestrictAddressFamilies", "")
    if families and not families.startswith("~"):
        assert "AF_NETLINK" in families.split(), f"{unit.name}: bwrap needs AF_NETLINK for the agent's loopback"
    filters = service.get("SystemCallFilter", "")
    if filters and not filters.startswith("~"):
        assert "@mount" in filters.split(), f"{unit.name}: bwrap needs @mount"


def test_worker_template_gives_each_instance_its_own_data_dir() -> None:
    (template,) = [u for u in UNITS if u.name.endswith("@.service")]
    entries = unit_entries(template.read_text())
    (exec_start,) = [v for s, k, v in entries if k == "ExecStart"]
    tokens = shlex.split(exec_start)
    assert patchwright_args(tokens) == ["worker"]
    data_dirs = [t.split("=", 1)[1] for t in tokens if t.startswith("PATCHWRIGHT_DATA_DIR=")]
    assert data_dirs and "%i" in data_dirs[0], "set on the command line, per instance, after any settings file"


# -- reverse proxies -----------------------------------------------------------------------------


def blocks(text: str, header: str) -> list[tuple[str, str]]:
    """(header line, body) of every ``header … { … }`` block (braces balanced)."""
    out = []
    for match in re.finditer(rf"^[ \t]*({header}[^{{\n]*)\{{", text, re.M):
        depth, i = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        out.append((match.group(1).strip(), text[match.end():i - 1]))
    return out


def uncommented(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def test_nginx_forwards_post_webhook_and_nothing_else() -> None:
    text = uncommented(NGINX.read_text())
    locations = blocks(text, r"location\b")
    proxied = [(h, b) for h, b in locations if "proxy_pass" in b]
    assert [h for h, _ in proxied] == ["location = /webhook"], proxied
    body = proxied[0][1]
    assert re.search(r"limit_except\s+POST\s*\{\s*deny\s+all;\s*\}", body)
    assert "proxy_pass http://127.0.0.1:3000;" in body
    assert text.count("proxy_pass") == 1
    catch_all = [b for h, b in locations if h == "location /"]
    assert len(catch_all) == 2 and "return 404;" in catch_all[0], "everything else is answered by nginx"
    assert "ssl_certificate " in text and "listen 443 ssl" in text


def test_caddy_forwards_post_webhook_and_nothing_else() -> None:
    text = uncommented(CADDYFILE.read_text())
    (matcher,) = blocks(text, "@webhook")
    assert sorted(line.strip() for line in matcher[1].strip().splitlines()) == ["method POST", "path /webhook"]
    handles = blocks(text, "handle")
    proxied = [(h, b) for h, b in handles if "reverse_proxy" in b]
    assert [h for h, _ in proxied] == ["handle @webhook"], proxied
    assert "reverse_proxy 127.0.0.1:3000" in proxied[0][1]
    assert text.count("reverse_proxy") == 1
    assert any(h == "handle" and "respond 404" in b for h, b in handles), "everything else is answered by Caddy"


def test_deploy_files_name_only_real_settings_and_commands() -> None:
    for path in [DOCKERFILE, COMPOSE, *UNITS, CADDYFILE, NGINX]:
        text = path.read_text()
        where = str(path.relative_to(ROOT))
        check_names(text, where=where)
        for line in comment_commands(text):
            check_command_line(line, where=f"{where} (comment)")


# -- the operator's guide ------------------------------------------------------------------------


def guide() -> str:
    return GUIDE.read_text()


def test_guide_commands_are_real() -> None:
    text = guide()
    found = 0
    for language, lines in code_blocks(text):
        for line in command_lines(language, lines):
            found += check_command_line(line, where="docs/operating.md")
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`\n]+)`", prose):
        found += check_command_line(span, where="docs/operating.md (prose)", full=False)
    assert found > 40, f"only {found} patchwright commands found: is the reader broken?"


def test_guide_names_only_real_settings() -> None:
    names = check_names(guide(), where="docs/operating.md", pending=PENDING_SETTINGS)
    assert "PATCHWRIGHT_WORKERS" in names


def test_guide_names_only_real_metrics() -> None:
    registry = Metrics().registry
    known = set()
    for family in registry.collect():
        known.add(family.name)
        known.update(sample.name for sample in family.samples)
        if family.type == "counter":
            known.add(f"{family.name}_total")  # a counter's exposed name, also without samples yet
    named = set(re.findall(r"\bpatchwright_[a-z_]*[a-z]\b", guide()))
    assert named, "the guide lists the metrics"
    assert named <= known, sorted(named - known)


def test_guide_lists_every_migration() -> None:
    text = guide()
    for path in sorted((MIGRATIONS / "sqlite").glob("*.sql")):
        version, _, name = path.stem.partition("_")
        assert f"{version} `{name}`" in text, f"docs/operating.md, Upgrades: migration {path.stem} is not described"
        assert (MIGRATIONS / "postgres" / path.name).is_file(), f"{path.name}: no PostgreSQL twin"


def test_readme_points_at_the_guide() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docs/operating.md" in readme
    first_section = readme.split("\n## ", 2)[1]
    assert first_section.startswith("Quick start"), "the README still opens with the quick start"


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors for a document's headings."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", re.sub(r"```.*?```", "", markdown, flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_guide_links_resolve() -> None:
    text = guide()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        document = (GUIDE.parent / path).resolve() if path else GUIDE
        assert document.exists(), f"docs/operating.md links to {target}: no such file"
        if anchor:
            assert anchor in anchors(document.read_text()), f"docs/operating.md links to {target}: no such heading"

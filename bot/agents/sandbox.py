"""The agent's sandbox (SPEC §6.3): an environment allowlist and the bubblewrap command line.

The agent gets no GitHub credential and no patchwright setting: its environment is built
from scratch (PATH, a temporary HOME and TMPDIR, locale, TERM, and the provider key variables
its preset names). With bubblewrap it runs on an empty root that shows only the system's
programs and libraries, a few files of /etc and the paths its run needs (:class:`SandboxSpec`);
only the checkout, HOME and TMPDIR are writable; every namespace is its own, the network's too
(its only way out is the egress proxy, :mod:`bot.agents.egress`), and every capability is
dropped. The supervisor (:mod:`bot.agents.supervisor`) runs the agent inside, with its limits.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bot.agents import supervisor

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
_BASE_KEYS = ("PATH", "LANG", "LC_ALL", "TERM")
# Never handed to an agent, whatever a preset asks for.
_FORBIDDEN_KEY = re.compile(r"^(PATCHWRIGHT_|GITHUB_|GH_|GIT_)|^(GITHUB_TOKEN|GH_TOKEN)$", re.IGNORECASE)


_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """Whether a variable called ``name`` holds a secret (a key, token or password) rather
    than, say, an endpoint: its value is then redacted wherever it could show."""
    return bool(_SECRET_NAME.search(name))


class SandboxError(ValueError):
    """A preset asked for something the sandbox never gives an agent."""


def agent_env(
    *,
    home: str | os.PathLike[str],
    tmpdir: str | os.PathLike[str],
    passthrough: Mapping[str, str],
    preset_keys: Sequence[str],
) -> dict[str, str]:
    """The complete environment for an agent process, built from an allowlist.

    ``passthrough`` is where values come from (the worker's own environment, as handed down
    from ``__main__``); only PATH, LANG, LC_ALL, TERM and the ``preset_keys`` are read from
    it. HOME and TMPDIR are set to the given temporary directories.
    """
    for key in preset_keys:
        if _FORBIDDEN_KEY.search(key):
            raise SandboxError(f"the agent environment never includes {key}")
    env: dict[str, str] = {
        "PATH": passthrough.get("PATH") or DEFAULT_PATH,
        "HOME": os.fspath(home),
        "TMPDIR": os.fspath(tmpdir),
        "LANG": passthrough.get("LANG") or "C.UTF-8",
        "TERM": passthrough.get("TERM") or "dumb",
    }
    if passthrough.get("LC_ALL"):
        env["LC_ALL"] = passthrough["LC_ALL"]
    for key in preset_keys:
        value = passthrough.get(key)
        if value:
            env[key] = value
    return env


#: What every sandbox shows read-only: the system's programs and libraries (a symlink, as on
#: merged-/usr systems, is recreated as the same symlink) ...
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: ... and the few files of /etc that programs need to run, resolve users, find CA certificates
#: and locales. Nothing else of /etc (no shadow files, no deploy configuration, no npmrc).
ETC_ENTRIES = (
    "alternatives", "bash.bashrc", "ca-certificates", "ca-certificates.conf", "debian_version",
    "gai.conf", "gitconfig", "group", "host.conf", "hostname", "hosts", "inputrc", "issue",
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "locale.alias", "locale.conf", "localtime",
    "magic", "magic.mime", "mime.types", "nsswitch.conf", "os-release", "passwd", "pki",
    "profile", "protocols", "resolv.conf", "services", "ssl", "timezone", "vimrc",
)  # fmt: skip
#: Inside what is shown, never shown.
MASKED_SYSTEM_PATHS = ("/etc/ssl/private",)
#: Where the sandbox finds the bot's files of the run (a fresh tmpfs).
SANDBOX_RUN_DIR = "/run/patchwright"
SUPERVISOR_PATH = f"{SANDBOX_RUN_DIR}/supervisor.py"
PROXY_SOCKET_PATH = f"{SANDBOX_RUN_DIR}/proxy.sock"
STATUS_DIR = f"{SANDBOX_RUN_DIR}/status"
STATUS_FILE = "limit.json"
#: The port on the sandbox's own loopback where the supervisor relays to the egress proxy.
PROXY_PORT = 3128


@dataclass(frozen=True)
class SandboxLimits:
    """Per-run resource limits (set by the supervisor with setrlimit before the agent starts;
    the process count is also watched inside bubblewrap's PID namespace)."""

    max_processes: int = 512
    memory_mb: int = 8192
    cpu_seconds: int = 4 * 3600
    file_size_mb: int = 1024
    disk_mb: int = 4096  # the size of the sandbox's /tmp and /var/tmp (the runner watches the rest)

    def as_supervisor_arg(self) -> str:
        return supervisor.format_limits(
            {
                "processes": self.max_processes,
                "memory_mb": self.memory_mb,
                "cpu_seconds": self.cpu_seconds,
                "file_size_mb": self.file_size_mb,
            }
        )


@dataclass(frozen=True)
class SandboxSpec:
    """One sandboxed run: what it may write (``workdir``, ``home``, ``tmpdir``), what it may
    read besides the system (``read_only``: the repository cache's object store, the prompt,
    the agent's toolchain), what it must never see even inside those (``protected``: the server's data
    dir, key, database, env files, working directory), its way out (``proxy_socket``, the
    egress proxy's unix socket; without one the sandbox has no network at all) and where the
    supervisor reports a limit (``status_dir``)."""

    workdir: Path
    home: Path
    tmpdir: Path
    read_only: tuple[Path, ...] = ()
    protected: tuple[Path, ...] = ()
    proxy_socket: Path | None = None
    status_dir: Path | None = None
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    forward_ports: tuple[int, ...] = ()  # loopback ports tunnelled to the server's (a local model server)


def _is_within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def supervisor_script() -> Path:
    """The supervisor's source file (run as a file, inside the sandbox too)."""
    return Path(supervisor.__file__).resolve()


def python_paths(executable: str = sys.executable) -> list[Path]:
    """What an interpreter needs to run the supervisor (the standard library only): the
    installation prefix of the interpreter it resolves to."""
    real = Path(os.path.realpath(executable))
    prefix = Path(sys.base_prefix).resolve() if executable == sys.executable else _prefix_of(real)
    return [prefix] if prefix != Path("/") else [real]


def _prefix_of(path: Path) -> Path:
    """``/x/venv/bin/tool`` → ``/x/venv``; a file elsewhere → its directory."""
    return path.parent.parent if path.parent.name == "bin" else path.parent


def toolchain_paths(executable: str, *, path_env: str | None = None) -> list[Path]:
    """The installation an agent CLI runs from, to be shown read-only in the sandbox: the
    prefix of the command as found on PATH and of what it resolves to, and the same for the
    interpreter its ``#!`` line names (one level: a script in a virtual environment whose
    python is a symlink into another installation)."""
    found = shutil.which(executable, path=path_env) if os.sep not in executable else executable
    if not found:
        return []
    out: list[Path] = []
    queue = [found]
    for _ in range(3):
        if not queue:
            break
        current = queue.pop(0)
        for candidate in (Path(current), Path(os.path.realpath(current))):
            prefix = _prefix_of(candidate.absolute())
            if prefix not in out:
                out.append(prefix)
        interpreter = _shebang_interpreter(Path(os.path.realpath(current)), path_env)
        if interpreter:
            queue.append(interpreter)
    return out


def _shebang_interpreter(script: Path, path_env: str | None) -> str | None:
    try:
        with script.open("rb") as fh:
            first = fh.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode("utf-8", "replace").split()
    if not words:
        return None
    if os.path.basename(words[0]) == "env":
        words = [w for w in words[1:] if not w.startswith("-")]
        if not words:
            return None
        return shutil.which(words[0], path=path_env)
    return words[0]


def visible_paths(candidates: Sequence[Path], protected: Sequence[Path]) -> list[Path]:
    """The ``candidates`` that may be shown: existing, and not containing a protected
    directory (a toolchain found in the server's own directory is not worth the server's
    secrets; a protected *file* inside a shown path is masked instead). System paths are left
    out (already shown). Pure but for the file system checks."""
    out: list[Path] = []
    for raw in candidates:
        path = Path(os.path.abspath(raw))
        if not os.path.exists(path) or path == Path("/"):
            continue
        if any(_is_within(path, Path(system)) for system in SYSTEM_PATHS):
            continue
        if any(_is_within(p, path) and os.path.isdir(p) for p in protected):
            continue
        if path not in out:
            out.append(path)
    return out


def proxy_env(port: int = PROXY_PORT) -> dict[str, str]:
    """How the agent's HTTP clients find the egress proxy (both spellings: tools differ)."""
    url = f"http://127.0.0.1:{port}"
    env = {}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = url
    env["NO_PROXY"] = env["no_proxy"] = "localhost,127.0.0.1,::1"
    return env


def supervised_argv(
    argv: Sequence[str],
    *,
    limits: SandboxLimits,
    grace: float,
    parent: int = 0,
    status_file: str | None = None,
    script: str | None = None,
    python: str = sys.executable,
    count_processes: bool = False,
    bridge: bool = False,
    forward_ports: Sequence[int] = (),
) -> list[str]:
    """``argv`` run by the supervisor (see :mod:`bot.agents.supervisor`)."""
    out = [python, "-I", "-S", script or str(supervisor_script()), "--limits", limits.as_supervisor_arg()]
    out += ["--grace", f"{grace:g}"]
    if parent:
        out += ["--parent", str(parent)]
    if status_file:
        out += ["--status-file", status_file]
    if count_processes:
        out += ["--count-processes"]
    if bridge:
        out += ["--bridge-port", str(PROXY_PORT), "--proxy-socket", PROXY_SOCKET_PATH]
        for port in forward_ports:
            if port != PROXY_PORT:
                out += ["--forward", str(port)]
    return [*out, "--", *argv]


def bwrap_argv(
    argv: Sequence[str],
    spec: SandboxSpec,
    *,
    grace: float = 2.0,
    bwrap: str = "bwrap",
    python: str = sys.executable,
) -> list[str]:
    """``argv`` in bubblewrap, run by the supervisor.

    The root is empty but for the system's programs and libraries (:data:`SYSTEM_PATHS`), a
    few files of /etc, fresh /dev, /proc, /tmp and /run, the interpreter the supervisor runs
    on, and the spec's paths; every namespace is the sandbox's own (the network too: its only
    way out is the egress proxy), every capability is dropped, and it dies with its parent."""
    work, home, tmp = (Path(os.path.abspath(p)) for p in (spec.workdir, spec.home, spec.tmpdir))
    protected = [Path(os.path.abspath(p)) for p in spec.protected]
    out = [bwrap]
    for system in SYSTEM_PATHS:
        if os.path.islink(system):
            out += ["--symlink", os.readlink(system), system]
        elif os.path.isdir(system):
            out += ["--ro-bind", system, system]
    out += ["--dir", "/etc"]
    for name in ETC_ENTRIES:
        entry = f"/etc/{name}"
        if os.path.islink(entry):
            out += ["--symlink", os.readlink(entry), entry]
        elif os.path.exists(entry):
            out += ["--ro-bind", entry, entry]
    tmpfs_size = str(spec.limits.disk_mb * 1024 * 1024)
    out += ["--dev", "/dev", "--proc", "/proc", "--size", tmpfs_size, "--tmpfs", "/tmp"]
    out += ["--dir", "/var", "--size", tmpfs_size, "--tmpfs", "/var/tmp"]
    out += ["--size", str(1024 * 1024), "--tmpfs", "/run", "--dir", SANDBOX_RUN_DIR]
    shown = visible_paths([*python_paths(python), *spec.read_only], protected)
    for path in shown:
        out += ["--ro-bind", str(path), str(path)]
    # Second line of defence: a protected path inside anything shown is masked.
    bound = [Path(p) for p in SYSTEM_PATHS] + [Path("/etc")] + shown
    for path in [*protected, *(Path(p) for p in MASKED_SYSTEM_PATHS)]:
        if not any(_is_within(path, b) for b in bound) or not os.path.lexists(path):
            continue
        if os.path.isdir(path):
            out += ["--tmpfs", str(path)]
        else:
            out += ["--ro-bind", os.devnull, str(path)]
    for path in (tmp, home, work):
        out += ["--bind", str(path), str(path)]
    out += ["--ro-bind", str(supervisor_script()), SUPERVISOR_PATH]
    if spec.proxy_socket is not None:
        out += ["--bind", str(spec.proxy_socket), PROXY_SOCKET_PATH]
    if spec.status_dir is not None:
        out += ["--bind", str(spec.status_dir), STATUS_DIR]
    out += ["--remount-ro", "/"]  # the root's own tmpfs: /etc, /var, /run/patchwright stay read-only
    out += ["--unshare-all", "--cap-drop", "ALL", "--die-with-parent", "--new-session", "--chdir", str(work), "--"]
    out += supervised_argv(
        argv,
        limits=spec.limits,
        grace=grace,
        status_file=f"{STATUS_DIR}/{STATUS_FILE}" if spec.status_dir is not None else None,
        script=SUPERVISOR_PATH,
        python=os.path.realpath(python),  # a virtual environment's python links to it; only stdlib is needed
        count_processes=True,
        bridge=spec.proxy_socket is not None,
        forward_ports=spec.forward_ports,
    )
    return out


def read_limit_status(status_dir: Path | None) -> dict[str, object] | None:
    """The limit the supervisor ended the run for, if it did (see :mod:`bot.agents.supervisor`)."""
    if status_dir is None:
        return None
    try:
        data = json.loads((status_dir / STATUS_FILE).read_text(encoding="utf-8")[:4096])
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("limit"), str) else None


class BwrapProbe:
    """Whether bubblewrap is installed *and* works here (containers often forbid the
    namespaces it needs). Probed once per instance; keep one instance per process."""

    def __init__(self, bwrap: str = "bwrap", *, timeout: float = 10.0) -> None:
        self.bwrap = bwrap
        self.timeout = timeout
        self._available: bool | None = None
        self.problem = ""

    def available(self) -> bool:
        if self._available is None:
            self._available = self._probe()
        return self._available

    def _probe(self) -> bool:
        path = shutil.which(self.bwrap)
        if path is None:
            self.problem = f"{self.bwrap} is not on PATH"
            return False
        argv = [
            path, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "--unshare-all", "--cap-drop", "ALL", "--die-with-parent", "--new-session", "--", "true",
        ]  # fmt: skip
        try:
            done = subprocess.run(argv, capture_output=True, timeout=self.timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.problem = f"{self.bwrap} could not run: {exc}"
            return False
        if done.returncode != 0:
            self.problem = done.stderr.decode("utf-8", "replace").strip() or f"exit code {done.returncode}"
            return False
        return True


def bwrap_available(probe: BwrapProbe | None = None) -> bool:
    """Whether bubblewrap works here. Pass the process's :class:`BwrapProbe` to cache the
    answer; without one, this probes every time."""
    return (probe or BwrapProbe()).available()

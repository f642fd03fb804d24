"""The agent's sandbox (SPEC §6.3): an environment allowlist and the bubblewrap command line.

The agent gets no GitHub credential and no patchwright setting: its environment is built
from scratch (PATH, a temporary HOME and TMPDIR, locale, TERM, and the provider key variables
its preset names). With bubblewrap it also runs on a read-only root where only the checkout,
HOME and TMPDIR are writable, in its own namespaces, with the network only when allowed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
_BASE_KEYS = ("PATH", "LANG", "LC_ALL", "TERM")
# Never handed to an agent, whatever a preset asks for.
_FORBIDDEN_KEY = re.compile(r"^(PATCHWRIGHT_|GITHUB_|GH_|GIT_)|^(GITHUB_TOKEN|GH_TOKEN)$", re.IGNORECASE)


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


def bwrap_argv(
    argv: Sequence[str],
    *,
    workdir: str | os.PathLike[str],
    home: str | os.PathLike[str],
    tmpdir: str | os.PathLike[str],
    network: bool,
    extra_ro_binds: Sequence[str | os.PathLike[str]] = (),
    hidden: Sequence[str | os.PathLike[str]] = (),
    bwrap: str = "bwrap",
) -> list[str]:
    """``argv`` wrapped in bubblewrap: read-only root, fresh /dev and /proc, writable
    checkout, HOME and TMPDIR, every namespace unshared (network kept only if ``network``),
    killed with its parent, in a new session, starting in the checkout.

    ``hidden`` paths are masked before anything is bound: a directory by an empty tmpfs, a
    file by ``/dev/null`` (e.g. the data dir with other tasks' checkouts and the database, the
    App's private key). Paths bound afterwards (``extra_ro_binds``, the checkout, HOME,
    TMPDIR) stay visible even when they lie inside a hidden directory."""
    work, home_s, tmp_s = os.fspath(workdir), os.fspath(home), os.fspath(tmpdir)
    out = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for path in hidden:
        p = os.fspath(path)
        if os.path.isdir(p):
            out += ["--tmpfs", p]
        elif os.path.lexists(p):
            out += ["--ro-bind", os.devnull, p]
    for path in extra_ro_binds:
        p = os.fspath(path)
        out += ["--ro-bind", p, p]
    for path in (tmp_s, home_s, work):
        out += ["--bind", path, path]
    out += ["--unshare-all"]
    if network:
        out += ["--share-net"]
    out += ["--die-with-parent", "--new-session", "--chdir", work, "--"]
    out += list(argv)
    return out


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
            "--unshare-all", "--die-with-parent", "--new-session", "--", "true",
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

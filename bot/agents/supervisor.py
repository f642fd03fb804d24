"""The agent's supervisor: the first process of every agent run (SPEC §6.3).

It is run as a file by the interpreter (``python -I supervisor.py …``), inside the sandbox when
there is one, so it imports nothing but the standard library. It

- becomes a *child subreaper*: whatever the agent double-forks or daemonizes is re-parented
  to it, never to init, so when the agent ends (or is stopped, or the server dies) every
  descendant is killed and no process outlives the attempt;
- asks the kernel to send it SIGTERM when its parent (the server, or bubblewrap) dies;
- sets the agent's resource limits (processes, memory, CPU time, file size) before it runs it,
  and, inside bubblewrap's own PID namespace, counts the sandbox's processes (a fork bomb ends
  the run with a clear reason);
- in bubblewrap's own network namespace, listens on the sandbox's loopback and relays each
  connection to the bot's egress proxy through a unix socket (the agent's only way out);
- writes why it ended the run (a limit) to a status file the runner reads.

Its exit status is the agent's (128 + signal when a signal ended it).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_RELAY_CHUNK = 64 * 1024
_WATCH_INTERVAL_S = 0.05

#: Why the supervisor ended a run (the status file's ``limit``).
LIMIT_PROCESSES = "processes"
LIMIT_CPU = "cpu_seconds"
LIMIT_FILE_SIZE = "file_size"


def parse_limits(text: str) -> dict[str, int]:
    """``"processes=64,memory_mb=2048"`` → ``{"processes": 64, "memory_mb": 2048}``."""
    limits: dict[str, int] = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        limits[key.strip()] = int(value)
    return limits


def format_limits(limits: dict[str, int]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(limits.items()) if value)


def rlimits(limits: dict[str, int]) -> list[tuple[int, int]]:
    """The ``setrlimit`` calls for ``limits`` (RLIMIT_DATA for memory: it counts what a process
    writes to, not the address space it merely reserves, which JavaScript engines reserve by
    the gigabyte)."""
    out = []
    if limits.get("processes"):
        out.append((resource.RLIMIT_NPROC, limits["processes"]))
    if limits.get("memory_mb"):
        out.append((resource.RLIMIT_DATA, limits["memory_mb"] * 1024 * 1024))
    if limits.get("cpu_seconds"):
        out.append((resource.RLIMIT_CPU, limits["cpu_seconds"]))
    if limits.get("file_size_mb"):
        out.append((resource.RLIMIT_FSIZE, limits["file_size_mb"] * 1024 * 1024))
    return out


def limit_from_signal(sig: int) -> str | None:
    """The limit a process ran into, from the signal that ended it."""
    if sig == signal.SIGXCPU:
        return LIMIT_CPU
    if sig == signal.SIGXFSZ:
        return LIMIT_FILE_SIZE
    return None


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc, so also the orphans re-parented to us)."""
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat.rsplit(b")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(name))
    return found


def _process_count() -> int:
    try:
        return sum(1 for name in os.listdir("/proc") if name.isdigit())
    except OSError:
        return 0


class Supervisor:
    def __init__(self, argv: Sequence[str], *, limits: dict[str, int], status_file: str | None,
                 grace: float, count_processes: bool) -> None:  # fmt: skip
        self.argv = list(argv)
        self.limits = limits
        self.status_file = status_file
        self.grace = grace
        self.count_processes = count_processes
        self.agent: int | None = None
        self.agent_status: int | None = None
        self.ending = threading.Event()
        self.limit_hit: str | None = None
        self._lock = threading.Lock()

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self.agent = os.fork()
        if self.agent == 0:  # the agent: limits, then exec
            try:
                for which, value in rlimits(self.limits):
                    _, hard = resource.getrlimit(which)
                    if hard != resource.RLIM_INFINITY:
                        value = min(value, hard)
                    resource.setrlimit(which, (value, value))
                # Python ignores SIGPIPE and SIGXFSZ; an ignored signal stays ignored across exec.
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE, signal.SIGXFSZ):
                    signal.signal(sig, signal.SIG_DFL)
                os.execvp(self.argv[0], self.argv)
            except OSError as exc:
                sys.stderr.write(f"patchwright: could not start the agent ({self.argv[0]}): {exc}\n")
                os._exit(127)
        if self.count_processes and self.limits.get("processes"):
            threading.Thread(target=self._watch_processes, daemon=True).start()
        self._reap_until_agent_ends()
        self._end_everything()
        return self._exit_code()

    def _reap_until_agent_ends(self) -> None:
        while self.agent_status is None:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
            if pid == self.agent:
                self.agent_status = status

    def _exit_code(self) -> int:
        status = self.agent_status
        if status is None:
            return 1
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            limit = limit_from_signal(sig)
            if limit is not None and self.limit_hit is None:
                self._record(limit)
            return 128 + sig
        return os.WEXITSTATUS(status)

    # -- ending ----------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: object) -> None:
        if self.ending.is_set():
            return
        self.ending.set()
        threading.Thread(target=self._stop_agent, daemon=True).start()

    def _stop_agent(self) -> None:
        """SIGTERM to the agent's group and every child, then after the grace period SIGKILL
        to everything (the main thread is in waitpid and returns when the agent ends)."""
        for pid in [self.agent or 0, *_children(os.getpid())]:
            if pid:
                _kill_group_and_pid(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline and self.agent_status is None:
            time.sleep(0.02)
        self._kill_all()

    def _end_everything(self) -> None:
        """The agent is gone: kill every process left behind (they are all our descendants,
        and those whose parent died are our children now), until none is left."""
        self.ending.set()
        self._kill_all()
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                self._kill_all()
                time.sleep(0.01)

    def _kill_all(self) -> None:
        with self._lock:
            for _ in range(100):
                children = _children(os.getpid())
                if not children:
                    return
                for pid in children:
                    _kill_group_and_pid(pid, signal.SIGKILL)
                # Reap what died so that its children are re-parented to us and seen next round.
                try:
                    while os.waitpid(-1, os.WNOHANG)[0] > 0:
                        pass
                except ChildProcessError:
                    return
                time.sleep(0.005)

    def _watch_processes(self) -> None:
        limit = self.limits["processes"]
        while not self.ending.is_set():
            # In bubblewrap's PID namespace /proc lists the sandbox only: the supervisor,
            # bubblewrap's init and the agent's processes.
            if _process_count() - 2 > limit:
                self._record(LIMIT_PROCESSES)
                self.ending.set()
                self._kill_all()
                return
            time.sleep(_WATCH_INTERVAL_S)

    def _record(self, limit: str) -> None:
        if self.limit_hit is not None:
            return
        self.limit_hit = limit
        value = {
            LIMIT_PROCESSES: self.limits.get("processes"),
            LIMIT_CPU: self.limits.get("cpu_seconds"),
            LIMIT_FILE_SIZE: self.limits.get("file_size_mb"),
        }.get(limit)
        sys.stderr.write(f"patchwright: the agent hit its {limit} limit ({value}); the run was ended\n")
        sys.stderr.flush()
        if self.status_file:
            try:
                with open(self.status_file, "w", encoding="utf-8") as fh:
                    json.dump({"limit": limit, "value": value}, fh)
            except OSError:
                pass


def _kill_group_and_pid(pid: int, sig: int) -> None:
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


# -- the bridge to the egress proxy ------------------------------------------------------


def _relay(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(_RELAY_CHUNK)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass


def _splice(client: socket.socket, upstream: socket.socket) -> None:
    """Relay both ways until both sides are done, then close both."""
    back = threading.Thread(target=_relay, args=(upstream, client), daemon=True)
    back.start()
    _relay(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _open_tunnel(upstream: socket.socket, target: str) -> bytes:
    """CONNECT to ``target`` through the proxy on ``upstream``; what followed the answer's
    head. Raises OSError when the proxy refused."""
    upstream.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 65536:
        chunk = upstream.recv(4096)
        if not chunk:
            break
        head += chunk
    status = head.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or status[1] != b"200":
        raise OSError(f"the proxy refused {target}")
    return head.split(b"\r\n\r\n", 1)[1]


def _serve_connection(client: socket.socket, proxy_socket: str, target: str = "") -> None:
    """Relay one connection to the proxy; with a ``target`` (host:port), tunnel it there
    through the proxy first (the client never sees the proxy's answer)."""
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(proxy_socket)
        if target:
            rest = _open_tunnel(upstream, target)
            if rest:
                client.sendall(rest)
    except OSError:
        client.close()
        upstream.close()
        return
    _splice(client, upstream)


def _listen(port: int, handle: Callable[..., None], *args: str) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)

    def accept_loop() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(client, *args), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    return listener


def start_forward(port: int, proxy_socket: str) -> socket.socket:
    """Listen on 127.0.0.1:``port`` inside the sandbox and tunnel every connection to the same
    port on the server's loopback, through the proxy (which decides whether it may): a model
    server on the server's machine is then reached at the URL its settings name."""
    return _listen(port, _serve_connection, proxy_socket, f"127.0.0.1:{port}")


def start_bridge(port: int, proxy_socket: str) -> socket.socket:
    """Listen on 127.0.0.1:``port`` (the sandbox's own loopback) and relay every connection to
    the unix socket ``proxy_socket``."""
    return _listen(port, _serve_connection, proxy_socket)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="supervisor")
    parser.add_argument("--parent", type=int, default=0, help="the pid that must stay our parent")
    parser.add_argument("--limits", default="")
    parser.add_argument("--status-file", default=None)
    parser.add_argument("--grace", type=float, default=2.0)
    parser.add_argument("--count-processes", action="store_true")
    parser.add_argument("--bridge-port", type=int, default=0)
    parser.add_argument("--proxy-socket", default="")
    parser.add_argument("--forward", type=int, action="append", default=[], help="a loopback port to tunnel")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if args.parent and os.getppid() != args.parent:
        return 1  # the parent died before the death signal was armed
    if args.bridge_port and args.proxy_socket:
        start_bridge(args.bridge_port, args.proxy_socket)
        for port in args.forward:
            start_forward(port, args.proxy_socket)
    supervisor = Supervisor(
        command,
        limits=parse_limits(args.limits),
        status_file=args.status_file,
        grace=args.grace,
        count_processes=args.count_processes,
    )
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())

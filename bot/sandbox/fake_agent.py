"""A deterministic coding agent for the emulator, the end-to-end tests and ``patchwright demo``.

A standalone script (standard library only, no import of ``bot``), run like a real agent CLI::

    python fake_agent.py [--script FILE] [--out DIR] [PROMPT_FILE]

through the ``command`` preset (the prompt also arrives on stdin), or as the executable of the
``claude`` preset: it accepts Claude Code's flags and, with ``--output-format stream-json``,
writes Claude-like JSON events (``system``/``init`` with a session id, ``result`` with
``total_cost_usd``), so cost streaming, sessions and ``--resume`` can be exercised.

What it does is chosen by a JSON *script*: ``--script FILE``, else ``.fake-agent.json`` at the
root of the checkout it runs in. The script maps an attempt number (``"2"``), an attempt kind
(``"first"``, ``"ci_failure"``, ``"feedback"``, ``"merge_conflict"``, ``"answers"``,
``"manual"``, ``"transient"``) or ``"default"`` to a list of steps; the attempt number and kind
are read from the prompt ("Attempt 2 of 6 (feedback)."). Without a script or a matching entry
it writes ``fake-agent/attempt-<n>.md`` and signals done.

Steps (one key each; relative paths are relative to the checkout, ``{out}`` in a path is the
``--out`` directory):

- ``{"write": {"path": "content" | null}}``: write files (``null`` deletes)
- ``{"append": {"path": "text"}}``, ``{"replace": {"path": [["old", "new"], ...]}}``
- ``{"resolve_conflicts": "ours" | "theirs" | "both"}``: resolve every conflict-marked file
- ``{"done": "summary"}``, ``{"questions": ["...", ...]}``, ``{"error": "message"}``,
  ``{"signal": {...}}``: write ``.patchwright/signal.json``
- ``{"cost": 0.25}``: add to the running cost and report the total (a Claude-like ``result``
  event in stream-json mode, a ``Cost:`` line otherwise)
- ``{"emit": {...} | "text"}``: print a raw JSON event or line (an emitted
  ``result`` event replaces the final one); ``{"print": "..."}``,
  ``{"stderr": "..."}``
- ``{"sleep": seconds}``, ``{"hang": seconds | null}`` (null: forever),
  ``{"ignore_sigterm": true}``
- ``{"touch": "path"}``, ``{"wait_for": "path", "timeout": 60}``: rendezvous with a test
- ``{"dump_env": "path"}``: the environment as JSON
- ``{"probe": {"write": [paths], "read": [paths], "list": [dirs], "connect": ["host:port"],
  "unix": [socket paths], "proxy": ["host:port"], "report": "path"}}``: try each operation
  (``proxy``: a CONNECT through ``HTTPS_PROXY``, then "ping") and write what happened as JSON
  (sandbox tests)
- ``{"run": ["git", "add", "-A"], "report": "path", "check": false, "timeout": 60}``: run a
  command in the checkout (with the agent's environment) and append what happened
  (``argv``, ``exit``, ``stdout``, ``stderr``) to the JSON list in ``report`` (default
  ``run-report.json``); with ``check``, a failure stops the agent with exit code 1
- ``{"exit": code}``: stop here with that exit code

With ``--out DIR`` every run also records ``DIR/run-<attempt>.json`` (argv, environment,
working directory, prompt, resumed session) — where the sandbox lets it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

SCRIPT_NAME = ".fake-agent.json"
SIGNAL_PATH = ".patchwright/signal.json"
_ATTEMPT_LINE = re.compile(r"^Attempt (\d+)(?: of \d+)? \(([a-z_]+)\)\.", re.MULTILINE)
_MARKER = re.compile(r"^(<{7}|={7}|>{7}|\|{7})(?: |$)")
_SKIP_DIRS = {".git", ".patchwright"}


def command_template(python: str | None = None, *, script: str | None = None, out: str | None = None) -> str:
    """A ``command`` preset template that runs this file with ``python`` (default: the
    current interpreter)."""
    parts = [python or sys.executable, str(Path(__file__).resolve())]
    if script:
        parts += ["--script", script]
    if out:
        parts += ["--out", out]
    quoted = " ".join(_shell_quote(p) for p in parts)
    return quoted + " {prompt_file}"


def _shell_quote(text: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_./:=+-]+", text):
        return text
    return "'" + text.replace("'", "'\"'\"'") + "'"


def attempt_of(prompt: str) -> tuple[int, str]:
    """(attempt number, kind) from the prompt's "Attempt n of m (kind)." line."""
    found = _ATTEMPT_LINE.search(prompt)
    if found is None:
        return 1, "first"
    return int(found.group(1)), found.group(2)


def steps_for(script: Any, attempt: int, kind: str) -> list[dict[str, Any]] | None:
    """The steps the script gives this attempt, or None."""
    if not isinstance(script, dict):
        return None
    for key in (str(attempt), kind, "default"):
        if key in script:
            entry = script[key]
            if isinstance(entry, dict):
                return [entry]
            if isinstance(entry, list):
                return [step for step in entry if isinstance(step, dict)]
    return None


def resolve_markers(text: str, side: str) -> str:
    """``text`` with each conflict block replaced by ``ours``, ``theirs`` or ``both``."""
    out: list[str] = []
    ours: list[str] = []
    theirs: list[str] = []
    state = ""
    for line in text.splitlines(keepends=True):
        marker = _MARKER.match(line)
        kind = marker.group(1)[0] if marker else ""
        if kind == "<" and not state:
            state, ours, theirs = "ours", [], []
        elif kind == "|" and state == "ours":
            state = "base"
        elif kind == "=" and state in ("ours", "base"):
            state = "theirs"
        elif kind == ">" and state == "theirs":
            chosen = {"ours": ours, "theirs": theirs, "both": ours + theirs}[side]
            out.extend(chosen)
            state = ""
        elif state == "ours":
            ours.append(line)
        elif state == "theirs":
            theirs.append(line)
        elif state == "base":
            continue
        else:
            out.append(line)
    return "".join(out)


class Agent:
    def __init__(self, args: argparse.Namespace, prompt: str, workdir: Path) -> None:
        self.args = args
        self.prompt = prompt
        self.workdir = workdir
        self.attempt, self.kind = attempt_of(prompt)
        self.out = Path(args.out) if args.out else None
        self.claude = args.output_format == "stream-json"
        self.session = args.resume or f"fake-{uuid.uuid4().hex[:12]}"
        self.cost = 0.0
        self.summary = ""
        self.result_emitted = False  # the script wrote its own final result event

    # -- paths and output ---------------------------------------------------------------
    def path(self, raw: str) -> Path:
        text = raw.replace("{out}", str(self.out) if self.out else "")
        p = Path(text)
        return p if p.is_absolute() else self.workdir / p

    def emit(self, event: dict[str, Any]) -> None:
        print(json.dumps(event), flush=True)

    def record(self) -> None:
        if self.out is None:
            return
        data = {
            "argv": sys.argv,
            "env": dict(os.environ),
            "cwd": os.getcwd(),
            "attempt": self.attempt,
            "kind": self.kind,
            "pid": os.getpid(),
            "resume": self.args.resume or "",
            "model": self.args.model or "",
            "prompt": self.prompt,
        }
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / f"run-{self.attempt}.json").write_text(json.dumps(data, indent=1))
        except OSError:
            pass  # e.g. outside the sandbox's writable paths

    def write_signal(self, payload: dict[str, Any]) -> None:
        target = self.workdir / SIGNAL_PATH
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(payload))
        if payload.get("status") == "done":
            self.summary = str(payload.get("summary") or "")

    # -- steps ----------------------------------------------------------------------------
    def run(self, steps: list[dict[str, Any]]) -> int:
        if self.claude:
            self.emit(
                {
                    "type": "system",
                    "subtype": "init",
                    "session_id": self.session,
                    "model": self.args.model or "fake",
                }
            )
        for step in steps:
            code = self.step(step)
            if code is not None:
                return self.finish(code)
        return self.finish(0)

    def finish(self, code: int) -> int:
        if self.claude and not self.result_emitted:
            self.emit(
                {
                    "type": "result",
                    "subtype": "success" if code == 0 else "error_during_execution",
                    "is_error": code != 0,
                    "total_cost_usd": round(self.cost, 6),
                    "session_id": self.session,
                    "result": self.summary or ("done" if code == 0 else "failed"),
                    "num_turns": 1,
                }
            )
        elif not self.claude:
            # What the run cost in all (nothing, unless scripted): the command preset reads it.
            print(f"Cost: ${self.cost:.4f} total", flush=True)
        return code

    def step(self, step: dict[str, Any]) -> int | None:
        if "write" in step:
            for rel, content in step["write"].items():
                target = self.path(rel)
                if content is None:
                    if target.exists():
                        target.unlink()
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(str(content))
        elif "append" in step:
            for rel, text in step["append"].items():
                target = self.path(rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("a") as f:
                    f.write(str(text))
        elif "replace" in step:
            for rel, pairs in step["replace"].items():
                target = self.path(rel)
                text = target.read_text()
                items = pairs.items() if isinstance(pairs, dict) else pairs
                for old, new in items:
                    text = text.replace(old, new)
                target.write_text(text)
        elif "resolve_conflicts" in step:
            self.resolve(str(step["resolve_conflicts"] or "both"))
        elif "done" in step:
            self.write_signal({"status": "done", "summary": str(step["done"])})
        elif "questions" in step:
            questions = [{"id": f"q{i}", "question": str(q)} for i, q in enumerate(step["questions"], 1)]
            self.write_signal({"status": "questions", "questions": questions})
        elif "error" in step:
            self.write_signal({"status": "error", "error": str(step["error"])})
        elif "signal" in step:
            self.write_signal(dict(step["signal"]))
        elif "cost" in step:
            self.cost += float(step["cost"])
            if self.claude:
                self.emit(
                    {
                        "type": "result",
                        "subtype": "success",
                        "is_error": False,
                        "total_cost_usd": round(self.cost, 6),
                        "session_id": self.session,
                        "result": "",
                    }
                )
            else:
                print(f"Cost: ${self.cost:.4f} so far", flush=True)
        elif "emit" in step:
            value = step["emit"]
            if isinstance(value, dict) and value.get("type") == "result":
                self.result_emitted = True
            print(value if isinstance(value, str) else json.dumps(value), flush=True)
        elif "print" in step:
            print(str(step["print"]), flush=True)
        elif "stderr" in step:
            print(str(step["stderr"]), file=sys.stderr, flush=True)
        elif "sleep" in step:
            time.sleep(float(step["sleep"]))
        elif "hang" in step:
            limit = step["hang"]
            deadline = None if limit is None else time.monotonic() + float(limit)
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.05)
        elif "ignore_sigterm" in step:
            if step["ignore_sigterm"]:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
        elif "touch" in step:
            target = self.path(str(step["touch"]))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        elif "wait_for" in step:
            target = self.path(str(step["wait_for"]))
            deadline = time.monotonic() + float(step.get("timeout", 60))
            while not target.exists():
                if time.monotonic() > deadline:
                    print(f"fake agent: gave up waiting for {target}", file=sys.stderr, flush=True)
                    return 3
                time.sleep(0.05)
        elif "dump_env" in step:
            target = self.path(str(step["dump_env"]))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(dict(os.environ), indent=1))
        elif "probe" in step:
            self.probe(step["probe"])
        elif "run" in step:
            return self.run_command(step)
        elif "exit" in step:
            return int(step["exit"])
        else:
            print(f"fake agent: unknown step {sorted(step)}", file=sys.stderr, flush=True)
            return 2
        return None

    def run_command(self, step: dict[str, Any]) -> int | None:
        argv = [str(word) for word in step["run"]]
        try:
            done = subprocess.run(
                argv,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=float(step.get("timeout", 60)),
                check=False,
            )
            result = {
                "argv": argv,
                "exit": done.returncode,
                "stdout": done.stdout.decode("utf-8", "replace")[-4000:],
                "stderr": done.stderr.decode("utf-8", "replace")[-4000:],
            }
        except (OSError, subprocess.TimeoutExpired) as exc:
            result = {"argv": argv, "exit": -1, "stdout": "", "stderr": f"{type(exc).__name__}: {exc}"}
        target = self.path(str(step.get("report", "run-report.json")))
        try:
            results = json.loads(target.read_text()) if target.is_file() else []
        except ValueError:
            results = []
        results.append(result)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(results, indent=1))
        if step.get("check") and result["exit"] != 0:
            print(f"fake agent: {' '.join(argv)} failed: {result['stderr']}", file=sys.stderr, flush=True)
            return 1
        return None

    def resolve(self, side: str) -> None:
        for root, dirs, files in os.walk(self.workdir):
            dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
            for name in files:
                target = Path(root) / name
                try:
                    text = target.read_text()
                except (UnicodeDecodeError, OSError):
                    continue
                if any(_MARKER.match(line) for line in text.splitlines()):
                    target.write_text(resolve_markers(text, side))

    def probe(self, spec: dict[str, Any]) -> None:
        report: dict[str, dict[str, str]] = {"write": {}, "read": {}, "connect": {}}
        for raw in spec.get("write", []):
            try:
                target = Path(raw)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("written by the fake agent\n")
                report["write"][raw] = "ok"
            except OSError as exc:
                report["write"][raw] = f"{type(exc).__name__}: {exc.strerror}"
        for raw in spec.get("read", []):
            try:
                report["read"][raw] = "ok: " + Path(raw).read_bytes()[:200].decode("utf-8", "replace")
            except OSError as exc:
                report["read"][raw] = f"{type(exc).__name__}: {exc.strerror}"
        for raw in spec.get("connect", []):
            host, _, port = str(raw).rpartition(":")
            try:
                with socket.create_connection((host, int(port)), timeout=3):
                    report["connect"][raw] = "ok"
            except OSError as exc:
                report["connect"][raw] = f"{type(exc).__name__}: {exc}"
        report["unix"] = {}
        for raw in spec.get("unix", []):
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(3)
                    sock.connect(raw)
                report["unix"][raw] = "ok"
            except OSError as exc:
                report["unix"][raw] = f"{type(exc).__name__}: {exc}"
        report["list"] = {}
        for raw in spec.get("list", []):
            try:
                report["list"][raw] = "ok: " + " ".join(sorted(os.listdir(raw))[:50])
            except OSError as exc:
                report["list"][raw] = f"{type(exc).__name__}: {exc.strerror}"
        report["proxy"] = {raw: _through_proxy(str(raw)) for raw in spec.get("proxy", [])}
        target = self.path(str(spec.get("report", "probe.json")))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(report, indent=1))


def _through_proxy(target: str) -> str:
    """CONNECT to ``host:port`` through the HTTPS_PROXY the sandbox gives, then say "ping"
    and report the answer (or the proxy's status line)."""
    proxy = os.environ.get("HTTPS_PROXY", "")
    if not proxy.startswith("http://"):
        return "no proxy"
    host, _, port = proxy[len("http://") :].rstrip("/").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
            head = sock.recv(4096).split(b"\r\n")[0].decode("latin-1")
            if " 200 " not in head:
                return head
            sock.sendall(b"ping")
            return "tunnel: " + sock.recv(100).decode("latin-1")
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A deterministic coding agent for tests and demos.")
    parser.add_argument("prompt_file", nargs="?")
    parser.add_argument("--script")
    parser.add_argument("--out")
    parser.add_argument("--workdir")
    # Claude Code's flags, as the claude preset passes them.
    parser.add_argument("-p", "--print", action="store_true")
    parser.add_argument("--output-format", default="text")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--permission-mode")
    parser.add_argument("--model")
    parser.add_argument("--resume")
    parser.add_argument("--max-budget-usd")
    args, _unknown = parser.parse_known_args(argv)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.prompt_file:
        prompt = Path(args.prompt_file).read_text(encoding="utf-8")
    else:
        prompt = sys.stdin.read()
    workdir = Path(args.workdir or os.getcwd())
    agent = Agent(args, prompt, workdir)
    agent.record()
    script_path = Path(args.script) if args.script else workdir / SCRIPT_NAME
    script: Any = None
    if script_path.is_file():
        script = json.loads(script_path.read_text(encoding="utf-8"))
    steps = steps_for(script, agent.attempt, agent.kind)
    if steps is None:
        steps = [
            {
                "write": {
                    f"fake-agent/attempt-{agent.attempt}.md": f"Attempt {agent.attempt} ({agent.kind}).\n"
                }
            },
            {"done": f"Attempt {agent.attempt} ({agent.kind}): wrote fake-agent/attempt-{agent.attempt}.md"},
        ]
    return agent.run(steps)


if __name__ == "__main__":
    sys.exit(main())

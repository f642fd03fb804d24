"""Webhook ingress: requests/s and latency of signed deliveries against baselines, in one run.

    python bench/ingress.py [--seconds 5] [--connections 32] [--postgres URL | --no-postgres]
                            [--warmup 1] [--rounds 1] [--loadgen auto|wrk|python] [--profile]

The same load — signed ``issues.labeled`` deliveries, each with its own ``X-GitHub-Delivery``,
over keep-alive connections — goes in turn to:

  (a) a bare aiohttp server answering 202 to ``POST /webhook``;
  (b) a minimal gidgethub server: ``Event.from_http`` (verify + parse), ``router.dispatch``
      to a no-op handler, 202;
  (c) patchwright's ``create_app`` (ingress + health, no runtime) with the SQLite ledger as
      ``patchwright serve`` runs it: a writer process of its own commits each batch at
      ``synchronous=NORMAL`` and fsyncs the WAL before the batch's 202s are sent;
  (d) the same with PostgreSQL, when reachable;
  (e) a control: (c)'s app with ``record_delivery`` building the row and writing nothing, so
      what the web stack and the ingress's checks allow on this machine without a durable
      write (not part of the target: it shows what bounds (c)'s latency).

Each server is a process of its own with one event loop; the load generator (wrk when
installed, else a multi-process aiohttp client) runs in other processes. Prints requests/s,
p50/p99 latency, non-2xx answers and CPU time per request (server, load generator) per
server, the ratios c/a, c/b, d/a, d/b, whether the SPEC §12 target holds (c at least as fast
as b, p99 under 10 ms), and checks that each ledger holds exactly as many rows as the server
sent 202 answers. Exit status 1 when an answer was not a 202 or a ledger count is off (a
missed target is a result, not an error).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import pstats
import sqlite3
import statistics
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python bench/ingress.py): make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from bench._load import LoadResult, LoadSpec, run_python, run_wrk, wrk_path, wrk_version
from bench._postgres import drop_schema, postgres_problem
from bot.store.factory import parse_sqlite_url
from bot.logs import redact_url

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
SHARED_PAYLOAD = REPO_ROOT.parent / "shared" / "github" / "webhooks" / "issues" / "labeled.payload.json"
TARGET_P99_MS = 10.0


# -- the payload ----------------------------------------------------------------------------


def _user(login: str, user_id: int, kind: str = "User") -> dict:
    api = f"https://api.github.com/users/{login}"
    return {
        "login": login,
        "id": user_id,
        "node_id": f"MDQ6VXNlcj{user_id:08d}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{user_id}?v=4",
        "gravatar_id": "",
        "url": api,
        "html_url": f"https://github.com/{login}",
        "followers_url": f"{api}/followers",
        "following_url": f"{api}/following{{/other_user}}",
        "gists_url": f"{api}/gists{{/gist_id}}",
        "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{api}/subscriptions",
        "organizations_url": f"{api}/orgs",
        "repos_url": f"{api}/repos",
        "events_url": f"{api}/events{{/privacy}}",
        "received_events_url": f"{api}/received_events",
        "type": kind,
        "user_view_type": "public",
        "site_admin": False,
    }


def _repository(owner: dict, name: str, repo_id: int) -> dict:
    full = f"{owner['login']}/{name}"
    api = f"https://api.github.com/repos/{full}"
    templated = {
        "keys_url": "/keys{/key_id}",
        "collaborators_url": "/collaborators{/collaborator}",
        "issue_events_url": "/issues/events{/number}",
        "assignees_url": "/assignees{/user}",
        "branches_url": "/branches{/branch}",
        "blobs_url": "/git/blobs{/sha}",
        "git_tags_url": "/git/tags{/sha}",
        "git_refs_url": "/git/refs{/sha}",
        "trees_url": "/git/trees{/sha}",
        "statuses_url": "/statuses/{sha}",
        "commits_url": "/commits{/sha}",
        "git_commits_url": "/git/commits{/sha}",
        "comments_url": "/comments{/number}",
        "issue_comment_url": "/issues/comments{/number}",
        "contents_url": "/contents/{+path}",
        "compare_url": "/compare/{base}...{head}",
        "archive_url": "/{archive_format}{/ref}",
        "issues_url": "/issues{/number}",
        "pulls_url": "/pulls{/number}",
        "milestones_url": "/milestones{/number}",
        "notifications_url": "/notifications{?since,all,participating}",
        "labels_url": "/labels{/name}",
        "releases_url": "/releases{/id}",
    }
    plain = ("forks", "teams", "hooks", "events", "tags", "languages", "stargazers", "contributors",
             "subscribers", "subscription", "merges", "downloads", "deployments")
    repo = {
        "id": repo_id,
        "node_id": f"R_kgDOH{repo_id:08d}",
        "name": name,
        "full_name": full,
        "private": False,
        "owner": owner,
        "html_url": f"https://github.com/{full}",
        "description": "Widgets, gadgets and the tooling that builds them.",
        "fork": False,
        "url": api,
    }
    repo.update({f"{key}_url": f"{api}/{key}" for key in plain})
    repo.update({key: api + suffix for key, suffix in templated.items()})
    repo.update(
        {
            "created_at": "2023-02-14T09:21:07Z",
            "updated_at": "2025-05-30T16:02:44Z",
            "pushed_at": "2025-06-02T08:11:39Z",
            "git_url": f"git://github.com/{full}.git",
            "ssh_url": f"git@github.com:{full}.git",
            "clone_url": f"https://github.com/{full}.git",
            "svn_url": f"https://github.com/{full}",
            "homepage": "https://widgets.example.org",
            "size": 18734,
            "stargazers_count": 412,
            "watchers_count": 412,
            "language": "Python",
            "has_issues": True,
            "has_projects": True,
            "has_downloads": True,
            "has_wiki": False,
            "has_pages": False,
            "has_discussions": True,
            "forks_count": 57,
            "mirror_url": None,
            "archived": False,
            "disabled": False,
            "open_issues_count": 38,
            "license": {
                "key": "mit",
                "name": "MIT License",
                "spdx_id": "MIT",
                "url": "https://api.github.com/licenses/mit",
                "node_id": "MDc6TGljZW5zZTEz",
            },
            "allow_forking": True,
            "is_template": False,
            "web_commit_signoff_required": False,
            "topics": ["automation", "widgets"],
            "visibility": "public",
            "forks": 57,
            "open_issues": 38,
            "watchers": 412,
            "default_branch": "main",
            "custom_properties": {},
        }
    )
    return repo


def builtin_labeled_payload() -> bytes:
    """A realistic ``issues.labeled`` delivery of an App installation (about 14 KB, pretty-printed
    like GitHub's examples), used when shared/ is not beside the repository."""
    org = _user("octo-org", 59143211, "Organization")
    author, maintainer = _user("mona-dev", 31419265), _user("hubot-maint", 27182818)
    repo = _repository(org, "widgets", 604218377)
    issue_api = f"{repo['url']}/issues/142"
    label = {
        "id": 7012345678,
        "node_id": "LA_kwDOJABCDE8AAAABojvRTg",
        "url": f"{repo['url']}/labels/patchwright",
        "name": "patchwright",
        "color": "5319e7",
        "default": False,
        "description": "Let the bot write the pull request",
    }
    body = (
        "When a widget name contains a slash, `widgets export` writes the file into a sub-directory "
        "instead of escaping the name, and the import step cannot find it again.\n\n"
        "### Steps to reproduce\n\n1. `widgets new 'a/b'`\n2. `widgets export --all`\n"
        "3. `widgets import export/`\n\n### Expected\n\nThe widget round-trips.\n\n"
        "### Acceptance criteria\n\n- [ ] names are escaped on export\n"
        "- [ ] old exports still import\n- [ ] a test covers names with `/` and `\\\\`\n"
    )
    payload = {
        "action": "labeled",
        "issue": {
            "url": issue_api,
            "repository_url": repo["url"],
            "labels_url": f"{issue_api}/labels{{/name}}",
            "comments_url": f"{issue_api}/comments",
            "events_url": f"{issue_api}/events",
            "html_url": f"{repo['html_url']}/issues/142",
            "id": 2981234567,
            "node_id": "I_kwDOJABCDE6xr0mH",
            "number": 142,
            "title": "Export breaks on widget names that contain a slash",
            "user": author,
            "labels": [
                {**label, "id": 7012345001, "name": "bug", "color": "d73a4a", "default": True,
                 "url": f"{repo['url']}/labels/bug", "description": "Something isn't working"},
                label,
            ],
            "state": "open",
            "locked": False,
            "assignee": None,
            "assignees": [],
            "milestone": {
                "url": f"{repo['url']}/milestones/7",
                "html_url": f"{repo['html_url']}/milestone/7",
                "labels_url": f"{repo['url']}/milestones/7/labels",
                "id": 11223344,
                "node_id": "MI_kwDOJABCDE4AqtI4",
                "number": 7,
                "title": "v2.4",
                "description": "Import/export hardening",
                "creator": maintainer,
                "open_issues": 9,
                "closed_issues": 14,
                "state": "open",
                "created_at": "2025-04-01T12:00:00Z",
                "updated_at": "2025-06-02T08:15:03Z",
                "due_on": "2025-07-01T07:00:00Z",
                "closed_at": None,
            },
            "comments": 2,
            "created_at": "2025-06-01T10:04:51Z",
            "updated_at": "2025-06-02T08:15:03Z",
            "closed_at": None,
            "author_association": "CONTRIBUTOR",
            "type": None,
            "active_lock_reason": None,
            "sub_issues_summary": {"total": 0, "completed": 0, "percent_completed": 0},
            "body": body,
            "reactions": {
                "url": f"{issue_api}/reactions",
                "total_count": 1,
                "+1": 1,
                "-1": 0,
                "laugh": 0,
                "hooray": 0,
                "confused": 0,
                "heart": 0,
                "rocket": 0,
                "eyes": 0,
            },
            "timeline_url": f"{issue_api}/timeline",
            "performed_via_github_app": None,
            "state_reason": None,
        },
        "label": label,
        "repository": repo,
        "organization": {
            "login": org["login"],
            "id": org["id"],
            "node_id": org["node_id"],
            "url": f"https://api.github.com/orgs/{org['login']}",
            "repos_url": f"https://api.github.com/orgs/{org['login']}/repos",
            "events_url": f"https://api.github.com/orgs/{org['login']}/events",
            "hooks_url": f"https://api.github.com/orgs/{org['login']}/hooks",
            "issues_url": f"https://api.github.com/orgs/{org['login']}/issues",
            "members_url": f"https://api.github.com/orgs/{org['login']}/members{{/member}}",
            "public_members_url": f"https://api.github.com/orgs/{org['login']}/public_members{{/member}}",
            "avatar_url": org["avatar_url"],
            "description": "Makers of fine widgets",
        },
        "sender": maintainer,
        "installation": {"id": 51234567, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uNTEyMzQ1Njc="},
    }
    return json.dumps(payload, indent=2).encode() + b"\n"


def load_payload(path: Path | None) -> tuple[bytes, str]:
    """(body, where it came from): ``path``, else shared/'s example, else the built-in payload."""
    if path is not None:
        return path.read_bytes(), str(path)
    if SHARED_PAYLOAD.is_file():
        return SHARED_PAYLOAD.read_bytes(), "shared/github/webhooks/issues/labeled.payload.json"
    return builtin_labeled_payload(), "built-in issues.labeled payload (shared/ not found)"


# -- servers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    key: str  # "a".."d"
    label: str
    kind: str  # bare | gidgethub | patchwright
    database_url: str | None = None
    schema: str | None = None

    @property
    def has_ledger(self) -> bool:
        return self.kind == "patchwright"


@dataclass
class ServerProcess:
    proc: asyncio.subprocess.Process
    port: int


async def start_server(spec: ServerSpec, secret: str, profile: Path | None = None) -> ServerProcess:
    """Start ``python -m bench._ingress_servers`` and wait until it listens."""
    args = [sys.executable, "-m", "bench._ingress_servers", spec.kind]
    if spec.database_url:
        args += ["--database-url", spec.database_url]
    if spec.schema:
        args += ["--schema", spec.schema]
    if profile is not None:
        args += ["--profile", str(profile)]
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=REPO_ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(secret.encode() + b"\n")
        await proc.stdin.drain()
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    if not line.startswith(b'{"port": '):
        proc.kill()
        _, err = await proc.communicate()
        raise RuntimeError(f"server {spec.label} did not start: {line!r} {err.decode(errors='replace')[-2000:]}")
    return ServerProcess(proc, int(json.loads(line)["port"]))


async def stop_server(server: ServerProcess, timeout: float = 60) -> ServerReport:
    """Close the server's stdin (it shuts down cleanly); returns what it reports."""
    proc = server.proc
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"server did not stop within {timeout} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"server exited with {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
    return ServerReport.from_json(json.loads(out.decode().strip().splitlines()[-1]))


@dataclass(frozen=True)
class ServerReport:
    """What a server process reports when it stops (see ``bench/_ingress_servers.py``)."""

    statuses: dict[int, int]
    cpu_s: float
    wall_s: float = 0.0
    main_thread_cpu_s: float | None = None
    #: SQLite ledger only: committed batches, the calls they answered, WAL syncs.
    ledger: dict[str, int] | None = None
    #: The SQLite ledger's writer process's CPU time (also counted in ``cpu_s``).
    writer_cpu_s: float | None = None

    @classmethod
    def from_json(cls, data: dict) -> ServerReport:
        main = data.get("main_thread_cpu_s")
        writer = data.get("writer_cpu_s")
        return cls(
            statuses={int(status): n for status, n in data["statuses"].items()},
            cpu_s=float(data["cpu_s"]),
            wall_s=float(data.get("wall_s") or 0.0),
            main_thread_cpu_s=None if main is None else float(main),
            ledger=data.get("ledger"),
            writer_cpu_s=None if writer is None else float(writer),
        )

    @property
    def main_thread_busy(self) -> float | None:
        """Share of the wall time the event loop's thread was on a CPU."""
        if self.main_thread_cpu_s is None or self.wall_s <= 0:
            return None
        return self.main_thread_cpu_s / self.wall_s


async def count_ledger_rows(spec: ServerSpec) -> int:
    """``SELECT count(*)`` of the deliveries table the server wrote (its own connection)."""
    assert spec.database_url is not None
    if spec.database_url.startswith("sqlite:"):
        path, _ = parse_sqlite_url(spec.database_url)

        def count() -> int:
            with sqlite3.connect(path) as conn:
                return int(conn.execute("SELECT count(*) FROM deliveries").fetchone()[0])

        return await asyncio.to_thread(count)
    conn = await asyncpg.connect(spec.database_url)
    try:
        return int(await conn.fetchval(f'SELECT count(*) FROM "{spec.schema}".deliveries'))
    finally:
        await conn.close()


async def postgres_durability(url: str) -> str:
    """The server settings that decide whether a commit is on disk when it returns."""
    conn = await asyncpg.connect(url, timeout=3)
    try:
        names = ("synchronous_commit", "fsync")
        values = [await conn.fetchval(f"SHOW {name}") for name in names]
    finally:
        await conn.close()
    return ", ".join(f"{name}={value}" for name, value in zip(names, values, strict=True))


# -- one measurement ------------------------------------------------------------------------


@dataclass
class Measurement:
    """One server under one load run."""

    server: ServerSpec
    load: LoadResult
    server_statuses: dict[int, int]
    server_cpu_s: float = 0.0
    ledger_rows: int | None = None
    report: ServerReport | None = None

    @property
    def server_202(self) -> int:
        return self.server_statuses.get(202, 0)

    @property
    def server_cpu_us(self) -> float:
        """Server CPU time per answered request (warm-up included), in microseconds."""
        answered = sum(self.server_statuses.values())
        return self.server_cpu_s / answered * 1e6 if answered else 0.0

    @property
    def loadgen_cpu_us(self) -> float:
        """Load-generator CPU time per request sent (warm-up included), in microseconds."""
        sent = self.load.requests + sum(self.load.warmup_statuses.values()) + self.load.abandoned
        return self.load.cpu_s / sent * 1e6 if sent else 0.0

    def ledger_ok(self) -> bool:
        """Ledger rows == 202 answers the server sent, and the generator's count agrees."""
        if self.ledger_rows is None:
            return True
        received = self.load.answered(202)
        return self.ledger_rows == self.server_202 and received <= self.server_202 <= received + self.load.abandoned

    def statuses_ok(self) -> bool:
        """Every answer the generator saw was a 202, and nothing failed on the wire."""
        seen = set(self.load.statuses) | set(self.load.warmup_statuses)
        return seen <= {202} and self.load.socket_errors == 0 and self.load.requests > 0


@dataclass(frozen=True)
class Options:
    seconds: float = 5.0
    warmup: float = 1.0
    connections: int = 32
    workers: int | None = None
    loadgen: str = "auto"  # auto | wrk | python
    postgres_url: str | None = DEFAULT_POSTGRES_URL
    rounds: int = 1
    payload: Path | None = None
    profile: bool = False


async def measure(
    spec: ServerSpec, load: LoadSpec, loadgen: str, wrk: str | None, workdir: Path, profile: Path | None
) -> Measurement:
    # every server starts with nothing of an earlier one's writes still on its way to disk
    await asyncio.to_thread(os.sync)
    server = await start_server(spec, load.secret, profile)
    try:
        target = dataclasses.replace(load, url=f"http://127.0.0.1:{server.port}/webhook")
        if loadgen == "wrk":
            assert wrk is not None
            result = await run_wrk(target, workdir, wrk)
        else:
            result = await run_python(target, workdir)
    except BaseException:
        server.proc.kill()
        await server.proc.wait()
        raise
    report = await stop_server(server)
    measurement = Measurement(spec, result, report.statuses, report.cpu_s, report=report)
    if spec.has_ledger:
        measurement.ledger_rows = await count_ledger_rows(spec)
        remove_sqlite_files(spec)  # what the kernel has not written yet is dropped, not written
    return measurement


def remove_sqlite_files(spec: ServerSpec) -> None:
    """Delete a measured SQLite ledger (database, WAL and shared-memory files)."""
    if spec.database_url is None or not spec.database_url.startswith("sqlite:"):
        return
    path, _ = parse_sqlite_url(spec.database_url)
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + suffix)


# -- the report (pure) ----------------------------------------------------------------------


@dataclass
class Summary:
    """Per server, the median over rounds."""

    server: ServerSpec
    rate: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    server_cpu_us: float
    loadgen_cpu_us: float
    rounds: list[Measurement] = field(default_factory=list)


def summarise(measurements: Sequence[Measurement]) -> list[Summary]:
    by_key: dict[str, list[Measurement]] = {}
    for m in measurements:
        by_key.setdefault(m.server.key, []).append(m)
    return [
        Summary(
            server=ms[0].server,
            rate=statistics.median(m.load.rate for m in ms),
            p50_ms=statistics.median(m.load.p50_ms for m in ms),
            p99_ms=statistics.median(m.load.p99_ms for m in ms),
            non_2xx=sum(m.load.non_2xx for m in ms),
            socket_errors=sum(m.load.socket_errors for m in ms),
            server_cpu_us=statistics.median(m.server_cpu_us for m in ms),
            loadgen_cpu_us=statistics.median(m.loadgen_cpu_us for m in ms),
            rounds=ms,
        )
        for _, ms in sorted(by_key.items())
    ]


def format_table(summaries: Sequence[Summary]) -> list[str]:
    lines = [
        (
            f"{'server':<46} {'requests/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>8} {'sock err':>8}"
            f" {'server CPU us/req':>17} {'loadgen CPU us/req':>18}"
        )
    ]
    for s in summaries:
        lines.append(
            f"({s.server.key}) {s.server.label:<42} {s.rate:>10.0f} {s.p50_ms:>7.2f} {s.p99_ms:>7.2f}"
            f" {s.non_2xx:>8} {s.socket_errors:>8} {s.server_cpu_us:>17.0f} {s.loadgen_cpu_us:>18.0f}"
        )
    return lines


def ratio_lines(summaries: Sequence[Summary]) -> list[str]:
    """``c/a``, ``c/b`` (and ``d/a``, ``d/b``) of requests/s."""
    by_key = {s.server.key: s for s in summaries}
    lines = []
    for top in ("c", "d"):
        if top not in by_key:
            continue
        parts = [
            f"{top}/{base} = {by_key[top].rate / by_key[base].rate:.2f}"
            for base in ("a", "b")
            if base in by_key and by_key[base].rate > 0
        ]
        if parts:
            lines.append(f"ratio requests/s ({by_key[top].server.label}): " + ", ".join(parts))
    return lines


def target_line(summaries: Sequence[Summary]) -> str:
    """SPEC §12: patchwright (c) at least as fast as gidgethub (b) in requests/s, p99 < 10 ms."""
    by_key = {s.server.key: s for s in summaries}
    if "b" not in by_key or "c" not in by_key:
        return "target: not evaluated (needs servers b and c)"
    b, c = by_key["b"], by_key["c"]
    fast = c.rate >= b.rate
    quick = c.p99_ms < TARGET_P99_MS
    verdict = "HOLDS" if fast and quick else "DOES NOT HOLD"
    return (
        f"target (SPEC §12) {verdict}: (c) {c.rate:.0f} req/s {'>=' if fast else '<'} (b) {b.rate:.0f} req/s"
        f" [{'yes' if fast else 'no'}]; (c) p99 {c.p99_ms:.2f} ms {'<' if quick else '>='}"
        f" {TARGET_P99_MS:.0f} ms [{'yes' if quick else 'no'}]"
    )


def cpu_lines(summaries: Sequence[Summary]) -> list[str]:
    """Server CPU per request of (c)/(d) against (b): what the durable ledger write costs."""
    by_key = {s.server.key: s for s in summaries}
    if "b" not in by_key:
        return []
    b = by_key["b"]
    return [
        f"server CPU per request, all threads: ({key}) {by_key[key].server_cpu_us:.0f} us ="
        f" (b) {b.server_cpu_us:.0f} us {by_key[key].server_cpu_us - b.server_cpu_us:+.0f} us"
        for key in ("c", "d")
        if key in by_key
    ]


def bound_lines(summaries: Sequence[Summary]) -> list[str]:
    """Per server: how busy its event loop's thread was and, for the SQLite ledger, how many
    calls each commit answered. A loop thread well under 100 % busy while its answers wait
    for commits means the ledger's latency, not CPU, bounds the requests/s."""
    lines = []
    for s in summaries:
        reports = [m.report for m in s.rounds if m.report is not None]
        busy = [r.main_thread_busy for r in reports if r.main_thread_busy is not None]
        if not busy:
            continue
        text = f"({s.server.key}) event loop thread busy {statistics.median(busy):.0%} of the run"
        ledgers = [r.ledger for r in reports if r.ledger and r.ledger.get("batches")]
        if ledgers:
            per_batch = statistics.median(ledger["rows"] / ledger["batches"] for ledger in ledgers)
            syncs = statistics.median(ledger["wal_syncs"] / ledger["batches"] for ledger in ledgers)
            text += f"; ledger commits of {per_batch:.1f} deliveries on average, {syncs:.2f} WAL syncs per commit"
        writer = [r.writer_cpu_s / r.ledger["rows"] * 1e6 for r in reports if r.writer_cpu_s and r.ledger and r.ledger.get("rows")]
        if writer:
            text += f"; the ledger's writer process used {statistics.median(writer):.0f} us of CPU per delivery"
        lines.append(text)
    by_key = {s.server.key: s for s in summaries}
    if "c" in by_key and "e" in by_key and by_key["e"].rate > 0:
        c, e = by_key["c"], by_key["e"]
        text = (
            f"control (e), (c)'s app with no ledger write: {e.rate:.0f} req/s, p99 {e.p99_ms:.2f} ms;"
            f" (c) reaches {c.rate / e.rate:.2f}x its requests/s"
        )
        if e.p99_ms >= TARGET_P99_MS:
            text += f": on this machine the web stack alone misses the {TARGET_P99_MS:.0f} ms p99, whatever the ledger does"
        lines.append(text)
    return lines


def ledger_lines(measurements: Sequence[Measurement]) -> list[str]:
    lines = []
    for m in measurements:
        if m.ledger_rows is None:
            continue
        received = m.load.answered(202)
        lines.append(
            f"ledger ({m.server.key}) {m.server.label}: {m.ledger_rows} rows, {m.server_202} answers 202 sent"
            f" by the server ({received} received by the load generator,"
            f" {m.load.abandoned} abandoned in flight at its deadline)"
            f" -> {'OK' if m.ledger_ok() else 'MISMATCH'}"
        )
    return lines


def status_lines(measurements: Sequence[Measurement]) -> list[str]:
    lines = []
    for m in measurements:
        if not m.statuses_ok():
            lines.append(
                f"unexpected answers from ({m.server.key}): measured {m.load.statuses},"
                f" warm-up {m.load.warmup_statuses}, socket errors {m.load.socket_errors}"
            )
    return lines


@dataclass
class Report:
    header: list[str]
    measurements: list[Measurement]
    summaries: list[Summary]
    notes: list[str]

    def ok(self) -> bool:
        return all(m.ledger_ok() and m.statuses_ok() for m in self.measurements)

    def text(self) -> str:
        lines = [*self.header, "", *format_table(self.summaries), ""]
        lines += ratio_lines(self.summaries)
        lines.append(target_line(self.summaries))
        lines += cpu_lines(self.summaries)
        lines += bound_lines(self.summaries)
        lines += ledger_lines(self.measurements)
        lines += status_lines(self.measurements)
        lines += self.notes
        return "\n".join(lines)


# -- the run --------------------------------------------------------------------------------


def profile_summary(path: Path, limit: int = 25) -> str:
    out = StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit)
    return out.getvalue()


async def run(options: Options) -> Report:
    body, source = load_payload(options.payload)
    wrk = wrk_path()
    if options.loadgen == "wrk" and wrk is None:
        raise SystemExit("wrk is not installed (apt-get install wrk), use --loadgen python")
    loadgen = "wrk" if options.loadgen == "wrk" or (options.loadgen == "auto" and wrk) else "python"
    workers = options.workers or (1 if loadgen == "wrk" else 2)
    secret = uuid.uuid4().hex
    load = LoadSpec(
        url="",
        body=body,
        secret=secret,
        connections=options.connections,
        seconds=options.seconds,
        warmup=options.warmup,
        workers=workers,
    )
    if loadgen == "wrk":
        assert wrk is not None
        generator = f"{await wrk_version(wrk)}, {workers} thread(s)"
    else:
        generator = (
            f"multi-process aiohttp client, {workers} process(es) (wrk not used; this generator needs"
            " several times wrk's CPU per request and can be the bottleneck on a small machine)"
        )
    if loadgen == "wrk" and (options.seconds % 1 or options.warmup % 1):
        generator += "; wrk runs whole seconds, so fractions are rounded up"
    notes: list[str] = []
    problem = None
    durability = "SQLite WAL written by a writer process, fdatasync of the WAL after each commit, before the answers"
    if options.postgres_url is None:
        notes.append("(d) PostgreSQL skipped: --no-postgres")
    else:
        problem = await postgres_problem(options.postgres_url)
        if problem is not None:
            notes.append(f"(d) PostgreSQL skipped: {redact_url(options.postgres_url)} unreachable ({problem})")
        else:
            durability += f"; PostgreSQL {await postgres_durability(options.postgres_url)}"
    cores = os.cpu_count() or 1
    load_avg = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    header = [
        (
            f"patchwright ingress benchmark: signed issues.labeled deliveries of {len(body)} bytes ({source}),"
            " a fresh X-GitHub-Delivery per request"
        ),
        (
            f"load: {generator}, {options.connections} keep-alive connections, {options.warmup:g} s warm-up +"
            f" {options.seconds:g} s measured per server, {options.rounds} round(s) (figures are medians)"
        ),
        (
            f"machine: {cores} CPU core(s) shared by the server processes and the load generator (load"
            f" average {load_avg} at start): absolute figures are what this box allows; the ratios are"
            " the result"
        ),
        (
            "servers: one process each, one event loop, access log off; (c)/(d) commit every delivery"
            f" before its 202 ({durability})"
        ),
    ]
    measurements: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="patchwright-bench-ingress-") as tmp:
        workdir = Path(tmp)
        for round_number in range(options.rounds):
            specs = [
                ServerSpec("a", "bare aiohttp, 202", "bare"),
                ServerSpec("b", "gidgethub verify + dispatch, 202", "gidgethub"),
                ServerSpec(
                    "c",
                    "patchwright create_app, SQLite ledger",
                    "patchwright",
                    database_url=f"sqlite:///{workdir / f'ledger-{round_number}.db'}",
                ),
            ]
            specs.append(
                ServerSpec(
                    "e",
                    "control: (c) with no ledger write",
                    "patchwright-no-ledger",
                    database_url=f"sqlite:///{workdir / f'control-{round_number}.db'}",
                )
            )
            if options.postgres_url is not None and problem is None:
                specs.append(
                    ServerSpec(
                        "d",
                        "patchwright create_app, PostgreSQL ledger",
                        "patchwright",
                        database_url=options.postgres_url,
                        schema=f"bench_ingress_{uuid.uuid4().hex[:12]}",
                    )
                )
            for spec in specs:
                profile = workdir / f"profile-{spec.key}.pstats" if options.profile and spec.key in "bc" else None
                try:
                    measurements.append(await measure(spec, load, loadgen, wrk, workdir, profile))
                finally:
                    if spec.schema is not None and options.postgres_url is not None:
                        await drop_schema(options.postgres_url, spec.schema)
                print(f"  round {round_number + 1}: ({spec.key}) done", file=sys.stderr, flush=True)
                if profile is not None and profile.exists():
                    notes.append(f"\ncProfile of ({spec.key}) {spec.label} (serving loop, main thread):")
                    notes.append(profile_summary(profile))
    return Report(header, measurements, summarise(measurements), notes)


def parse_args(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per server (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per server (default 1)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--workers", type=int, help="wrk threads (default 1) or client processes (default 2)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES_URL, help="PostgreSQL URL for (d)")
    parser.add_argument("--no-postgres", action="store_true", help="skip (d)")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the servers this many times")
    parser.add_argument("--payload", type=Path, help="the delivery body (default: shared/'s issues.labeled)")
    parser.add_argument("--profile", action="store_true", help="cProfile servers (b) and (c) and print the top")
    args = parser.parse_args(list(argv))
    if args.connections < 1 or args.seconds <= 0 or args.warmup < 0 or args.rounds < 1:
        parser.error("--connections and --rounds must be >= 1, --seconds > 0, --warmup >= 0")
    return Options(
        seconds=args.seconds,
        warmup=args.warmup,
        connections=args.connections,
        workers=args.workers,
        loadgen=args.loadgen,
        postgres_url=None if args.no_postgres else args.postgres,
        rounds=args.rounds,
        payload=args.payload,
        profile=args.profile,
    )


def main(argv: Sequence[str]) -> int:
    report = asyncio.run(run(parse_args(argv)))
    print(report.text())
    return 0 if report.ok() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""bench/ingress.py end to end with a tiny load, and its pure helpers.

Not a performance test: nothing here asserts a speed. The runs check that every server kind
starts, answers every signed delivery with 202, that each ledger holds one row per 202, and
that the report prints the table, the ratios and the target line.
"""

from __future__ import annotations

import importlib
import json
import uuid
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ingress(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(REPO_ROOT))  # bench/ is not an installed package
    return importlib.import_module("bench.ingress")


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    return importlib.import_module("bench._load")


def check_report(ingress: ModuleType, report, *, expect_postgres: bool) -> str:
    text = report.text()
    keys = [m.server.key for m in report.measurements]
    assert keys == (["a", "b", "c", "e", "d"] if expect_postgres else ["a", "b", "c", "e"])
    for m in report.measurements:
        # every answer, seen by the generator and counted by the server, was a 202
        assert set(m.load.statuses) == {202} and m.load.statuses[202] > 0, (m.server.key, m.load.statuses)
        assert set(m.load.warmup_statuses) <= {202}
        assert m.load.socket_errors == 0 and m.load.non_2xx == 0
        assert set(m.server_statuses) == {202}
        assert m.load.answered(202) <= m.server_202 <= m.load.answered(202) + m.load.abandoned
        assert m.load.latencies_known and 0 < m.load.p50_ms <= m.load.p99_ms <= m.load.max_ms
        assert m.server_cpu_us > 0
        assert m.report is not None and m.report.wall_s > 0
        assert m.report.main_thread_busy is not None and 0 < m.report.main_thread_busy <= 1.05
        if m.server.has_ledger:
            assert m.ledger_rows == m.server_202
        else:
            assert m.ledger_rows is None
        if m.server.key == "c":  # the SQLite ledger reports its commits
            ledger = m.report.ledger
            assert ledger is not None and 0 < ledger["batches"] <= ledger["rows"] <= m.server_202
            assert 0 < ledger["wal_syncs"] <= ledger["batches"]
            # committed by the writer process, as `patchwright serve` does (started before the
            # run, none restarted during it); its CPU is counted
            assert ledger["starts"] == 0 and m.report.writer_cpu_s is not None and m.report.writer_cpu_s > 0
        if m.server.key == "e":  # the control writes nothing
            assert m.report.ledger is None and m.report.writer_cpu_s is None
    assert report.ok()
    assert "c/a = " in text and "c/b = " in text
    assert "target (SPEC §12) " in text
    assert "(b) event loop thread busy " in text
    assert "(c) event loop thread busy " in text and "ledger commits of " in text
    assert "the ledger's writer process used " in text
    assert "control (e), (c)'s app with no ledger write: " in text
    assert text.count("-> OK") == (2 if expect_postgres else 1)
    if expect_postgres:
        assert "d/a = " in text and "d/b = " in text
    else:
        assert "(d) PostgreSQL skipped" in text
    return text


async def test_every_server_kind_answers_every_delivery_with_the_ledger_checked(ingress):
    postgres_url = ingress.DEFAULT_POSTGRES_URL
    reachable = await ingress.postgres_problem(postgres_url) is None
    options = ingress.Options(
        seconds=1, warmup=0, connections=2, workers=1, loadgen="auto", postgres_url=postgres_url
    )
    report = await ingress.run(options)
    text = check_report(ingress, report, expect_postgres=reachable)
    assert "CPU core(s) shared by the server processes and the load generator" in text


async def test_python_load_generator_runs_every_server_kind(ingress):
    options = ingress.Options(
        seconds=0.4, warmup=0.2, connections=2, workers=2, loadgen="python", postgres_url=None
    )
    report = await ingress.run(options)
    text = check_report(ingress, report, expect_postgres=False)
    assert "multi-process aiohttp client" in text
    # this generator never abandons a request: it waits for every answer
    assert all(m.load.abandoned == 0 for m in report.measurements)
    assert all(sum(m.load.warmup_statuses.values()) > 0 for m in report.measurements)


def test_builtin_payload_is_a_realistic_labeled_delivery(ingress):
    body = ingress.builtin_labeled_payload()
    payload = json.loads(body)
    assert payload["action"] == "labeled"
    assert payload["label"]["name"] == "patchwright"
    assert payload["repository"]["full_name"] == "octo-org/widgets"
    assert isinstance(payload["installation"]["id"], int)
    assert payload["issue"]["number"] == 142
    assert 10_000 <= len(body) <= 20_000  # about the size of GitHub's example (13.8 KB)


def test_load_payload_prefers_a_given_file_then_shared_then_builtin(ingress, tmp_path, monkeypatch):
    given = tmp_path / "body.json"
    given.write_bytes(b'{"action": "labeled"}')
    assert ingress.load_payload(given) == (b'{"action": "labeled"}', str(given))
    monkeypatch.setattr(ingress, "SHARED_PAYLOAD", tmp_path / "absent.json")
    body, source = ingress.load_payload(None)
    assert body == ingress.builtin_labeled_payload() and "built-in" in source


def test_percentile_is_nearest_rank(load):
    values = sorted(float(n) for n in range(1, 101))
    assert load.percentile(values, 50) == 50.0
    assert load.percentile(values, 99) == 99.0
    assert load.percentile(values, 100) == 100.0
    assert load.percentile([7.0], 99) == 7.0
    assert load.percentile([], 50) == 0.0


def test_signed_headers_match_githubs_signature(load):
    headers = load.delivery_headers(b'{"a": 1}', "It's a Secret to Everybody", "issues")
    assert headers["X-Hub-Signature-256"] == load.hub_signature(b'{"a": 1}', "It's a Secret to Everybody")
    assert headers["X-Hub-Signature-256"].startswith("sha256=") and len(headers["X-Hub-Signature-256"]) == 71
    assert headers["Content-Type"] == "application/json" and headers["X-GitHub-Event"] == "issues"
    assert "X-GitHub-Delivery" not in headers  # each request gets its own


def test_wrk_script_sets_headers_and_a_fresh_uuid_shaped_id(load, tmp_path):
    prefix = "0123abcd-4567-4def"
    script = load.wrk_script(tmp_path / "body.json", {"X-GitHub-Event": "issues"}, prefix)
    assert 'wrk.headers["X-GitHub-Event"] = "issues"' in script
    assert 'wrk.headers["X-GitHub-Delivery"] = id_prefix .. string.format("%012x", sent)' in script
    assert json.dumps(str(tmp_path / "body.json")) in script
    assert load.RESULT_MARKER.strip() in script
    # what a thread of the script builds: prefix, variant bits + thread number, counter
    first_id = uuid.UUID(f"{prefix}-{0x8000 + 0:04x}-{1:012x}")
    assert first_id.version == 4 and first_id.variant == uuid.RFC_4122
    with pytest.raises(ValueError):
        load.wrk_script(tmp_path / "body.json", {}, "not-a-uuid")


def test_wrk_result_parsing_counts_statuses_errors_and_abandoned(load):
    line = json.dumps(
        {
            "duration_us": 1_000_000,
            "requests": 103,
            "sent": 110,
            "p50_us": 900,
            "p99_us": 4000,
            "max_us": 7000,
            "errors": {"connect": 1, "read": 2, "write": 0, "timeout": 1},
            "statuses": {"202": 100, "401": 3},
        }
    )
    parsed = load.parse_result_line(f"Running 1s test\n{load.RESULT_MARKER}{line}\n")
    statuses, socket_errors, abandoned = load.wrk_counts(parsed)
    assert statuses == {202: 100, 401: 3}
    assert socket_errors == 4
    assert abandoned == 110 - 103 - 3  # sent, minus answered, minus read errors and timeouts
    with pytest.raises(ValueError):
        load.parse_result_line("no result here")


def test_connections_are_split_evenly_over_client_processes(load):
    assert load.split_connections(32, 2) == [16, 16]
    assert load.split_connections(5, 2) == [3, 2]
    assert load.split_connections(2, 4) == [1, 1]


def make_measurement(ingress, load, key: str, rate: float, p99: float, *, rows: int | None = None):
    spec = ingress.ServerSpec(key, f"server {key}", "patchwright" if rows is not None else "bare")
    result = load.LoadResult(
        generator="wrk",
        seconds=1.0,
        latencies_known=True,
        p50_ms=p99 / 2,
        p99_ms=p99,
        max_ms=p99,
        statuses={202: int(rate)},
    )
    return ingress.Measurement(spec, result, {202: int(rate)}, 1.0, rows)


def test_ratios_and_target_verdict(ingress, load):
    fast = [
        make_measurement(ingress, load, "a", 10_000, 2.0),
        make_measurement(ingress, load, "b", 4_000, 8.0),
        make_measurement(ingress, load, "c", 5_000, 6.0, rows=5_000),
    ]
    summaries = ingress.summarise(fast)
    assert ingress.ratio_lines(summaries) == [
        "ratio requests/s (server c): c/a = 0.50, c/b = 1.25",
    ]
    assert ingress.target_line(summaries).startswith("target (SPEC §12) HOLDS")
    slow = [*fast[:2], make_measurement(ingress, load, "c", 3_000, 12.0, rows=3_000)]
    verdict = ingress.target_line(ingress.summarise(slow))
    assert verdict.startswith("target (SPEC §12) DOES NOT HOLD") and "[no]" in verdict


def test_ledger_check_needs_one_row_per_202(ingress, load):
    good = make_measurement(ingress, load, "c", 100, 1.0, rows=100)
    assert good.ledger_ok()
    missing = make_measurement(ingress, load, "c", 100, 1.0, rows=99)
    assert not missing.ledger_ok()
    assert "MISMATCH" in ingress.ledger_lines([missing])[0]


def test_bound_lines_show_how_busy_the_loop_was_and_how_big_the_commits(ingress):
    from bench._load import LoadResult

    def measured(key: str, busy: float, ledger: dict | None, *, writer_cpu_s: float | None = None, p99: float = 2.0):
        spec = ingress.ServerSpec(key, f"server {key}", "patchwright" if ledger else "gidgethub")
        report = ingress.ServerReport(
            {202: 100}, 1.0, wall_s=4.0, main_thread_cpu_s=4.0 * busy, ledger=ledger, writer_cpu_s=writer_cpu_s
        )
        load = LoadResult("wrk", 4.0, True, 1.0, p99, 3.0, statuses={202: 100})
        return ingress.Measurement(spec, load, {202: 100}, 1.0, report=report)

    b = [measured("b", 1.0, None), measured("b", 0.98, None)]
    c = [
        measured("c", 0.6, {"batches": 10, "rows": 300, "wal_syncs": 9}),
        measured("c", 0.62, {"batches": 20, "rows": 500, "wal_syncs": 20}),
    ]
    lines = ingress.bound_lines(ingress.summarise([*b, *c]))
    assert lines == [
        "(b) event loop thread busy 99% of the run",
        "(c) event loop thread busy 61% of the run; ledger commits of 27.5 deliveries on average,"
        " 0.95 WAL syncs per commit",
    ]
    load = LoadResult("wrk", 1.0, True, 1.0, 2.0, 3.0, statuses={202: 1})
    unknown = ingress.Measurement(ingress.ServerSpec("a", "bare", "bare"), load, {202: 1}, 0.1)
    assert ingress.bound_lines(ingress.summarise([unknown])) == []


def test_bound_lines_give_the_writer_process_cpu_and_compare_with_the_control(ingress):
    from bench._load import LoadResult

    def measured(key: str, rate: int, p99: float, **report_fields):
        spec = ingress.ServerSpec(key, f"server {key}", "patchwright")
        report = ingress.ServerReport({202: rate}, 1.0, wall_s=1.0, main_thread_cpu_s=0.9, **report_fields)
        load = LoadResult("wrk", 1.0, True, p99 / 2, p99, p99, statuses={202: rate})
        return ingress.Measurement(spec, load, {202: rate}, 1.0, report=report)

    c = measured("c", 3000, 16.0, ledger={"batches": 300, "rows": 3000, "wal_syncs": 300}, writer_cpu_s=0.3)
    slow_control = measured("e", 4000, 12.0)
    lines = ingress.bound_lines(ingress.summarise([c, slow_control]))
    assert lines[0].endswith("; the ledger's writer process used 100 us of CPU per delivery")
    assert lines[-1] == (
        "control (e), (c)'s app with no ledger write: 4000 req/s, p99 12.00 ms; (c) reaches 0.75x its"
        " requests/s: on this machine the web stack alone misses the 10 ms p99, whatever the ledger does"
    )
    quick_control = measured("e", 4000, 6.0)
    assert ingress.bound_lines(ingress.summarise([c, quick_control]))[-1].endswith("(c) reaches 0.75x its requests/s")

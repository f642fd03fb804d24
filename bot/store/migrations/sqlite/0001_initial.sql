-- patchwright store, SQLite backend, version 1.
-- Times are TEXT in one fixed-width form, 'YYYY-MM-DDTHH:MM:SS.ffffffZ' (UTC), so that
-- text order is time order and values round-trip to the microsecond.
-- JSON columns hold JSON text. Tables are STRICT: a wrongly typed value is an error.

CREATE TABLE tasks (
    id                   TEXT PRIMARY KEY,
    repo                 TEXT NOT NULL,
    installation_id      INTEGER NOT NULL,
    issue_number         INTEGER NOT NULL,
    title                TEXT NOT NULL,
    spec                 TEXT NOT NULL DEFAULT '',
    status               TEXT NOT NULL CHECK (status IN
                             ('pending', 'running', 'review', 'waiting', 'paused',
                              'merged', 'closed', 'failed')),
    attempt              INTEGER NOT NULL,
    max_attempts         INTEGER NOT NULL,
    retry_kind           TEXT NOT NULL,
    retry_reason         TEXT NOT NULL DEFAULT '',
    retry_context        TEXT NOT NULL DEFAULT '',
    failure_category     TEXT NOT NULL DEFAULT '',
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    conflict_retries     INTEGER NOT NULL DEFAULT 0,
    transient_retries    INTEGER NOT NULL DEFAULT 0,
    feedback_retries     INTEGER NOT NULL DEFAULT 0,
    queued_feedback      TEXT NOT NULL DEFAULT '[]',          -- JSON array of strings
    review_threads       TEXT NOT NULL DEFAULT '[]',          -- JSON array of comment ids
    last_error_signature TEXT NOT NULL DEFAULT '',
    cost_usd             REAL NOT NULL DEFAULT 0,
    max_cost_usd         REAL NOT NULL,
    branch               TEXT NOT NULL DEFAULT '',
    base_branch          TEXT NOT NULL DEFAULT '',
    pr_number            INTEGER,
    pr_url               TEXT NOT NULL DEFAULT '',
    head_sha             TEXT NOT NULL DEFAULT '',
    agent                TEXT NOT NULL DEFAULT '',
    model                TEXT NOT NULL DEFAULT '',
    agent_session        TEXT NOT NULL DEFAULT '',
    status_comment_id    INTEGER,
    not_before           TEXT,
    worker_id            TEXT NOT NULL DEFAULT '',
    heartbeat_at         TEXT,
    started_at           TEXT,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL,
    close_reason         TEXT NOT NULL DEFAULT '',
    version              INTEGER NOT NULL DEFAULT 1,
    UNIQUE (repo, issue_number)
) STRICT;

-- claim order: oldest pending first
-- claim order (status = 'pending' ORDER BY created_at, id), running counts, stale heartbeats
CREATE INDEX tasks_status ON tasks (status, created_at, id);
CREATE INDEX tasks_created ON tasks (created_at, id);
CREATE INDEX tasks_repo ON tasks (repo, created_at);
CREATE INDEX tasks_pr ON tasks (repo, pr_number) WHERE pr_number IS NOT NULL;
CREATE INDEX tasks_branch ON tasks (repo, branch) WHERE branch <> '';

CREATE TABLE attempts (
    task_id     TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    number      INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    outcome     TEXT NOT NULL DEFAULT '',
    cost_usd    REAL NOT NULL DEFAULT 0,
    summary     TEXT NOT NULL DEFAULT '',
    head_before TEXT NOT NULL DEFAULT '',
    head_after  TEXT NOT NULL DEFAULT '',
    error       TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (task_id, number)
) STRICT;

CREATE INDEX attempts_started ON attempts (started_at);

-- one row per appended batch of log lines
CREATE TABLE attempt_logs (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id    TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt    INTEGER NOT NULL,
    lines      TEXT NOT NULL,                                  -- JSON array of strings
    created_at TEXT NOT NULL
) STRICT;

CREATE INDEX attempt_logs_task ON attempt_logs (task_id, attempt, seq);

CREATE TABLE task_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id     TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    actor       TEXT NOT NULL DEFAULT '',
    delivery_id TEXT NOT NULL DEFAULT '',
    from_status TEXT,
    to_status   TEXT,
    changes     TEXT NOT NULL DEFAULT '{}',                    -- JSON object
    at          TEXT NOT NULL
) STRICT;

CREATE INDEX task_events_task ON task_events (task_id, seq);
CREATE INDEX task_events_delivery ON task_events (delivery_id) WHERE delivery_id <> '';

-- the webhook ledger
CREATE TABLE deliveries (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    event           TEXT NOT NULL,
    action          TEXT NOT NULL DEFAULT '',
    repo            TEXT NOT NULL DEFAULT '',
    installation_id INTEGER,
    payload         BLOB NOT NULL,
    received_at     TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN
                        ('pending', 'processing', 'done', 'failed')),
    outcome         TEXT NOT NULL DEFAULT '',
    ignore_reason   TEXT NOT NULL DEFAULT '',
    claimed_by      TEXT NOT NULL DEFAULT '',
    claimed_at      TEXT,
    processed_at    TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0
) STRICT;

-- claims: oldest pending overall, and per repository the oldest pending / any processing row
CREATE INDEX deliveries_state ON deliveries (state, seq);
CREATE INDEX deliveries_repo_state ON deliveries (repo, state, seq);
CREATE INDEX deliveries_repo ON deliveries (repo, seq);

CREATE TABLE installations (
    id         INTEGER PRIMARY KEY,
    account    TEXT NOT NULL DEFAULT '',
    suspended  INTEGER NOT NULL DEFAULT 0 CHECK (suspended IN (0, 1)),
    updated_at TEXT NOT NULL
) STRICT;

CREATE TABLE installation_repos (
    installation_id INTEGER NOT NULL REFERENCES installations (id) ON DELETE CASCADE,
    repo            TEXT NOT NULL,
    PRIMARY KEY (installation_id, repo)
) STRICT;

CREATE INDEX installation_repos_repo ON installation_repos (repo);

-- wake-up counters: other processes (and other Store instances) poll these to notice
-- notify_pending()/notify_deliveries() without a server to push them
CREATE TABLE wakeups (
    channel TEXT PRIMARY KEY,
    counter INTEGER NOT NULL DEFAULT 0
) STRICT;

INSERT INTO wakeups (channel, counter) VALUES ('pending', 0), ('deliveries', 0);

-- One-time facts ("decided CI for <sha>", "commented about the base branch"): a key is
-- recorded once, so a decision taken by one process is never taken again by another.
CREATE TABLE facts (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL
);

-- patchwright store, PostgreSQL backend, version 1.
-- Runs with search_path set to the store's schema; names are unqualified.

CREATE TABLE tasks (
    id                   text PRIMARY KEY,
    repo                 text NOT NULL,
    installation_id      bigint NOT NULL,
    issue_number         bigint NOT NULL,
    title                text NOT NULL,
    spec                 text NOT NULL DEFAULT '',
    status               text NOT NULL CHECK (status IN
                             ('pending', 'running', 'review', 'waiting', 'paused',
                              'merged', 'closed', 'failed')),
    attempt              integer NOT NULL,
    max_attempts         integer NOT NULL,
    retry_kind           text NOT NULL,
    retry_reason         text NOT NULL DEFAULT '',
    retry_context        text NOT NULL DEFAULT '',
    failure_category     text NOT NULL DEFAULT '',
    consecutive_failures integer NOT NULL DEFAULT 0,
    conflict_retries     integer NOT NULL DEFAULT 0,
    transient_retries    integer NOT NULL DEFAULT 0,
    feedback_retries     integer NOT NULL DEFAULT 0,
    queued_feedback      text NOT NULL DEFAULT '[]',          -- JSON array of strings
    review_threads       text NOT NULL DEFAULT '[]',          -- JSON array of comment ids
    last_error_signature text NOT NULL DEFAULT '',
    cost_usd             double precision NOT NULL DEFAULT 0,
    max_cost_usd         double precision NOT NULL,
    branch               text NOT NULL DEFAULT '',
    base_branch          text NOT NULL DEFAULT '',
    pr_number            bigint,
    pr_url               text NOT NULL DEFAULT '',
    head_sha             text NOT NULL DEFAULT '',
    agent                text NOT NULL DEFAULT '',
    model                text NOT NULL DEFAULT '',
    agent_session        text NOT NULL DEFAULT '',
    status_comment_id    bigint,
    not_before           timestamptz,
    worker_id            text NOT NULL DEFAULT '',
    heartbeat_at         timestamptz,
    started_at           timestamptz,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,
    close_reason         text NOT NULL DEFAULT '',
    version              bigint NOT NULL DEFAULT 1,
    UNIQUE (repo, issue_number)
);

-- claim order (status = 'pending' ORDER BY created_at, id), running counts, stale heartbeats
CREATE INDEX tasks_status ON tasks (status, created_at, id);
CREATE INDEX tasks_created ON tasks (created_at, id);
CREATE INDEX tasks_repo ON tasks (repo, created_at);
CREATE INDEX tasks_pr ON tasks (repo, pr_number) WHERE pr_number IS NOT NULL;
CREATE INDEX tasks_branch ON tasks (repo, branch) WHERE branch <> '';

CREATE TABLE attempts (
    task_id     text NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    number      integer NOT NULL,
    kind        text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    outcome     text NOT NULL DEFAULT '',
    cost_usd    double precision NOT NULL DEFAULT 0,
    summary     text NOT NULL DEFAULT '',
    head_before text NOT NULL DEFAULT '',
    head_after  text NOT NULL DEFAULT '',
    error       text NOT NULL DEFAULT '',
    PRIMARY KEY (task_id, number)
);

CREATE INDEX attempts_started ON attempts (started_at);

CREATE TABLE attempt_logs (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id    text NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt    integer NOT NULL,
    lines      text[] NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE INDEX attempt_logs_task ON attempt_logs (task_id, attempt, seq);

CREATE TABLE task_events (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id     text NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    kind        text NOT NULL,
    reason      text NOT NULL DEFAULT '',
    actor       text NOT NULL DEFAULT '',
    delivery_id text NOT NULL DEFAULT '',
    from_status text,
    to_status   text,
    changes     jsonb NOT NULL DEFAULT '{}',
    at          timestamptz NOT NULL
);

CREATE INDEX task_events_task ON task_events (task_id, seq);
CREATE INDEX task_events_delivery ON task_events (delivery_id) WHERE delivery_id <> '';

CREATE TABLE deliveries (
    seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              text NOT NULL UNIQUE,
    event           text NOT NULL,
    action          text NOT NULL DEFAULT '',
    repo            text NOT NULL DEFAULT '',
    installation_id bigint,
    payload         bytea NOT NULL,
    received_at     timestamptz NOT NULL,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN
                        ('pending', 'processing', 'done', 'failed')),
    outcome         text NOT NULL DEFAULT '',
    ignore_reason   text NOT NULL DEFAULT '',
    claimed_by      text NOT NULL DEFAULT '',
    claimed_at      timestamptz,
    processed_at    timestamptz,
    attempts        integer NOT NULL DEFAULT 0
);

-- claims: oldest pending overall, and per repository the oldest pending / any processing row
CREATE INDEX deliveries_state ON deliveries (state, seq);
CREATE INDEX deliveries_repo_state ON deliveries (repo, state, seq);
CREATE INDEX deliveries_repo ON deliveries (repo, seq);

CREATE TABLE installations (
    id         bigint PRIMARY KEY,
    account    text NOT NULL DEFAULT '',
    suspended  boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL
);

CREATE TABLE installation_repos (
    installation_id bigint NOT NULL REFERENCES installations (id) ON DELETE CASCADE,
    repo            text NOT NULL,
    PRIMARY KEY (installation_id, repo)
);

CREATE INDEX installation_repos_repo ON installation_repos (repo);

-- One-time facts ("decided CI for <sha>", "commented about the base branch"): a key is
-- recorded once, so a decision taken by one process is never taken again by another.
CREATE TABLE facts (
    key         text PRIMARY KEY,
    value       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL
);

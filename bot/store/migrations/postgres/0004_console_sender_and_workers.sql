-- patchwright store, PostgreSQL backend, version 4: what the operator's console reads (see
-- the SQLite migration of the same version).
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS sender text NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event, action, seq);
CREATE TABLE IF NOT EXISTS workers (
    worker_id  text PRIMARY KEY,
    started_at timestamptz NOT NULL,
    seen_at    timestamptz NOT NULL,
    stats      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS workers_seen ON workers (seen_at);

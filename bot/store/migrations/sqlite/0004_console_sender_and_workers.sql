-- patchwright store, SQLite backend, version 4: what the operator's console reads.
-- sender: the login of the account that caused a delivery (the payload's sender.login, read
-- once at the ingress); '' when the payload names none or for rows recorded before.
ALTER TABLE deliveries ADD COLUMN sender TEXT NOT NULL DEFAULT '';
-- deliveries filtered by event (and action), newest first
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event, action, seq);
-- worker processes as they last reported themselves (report_worker / list_workers)
CREATE TABLE IF NOT EXISTS workers (
    worker_id  TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    seen_at    TEXT NOT NULL,
    stats      TEXT NOT NULL DEFAULT '{}'                      -- JSON object
) STRICT;
CREATE INDEX IF NOT EXISTS workers_seen ON workers (seen_at);

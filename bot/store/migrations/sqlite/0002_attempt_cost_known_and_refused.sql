-- patchwright store, SQLite backend, version 2: what an attempt's cost is worth and what its
-- sandbox refused.
-- cost_known: 0 when the agent reported no cost (the task's cap cannot be enforced).
ALTER TABLE attempts ADD COLUMN cost_known INTEGER NOT NULL DEFAULT 1;
-- refused: the connections the sandbox refused, one "host:port: reason" a line (capped).
ALTER TABLE attempts ADD COLUMN refused TEXT NOT NULL DEFAULT '';

-- patchwright store, PostgreSQL backend, version 2: what an attempt's cost is worth and what
-- its sandbox refused (see the SQLite migration of the same version).
ALTER TABLE attempts ADD COLUMN cost_known integer NOT NULL DEFAULT 1;
ALTER TABLE attempts ADD COLUMN refused text NOT NULL DEFAULT '';

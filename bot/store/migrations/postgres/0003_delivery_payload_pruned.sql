-- patchwright store, PostgreSQL backend, version 3: ledger retention (see the SQLite
-- migration of the same version).
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS payload_pruned_at timestamptz;
CREATE INDEX IF NOT EXISTS deliveries_prunable ON deliveries (received_at)
    WHERE state = 'done' AND payload_pruned_at IS NULL;

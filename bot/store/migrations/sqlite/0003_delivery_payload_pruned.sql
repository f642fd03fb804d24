-- patchwright store, SQLite backend, version 3: ledger retention.
-- payload_pruned_at: when the retention pruner dropped the row's payload (the body becomes
-- an empty blob); NULL while the payload is kept. Everything else of the row stays, so the
-- deliveries page still lists it with its outcome.
ALTER TABLE deliveries ADD COLUMN payload_pruned_at TEXT;
-- the pruner's candidates: processed rows still holding a payload, oldest first (a row leaves
-- the index once pruned, so every batch starts at the first row it can prune)
CREATE INDEX IF NOT EXISTS deliveries_prunable ON deliveries (received_at)
    WHERE state = 'done' AND payload_pruned_at IS NULL;

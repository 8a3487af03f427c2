-- A failed chunk can be loaded again: retried as it is (`POST .../chunks/{n}/retry`) or replaced
-- by new bytes (a re-PUT). Each time its `attempt` grows, and a load records its outcome only
-- for the attempt it claimed: a load still running from before cannot finish the new one.
-- `replacements` counts the re-PUTs, `retries` the retries, so the ledger says what happened.
ALTER TABLE chunks
    ADD COLUMN attempt integer NOT NULL DEFAULT 0,
    ADD COLUMN retries integer NOT NULL DEFAULT 0,
    ADD COLUMN replacements integer NOT NULL DEFAULT 0;
-- The gateways' retention sweep: failed chunks whose file is still kept for a retry.
CREATE INDEX chunks_failed_files ON chunks (committed_at)
    WHERE state = 'failed' AND NOT file_removed;

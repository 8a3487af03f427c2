-- Completion hooks: when an upload ends, a signed JSON POST to its callback URL (its own
-- `callback_url`, or INGEST_WEBHOOK_URL when it was created), delivered from here by the
-- gateways' sweep and retried with backoff until acknowledged: no restart loses one.
ALTER TABLE uploads
    ADD COLUMN callback_url text CHECK (length(callback_url) <= 2048),
    ADD COLUMN notified_state text,
    ADD COLUMN notify_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN notify_after timestamptz,
    ADD COLUMN notify_error text;
-- Only uploads whose end is not yet acknowledged: the sweep reads a handful of entries.
CREATE INDEX uploads_hooks_due ON uploads (notify_after)
    WHERE callback_url IS NOT NULL AND state IN ('done', 'failed', 'aborted', 'undone')
      AND notified_state IS DISTINCT FROM state;

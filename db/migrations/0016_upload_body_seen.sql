-- When a gateway last saw a chunk body of the upload still arriving (touched at its start and
-- every few seconds while it streams): an upload is not idle while a body is on its way, so it
-- neither settles `done` nor expires under a chunk that is still being received.
ALTER TABLE uploads ADD COLUMN body_seen_at timestamptz;

-- `Idempotency-Key` on `POST /api/upload`: the same key from the same client names the same
-- upload, so a client that retries a create whose answer it never saw does not make a second one.
ALTER TABLE uploads ADD COLUMN idempotency_key text
    CHECK (idempotency_key ~ '^[\x21-\x7e]{1,255}$');
CREATE UNIQUE INDEX uploads_idempotency_idx ON uploads (client_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Revocation that sticks: a client's tokens carry the generation they were issued in, and a
-- token of an older generation is refused, even once the client is enabled again. Bumped when
-- its secret is replaced (which also re-enables it) and when it is disabled. A counter, not a
-- time: no gateway's clock decides which tokens survive. Tokens from before carry none (0).
ALTER TABLE api_clients ADD COLUMN token_generation integer NOT NULL DEFAULT 0;

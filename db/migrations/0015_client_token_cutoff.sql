-- Revocation that sticks: a client's tokens issued before this moment (unix seconds) are
-- refused, even once the client is enabled again. Set when its secret is replaced (which also
-- re-enables it) and when it is disabled; NULL: every token of the client counts.
ALTER TABLE api_clients ADD COLUMN tokens_valid_from bigint;

-- What an API client's tokens may do: `upload` (the upload API: what every client could do
-- before) and `admin` (managing API clients over the API). Tokens carry the scopes, and every
-- request is checked against the client's scopes as they are now.
ALTER TABLE api_clients
    ADD COLUMN scopes text[] NOT NULL DEFAULT '{upload}'
        CHECK (scopes <@ ARRAY['upload', 'admin']::text[] AND cardinality(scopes) > 0);

-- A client may abort an upload (`DELETE /api/upload/{folder}`: chunks not loaded yet never will
-- be) or undo its import (`?rows=true`: its rows are deleted by their lineage). Both end it.
ALTER TABLE uploads DROP CONSTRAINT uploads_state_check;
ALTER TABLE uploads ADD CONSTRAINT uploads_state_check
    CHECK (state IN ('receiving', 'processing', 'done', 'failed', 'aborted', 'undone'));
ALTER TABLE uploads ADD COLUMN rows_undone bigint NOT NULL DEFAULT 0;

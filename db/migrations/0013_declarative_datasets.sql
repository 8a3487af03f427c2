-- Declarative datasets (datasets/*.toml): an upload remembers the header its chunks are read
-- with, tables other than `transactions` are created by the engine from their definition, and
-- their partitions (by month or by day, on a date, timestamp or timestamptz column) are made by
-- one function for every table.

-- The column names, in file order, of the first header the upload's chunks carried (or the
-- dataset's declared order when its first stored chunk had none): every chunk of the upload is
-- read with it, so a chunk without a header is read like the one that had it.
ALTER TABLE uploads ADD COLUMN header text[];

-- Rows a dataset with `on_conflict = "skip"` did not load because their unique key was in the
-- table already: counted apart from loaded and rejected rows.
ALTER TABLE chunks ADD COLUMN rows_skipped bigint NOT NULL DEFAULT 0;
ALTER TABLE uploads ADD COLUMN rows_skipped bigint NOT NULL DEFAULT 0;

-- Creates partition `name` of `parent` for `key` values in [first, next) unless it exists, as
-- ensure_transactions_partition (0006) does for `transactions`: made on its own and attached
-- (running COPYs into other partitions do not wait), rows of that range already in
-- `<parent>_default` moved into it, one caller at a time per parent across all engines. The
-- bounds are text so a timestamptz key gets explicit UTC bounds, whatever the session's zone.
CREATE FUNCTION ensure_partition(parent text, name text, key text, first text, next text)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass(format('%I', name)) IS NOT NULL THEN
        RETURN true;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('ingest: partitions of ' || parent));
    IF to_regclass(format('%I', name)) IS NOT NULL THEN
        RETURN true; -- Made by another engine while this one waited.
    END IF;
    EXECUTE format(
        'CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)',
        name, parent);
    EXECUTE format(
        'WITH moved AS (DELETE FROM %I WHERE %I >= %L AND %I < %L RETURNING *)
         INSERT INTO %I SELECT * FROM moved',
        parent || '_default', key, first, key, next, name);
    EXECUTE format(
        'ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
        parent, name, first, next);
    RETURN true;
END;
$$;

-- The table an upload's rows go to, fixed when it is created: undoing an upload deletes from
-- it even if its dataset's definition was removed or renamed since.
ALTER TABLE uploads ADD COLUMN target_table text;
UPDATE uploads SET target_table = 'transactions' WHERE dataset = 'transactions';

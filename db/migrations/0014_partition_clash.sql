-- Creates partition `name` of `parent` for `key` values in [first, next) unless it exists, as
-- ensure_transactions_partition (0006) does for `transactions`: made on its own and attached
-- (running COPYs into other partitions do not wait), rows of that range already in
-- `<parent>_default` moved into it, one caller at a time per parent across all engines. The
-- bounds are text so a timestamptz key gets explicit UTC bounds, whatever the session's zone.
--
-- A relation named like a partition that is not one (another dataset's table, say) must not
-- pass for the partition (0013's first version answered true, and the rows of that range
-- stayed in the default partition for good): it refuses, saying what is in the way.
CREATE OR REPLACE FUNCTION ensure_partition(parent text, name text, key text, first text, next text)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    existing regclass := to_regclass(format('%I', name));
BEGIN
    IF existing IS NULL THEN
        PERFORM pg_advisory_xact_lock(hashtext('ingest: partitions of ' || parent));
        existing := to_regclass(format('%I', name));
    END IF;
    IF existing IS NOT NULL THEN
        -- Made before, or by another engine while this one waited: it must be parent's.
        IF NOT EXISTS (SELECT 1 FROM pg_inherits
                       WHERE inhrelid = existing AND inhparent = to_regclass(format('%I', parent))) THEN
            RAISE EXCEPTION 'relation % exists and is not a partition of %', name, parent;
        END IF;
        RETURN true;
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

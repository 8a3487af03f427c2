-- A relation named like a partition that is not one (another dataset's table, say) must not
-- pass for the partition: ensure_partition (0013) would answer true and the rows of that range
-- would stay in the default partition for good. Now it refuses, saying what is in the way.
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

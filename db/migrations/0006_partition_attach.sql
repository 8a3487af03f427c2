-- Monthly partitions are made without holding up running loads, and a month whose rows already
-- sit in the default partition gets its partition too: those rows are moved into it.
--
-- `CREATE TABLE ... PARTITION OF` takes an ACCESS EXCLUSIVE lock on `transactions`: it waits for
-- every open COPY into the table, and every COPY started meanwhile waits behind it. A table
-- created on its own and then attached needs only SHARE UPDATE EXCLUSIVE on `transactions`,
-- which running COPYs (ROW EXCLUSIVE) do not conflict with; the attach locks the default
-- partition, which loads only touch for a month that has no partition yet. A COPY that began
-- before the attach and still routes a row of that month to the default partition fails its
-- default-partition check and is retried; it does not load the row into the wrong place.
--
-- Runs in its caller's transaction; one caller at a time across all engines (advisory lock),
-- so two engines making the same month do not race.
CREATE OR REPLACE FUNCTION ensure_transactions_partition(month date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    first_day date := date_trunc('month', month)::date;
    next_day date := (date_trunc('month', month) + interval '1 month')::date;
    name text := format('transactions_%s', to_char(first_day, 'YYYY_MM'));
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN true;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('ingest: transactions partitions'));
    IF to_regclass(name) IS NOT NULL THEN
        RETURN true; -- Made by another engine while this one waited.
    END IF;
    EXECUTE format(
        'CREATE TABLE %I (LIKE transactions INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)',
        name);
    EXECUTE format(
        'WITH moved AS (DELETE FROM transactions_default WHERE date >= %L AND date < %L RETURNING *)
         INSERT INTO %I SELECT * FROM moved',
        first_day, next_day, name);
    EXECUTE format(
        'ALTER TABLE transactions ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
        name, first_day, next_day);
    RETURN true;
END;
$$;

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

-- ensure_partition(parent, name, key, first, next), the one function that makes a partition of
-- any dataset's table, was first defined here; 0014 replaces it whole (CREATE OR REPLACE) and is
-- its only definition now. Databases migrated before end with 0014's version all the same.

-- The table an upload's rows go to, fixed when it is created: undoing an upload deletes from
-- it even if its dataset's definition was removed or renamed since.
ALTER TABLE uploads ADD COLUMN target_table text;
UPDATE uploads SET target_table = 'transactions' WHERE dataset = 'transactions';

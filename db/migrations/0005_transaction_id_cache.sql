-- Every loaded row takes an id from the identity sequence. With the default CACHE 1 each of the
-- engine's concurrent COPYs locks the sequence's one buffer for every row; with a cache each
-- backend takes 1000 ids at a time. Ids stay unique; they are no longer in commit order across
-- connections, and a restart leaves a gap (the lineage columns, not the id, order the rows).
ALTER TABLE transactions ALTER COLUMN id SET CACHE 1000;

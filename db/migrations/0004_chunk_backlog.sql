-- Each engine reports, every lease heartbeat, how many chunks of its partitions are stored and not
-- yet loaded or failed, and how long the oldest has waited (engine/src/lag.rs). Only waiting
-- chunks are in this index, so the query reads a handful of entries however long the ledger grows.
CREATE INDEX chunks_backlog ON chunks (partition, received_at) WHERE state = 'stored';

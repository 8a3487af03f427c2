-- A chunk file is removed right after its chunk commits; a process killed in between leaves the
-- file behind. `file_removed` lets any engine find and remove such leftovers.
ALTER TABLE chunks ADD COLUMN file_removed boolean NOT NULL DEFAULT false;
CREATE INDEX chunks_files_to_remove ON chunks (partition, committed_at)
    WHERE state <> 'stored' AND NOT file_removed;

-- A big chunk is loaded as several pieces at once, each on its own COPY connection and in its
-- own transaction (engine/src/pieces.rs). The plan is written once, before any piece loads, so
-- every engine that loads the chunk (a retry, a peer after a takeover) cuts it the same way; a
-- piece's rows commit together with its move from 'stored' to 'loaded' here, which is what keeps
-- each piece, and so the chunk, loaded exactly once. The chunk's own ledger row moves to
-- 'loaded' when every piece has, and the plan is deleted then.
CREATE TABLE chunk_pieces (
    upload_id     uuid NOT NULL,
    chunk_no      integer NOT NULL,
    piece_no      integer NOT NULL,
    byte_start    bigint NOT NULL,
    byte_end      bigint NOT NULL,
    first_line    integer NOT NULL,
    state         text NOT NULL DEFAULT 'stored' CHECK (state IN ('stored', 'loaded')),
    rows_loaded   bigint NOT NULL DEFAULT 0,
    rows_rejected bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (upload_id, chunk_no, piece_no),
    FOREIGN KEY (upload_id, chunk_no) REFERENCES chunks (upload_id, chunk_no) ON DELETE CASCADE
);

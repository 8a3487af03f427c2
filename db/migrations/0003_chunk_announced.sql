-- A chunk's message is published after its ledger row commits; a gateway killed in between
-- leaves a stored chunk no engine ever hears of (and a resuming client does not send it again:
-- the gateway has it). `announced_at` is set once the broker confirmed the message, so any
-- gateway can find chunks never announced and publish them. Existing rows were announced.
ALTER TABLE chunks ADD COLUMN announced_at timestamptz;
UPDATE chunks SET announced_at = received_at;
CREATE INDEX chunks_unannounced ON chunks (received_at)
    WHERE state = 'stored' AND announced_at IS NULL;

-- ferry's SQLite schema, version 5: ELT loads.
--
-- Where each puller of a pipeline stands (an incremental cursor), written in the transaction
-- that seats the passengers it pulled up to there, so it is never ahead of or behind the queue.
CREATE TABLE puller_states (
    client     TEXT    NOT NULL,
    pipeline   TEXT    NOT NULL,
    puller     TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (client, pipeline, puller)
) WITHOUT ROWID;

-- Why ferry paused a pipeline by itself (too many failed runs in a row); NULL when a person
-- paused it.
ALTER TABLE pipeline_flags ADD COLUMN reason TEXT;

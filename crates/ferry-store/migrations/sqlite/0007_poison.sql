-- Issue 12: one poison item never stops the process.

-- A passenger that was in flight when a process died is leased alone until its results are
-- recorded, so that one that kills the process cannot take its batch-mates down with it.
ALTER TABLE passengers ADD COLUMN alone INTEGER NOT NULL DEFAULT 0;

-- Input items a puller could not take (an unreadable or malformed file), per puller: later
-- pulls skip them until a person retries or discards them, or the item changes.
CREATE TABLE quarantine (
    client      TEXT NOT NULL,
    pipeline    TEXT NOT NULL,
    puller      TEXT NOT NULL,
    item        TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    reason      TEXT NOT NULL,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    times       INTEGER NOT NULL,
    -- 1 once a person discarded it: skipped for good (until it changes), hidden from the lists.
    discarded   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (client, pipeline, puller, item)
);

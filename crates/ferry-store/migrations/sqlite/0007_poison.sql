-- Issue 12: one poison item never stops the process.

-- A passenger that was in flight when a process died is leased alone until its results are
-- recorded, so that one that kills the process cannot take its batch-mates down with it.
ALTER TABLE passengers ADD COLUMN alone INTEGER NOT NULL DEFAULT 0;

-- Input items a puller could not take (an unreadable or malformed file), per puller: later
-- pulls skip them until a person retries or discards them, or the item changes (its
-- fingerprint: a file's size and modification time).
CREATE TABLE quarantine (
    id          INTEGER PRIMARY KEY,
    client      TEXT NOT NULL,
    pipeline    TEXT NOT NULL,
    puller      TEXT NOT NULL,
    item        TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    reason      TEXT NOT NULL,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    -- How many pulls found it since it was quarantined.
    times       INTEGER NOT NULL,
    -- 1 once a person discarded it: skipped for good (until it changes), no longer listed.
    discarded   INTEGER NOT NULL DEFAULT 0,
    UNIQUE (client, pipeline, puller, item)
);

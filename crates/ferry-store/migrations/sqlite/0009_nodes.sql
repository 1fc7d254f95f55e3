-- ferry's SQLite schema, version 9: the store knows which process (node) holds what (issue 16).
--
-- A node is one running `ferry run`. It joins at start and heartbeats while it runs; a node whose
-- heartbeat is older than the node timeout is dead, and only then do its leases come back and
-- its running runs fail. Leases and runs of a node not listed here (an earlier version of ferry
-- took them, or the node's row is gone) belong to no living node.
CREATE TABLE nodes (
    id           INTEGER PRIMARY KEY,
    -- host, process id and start time: shown to people, never used to match.
    name         TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);

ALTER TABLE passengers ADD COLUMN lease_node INTEGER;
ALTER TABLE runs ADD COLUMN node INTEGER;

-- A scheduled run is started by the node that claims its slot (the time the schedule fired),
-- so several nodes never start the same run twice.
CREATE TABLE run_claims (
    client   TEXT    NOT NULL,
    pipeline TEXT    NOT NULL,
    slot     INTEGER NOT NULL,
    node     INTEGER NOT NULL,
    PRIMARY KEY (client, pipeline, slot)
) WITHOUT ROWID;

-- Which node pulls a pipeline, until when; the holder renews it while it runs.
CREATE TABLE pull_leases (
    client   TEXT    NOT NULL,
    pipeline TEXT    NOT NULL,
    node     INTEGER NOT NULL,
    until    INTEGER NOT NULL,
    PRIMARY KEY (client, pipeline)
) WITHOUT ROWID;

-- ferry's SQLite schema, version 1.
--
-- Times are INTEGER milliseconds since the Unix epoch (UTC). Ids are 16-byte UUID blobs.
-- The queue is split by temperature: `passengers` holds the narrow row that leasing and
-- finishing touch on every trip; the bodies live in `payloads`, written once at seat.

-- One row per passenger. `seq` is the internal key every other queue table points to.
CREATE TABLE passengers (
    seq           INTEGER PRIMARY KEY,
    id            BLOB    NOT NULL,
    client        TEXT    NOT NULL,
    pipeline      TEXT    NOT NULL,
    source_system TEXT    NOT NULL,
    external_id   TEXT    NOT NULL,
    -- pending | in_flight | failed | complete | filtered | dead | discarded
    state         TEXT    NOT NULL,
    -- When the open work is due; for `in_flight`, when the lease expires.
    due_at        INTEGER NOT NULL,
    lease_token   INTEGER,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    -- Set when the passenger reaches a purgeable state; the cleaner's clock starts here.
    completed_at  INTEGER,
    -- The most recent error of any step.
    last_error    TEXT
);

CREATE UNIQUE INDEX passengers_id ON passengers (id);

-- The de-duplication key; seat inserts with ON CONFLICT DO NOTHING.
CREATE UNIQUE INDEX passengers_dedup
    ON passengers (client, pipeline, source_system, external_id);

-- Partial indexes below spell their condition with OR, never with an IN list: SQLite evaluates
-- an IN list through a temporary table, and it evaluates the condition of every partial index
-- twice on each update of a passenger. Queries that need a partial index repeat its condition
-- word for word (or name one of its states) so that SQLite sees it applies.

-- Leasing and `next_due`: only open passengers are indexed, so the index stays as small as the
-- backlog however many finished passengers linger.
CREATE INDEX passengers_due
    ON passengers (client, pipeline, due_at)
    WHERE (state = 'pending' OR state = 'failed' OR state = 'in_flight');

-- The cleaner: purgeable passengers by age.
CREATE INDEX passengers_purge
    ON passengers (client, completed_at)
    WHERE (state = 'complete' OR state = 'filtered' OR state = 'discarded');

-- The queue browser pages newest first by id (UUIDv7 ids sort by creation time).
CREATE INDEX passengers_client_list ON passengers (client, id);
CREATE INDEX passengers_pipeline_list ON passengers (client, pipeline, id);

-- Passengers that need a person (dead) or are in back-off (failed) are few; browsing them
-- must not scan every complete passenger.
CREATE INDEX passengers_trouble_list
    ON passengers (client, state, id)
    WHERE (state = 'failed' OR state = 'dead');

-- The content of a passenger, written at seat. `processed_*` is what the processors made of it.
CREATE TABLE payloads (
    seq                  INTEGER PRIMARY KEY,
    -- Content hash of the pipeline definition the passenger was seated with.
    version              TEXT    NOT NULL,
    -- JSON object of strings; NULL when empty.
    metadata             TEXT,
    media_type           TEXT    NOT NULL,
    body                 BLOB    NOT NULL,
    -- Number of rows in `attachments`, so leasing only looks there when there are some.
    attachments          INTEGER NOT NULL,
    processed_metadata   TEXT,
    processed_media_type TEXT,
    processed_body       BLOB
);

-- The state of each processor and pusher of each passenger. In flight is not stored here:
-- it is derived from the passenger's lease.
CREATE TABLE steps (
    seq         INTEGER NOT NULL,
    idx         INTEGER NOT NULL,
    -- processor | pusher
    kind        TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    -- pending | failed | done | dead | skipped | filtered
    state       TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_try_at INTEGER,
    last_error  TEXT,
    done_at     INTEGER,
    PRIMARY KEY (seq, idx)
) WITHOUT ROWID;

-- One row per failed attempt of a step, in the order they happened.
CREATE TABLE attempts (
    seq     INTEGER NOT NULL,
    idx     INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    error   TEXT    NOT NULL
);

CREATE INDEX attempts_seq ON attempts (seq);

CREATE TABLE attachments (
    seq        INTEGER NOT NULL,
    idx        INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    media_type TEXT    NOT NULL,
    content    BLOB    NOT NULL,
    PRIMARY KEY (seq, idx)
);

-- Passengers per pipeline and state, kept in step with `passengers` by every write, so the
-- dashboard and back-pressure never count a million rows.
CREATE TABLE queue_counts (
    client   TEXT    NOT NULL,
    pipeline TEXT    NOT NULL,
    state    TEXT    NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (client, pipeline, state)
) WITHOUT ROWID;

-- AUTOINCREMENT: a purged run's id is never given to a new run.
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    client      TEXT    NOT NULL,
    pipeline    TEXT    NOT NULL,
    version     TEXT    NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    -- running | succeeded | partial | failed
    status      TEXT    NOT NULL,
    pulled      INTEGER NOT NULL DEFAULT 0,
    seated      INTEGER NOT NULL DEFAULT 0,
    duplicates  INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    error       TEXT
);

CREATE INDEX runs_pipeline ON runs (client, pipeline, id);
CREATE INDEX runs_finished ON runs (client, finished_at) WHERE status <> 'running';
CREATE INDEX runs_running ON runs (status) WHERE status = 'running';

CREATE TABLE run_logs (
    run     INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    level   TEXT    NOT NULL,
    message TEXT    NOT NULL
);

CREATE INDEX run_logs_run ON run_logs (run);

CREATE TABLE definitions (
    file      TEXT    NOT NULL,
    hash      TEXT    NOT NULL,
    content   TEXT    NOT NULL,
    loaded_at INTEGER NOT NULL,
    UNIQUE (file, hash)
);

CREATE TABLE pipeline_flags (
    client   TEXT    NOT NULL,
    pipeline TEXT    NOT NULL,
    paused   INTEGER NOT NULL,
    PRIMARY KEY (client, pipeline)
) WITHOUT ROWID;

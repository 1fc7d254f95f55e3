-- ferry's PostgreSQL schema, version 1. Applied inside the store's own schema (the URL's
-- `schema=`, default `ferry`), which is the connection's `search_path`.
--
-- Times are bigint milliseconds since the Unix epoch (UTC), as in the SQLite store. Ids are
-- uuid. The queue is split by temperature, three ways: `queue` holds the narrow row that
-- leasing and finishing update on every trip, with as few indexes as possible (an update that
-- changes an indexed column, as every lease and finish does, writes an entry into every index
-- of the table: 1,000 leased passengers cost 39 ms with the browser's indexes on the same
-- table, 8 ms without, measured on PostgreSQL 15); `passengers` holds what never changes after
-- seat, with the browser's indexes; bodies and attachments are in `payloads` and
-- `attachments`, written once.
--
-- Several ferry processes may work one schema at once: leases take rows with
-- `FOR NO KEY UPDATE SKIP LOCKED`, and nothing that every write touches lives in one row (the
-- counts are appended deltas, see `queue_count_deltas`).

-- One row per passenger, as pulled; never updated. `seq` is the internal key every other
-- queue table points to.
CREATE TABLE passengers (
    seq           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            uuid   NOT NULL UNIQUE,
    client        text   NOT NULL,
    pipeline      text   NOT NULL,
    source_system text   NOT NULL,
    external_id   text   NOT NULL,
    created_at    bigint NOT NULL,
    -- The passenger a `split` processor made this one of.
    parent        uuid
);

-- The de-duplication key; seat inserts with ON CONFLICT DO NOTHING.
CREATE UNIQUE INDEX passengers_dedup
    ON passengers (client, pipeline, source_system, external_id);

-- The queue browser pages newest first by id (UUIDv7 ids sort by creation time), or by
-- creation time within a time range.
CREATE INDEX passengers_client_list ON passengers (client, id);
CREATE INDEX passengers_pipeline_list ON passengers (client, pipeline, id);
CREATE INDEX passengers_created ON passengers (client, created_at, id);

-- A passenger's children, without a scan of the queue.
CREATE INDEX passengers_parent ON passengers (parent) WHERE parent IS NOT NULL;

-- Where each passenger is on its journey: updated on every lease and finish. A lower
-- fillfactor leaves room on the page for the new row versions, and autovacuum comes by sooner
-- than its default of a fifth of the table.
CREATE TABLE queue (
    seq          bigint  PRIMARY KEY REFERENCES passengers (seq) ON DELETE CASCADE,
    -- The passenger's, repeated here for the indexes below and the counts.
    client       text    NOT NULL,
    pipeline     text    NOT NULL,
    -- pending | in_flight | failed | complete | filtered | dead | discarded
    state        text    NOT NULL,
    -- When the open work is due; for `in_flight`, when the lease expires.
    due_at       bigint  NOT NULL,
    -- The lease and the node that holds it (`nodes.id`).
    lease_token  bigint,
    lease_node   bigint,
    -- In flight when a process died: leased alone until its results are recorded.
    alone        boolean NOT NULL DEFAULT false,
    updated_at   bigint  NOT NULL,
    -- Set when the passenger reaches a purgeable state; the cleaner's clock starts here.
    completed_at bigint,
    -- The most recent error of any step.
    last_error   text
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02,
        autovacuum_analyze_scale_factor = 0.02);

-- Leasing and `next_due`: only open passengers are indexed, so the index stays as small as
-- the backlog however many finished passengers linger.
CREATE INDEX queue_due ON queue (client, pipeline, due_at, seq)
    WHERE state IN ('pending', 'failed', 'in_flight');

-- The leases by node, to take back a dead node's (few rows: what is in flight now).
CREATE INDEX queue_leased ON queue (lease_node) WHERE state = 'in_flight';

-- The cleaner: purgeable passengers by age.
CREATE INDEX queue_purge ON queue (client, completed_at)
    WHERE state IN ('complete', 'filtered', 'discarded');

-- Passengers that need a person (dead) or are in back-off (failed) are few; browsing them
-- must not read every complete passenger.
CREATE INDEX queue_trouble ON queue (client, state, seq)
    WHERE state IN ('failed', 'dead');

-- The content of a passenger, written at seat; `processed_*` is what the processors made of
-- it. Rarely updated, so the default fillfactor.
CREATE TABLE payloads (
    seq                  bigint  PRIMARY KEY REFERENCES passengers (seq) ON DELETE CASCADE,
    -- Content hash of the pipeline definition the passenger was seated with.
    version              text    NOT NULL,
    -- JSON object of strings; NULL when empty.
    metadata             text,
    media_type           text    NOT NULL,
    body                 bytea   NOT NULL,
    -- Number of rows in `attachments`, so leasing only looks there when there are some.
    attachments          integer NOT NULL,
    processed_metadata   text,
    processed_media_type text,
    processed_body       bytea
);

CREATE TABLE attachments (
    seq        bigint  NOT NULL REFERENCES passengers (seq) ON DELETE CASCADE,
    idx        integer NOT NULL,
    name       text    NOT NULL,
    media_type text    NOT NULL,
    content    bytea   NOT NULL,
    PRIMARY KEY (seq, idx)
);

-- The state of each processor and pusher of each passenger. In flight is not stored here: it
-- is derived from the passenger's lease. Updated on every finish, like `queue`.
CREATE TABLE steps (
    seq         bigint  NOT NULL REFERENCES passengers (seq) ON DELETE CASCADE,
    idx         integer NOT NULL,
    -- processor | pusher
    kind        text    NOT NULL,
    name        text    NOT NULL,
    -- pending | failed | done | dead | skipped | filtered
    state       text    NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    next_try_at bigint,
    last_error  text,
    done_at     bigint,
    -- What the target answered, when the pusher keeps it.
    result      text,
    PRIMARY KEY (seq, idx)
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02,
        autovacuum_analyze_scale_factor = 0.02);

-- One row per failed attempt of a step; `id` keeps the order they happened in.
CREATE TABLE attempts (
    id      bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    seq     bigint  NOT NULL REFERENCES passengers (seq) ON DELETE CASCADE,
    idx     integer NOT NULL,
    attempt integer NOT NULL,
    at      bigint  NOT NULL,
    error   text    NOT NULL
);

CREATE INDEX attempts_seq ON attempts (seq, id);

-- Passengers per pipeline and state, as changes: every write appends the deltas it made
-- (one row per pipeline and state it touched), and readers sum them. A single row per
-- (client, pipeline, state) would be updated by every write of that pipeline and so make
-- concurrent writers of all nodes wait for each other. `compact_counts` folds the rows into
-- one per key now and then; inserts are never blocked by it.
CREATE TABLE queue_count_deltas (
    client   text   NOT NULL,
    pipeline text   NOT NULL,
    state    text   NOT NULL,
    n        bigint NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0.05);

CREATE INDEX queue_count_deltas_key ON queue_count_deltas (client, pipeline, state);

-- The queue browser's text search, without pg_trgm (not always installed): the lowercased
-- trigrams of each passenger's `external_id` and `source_system`, filled off the seat path by
-- `index_search`. Seat lists each new passenger in `search_pending`; indexing takes passengers
-- off that list. A search looks up the passengers holding all the needle's trigrams, adds the
-- pending ones, and the exact condition decides. (A high-water mark on `seq`, as the SQLite
-- store keeps, would skip passengers whose seat commits after a later one's: here several
-- nodes seat at once.)
CREATE TABLE passenger_trigrams (
    trigram text   NOT NULL,
    seq     bigint NOT NULL REFERENCES passengers (seq) ON DELETE CASCADE,
    PRIMARY KEY (trigram, seq)
);

CREATE INDEX passenger_trigrams_seq ON passenger_trigrams (seq);

CREATE TABLE search_pending (
    seq bigint PRIMARY KEY REFERENCES passengers (seq) ON DELETE CASCADE
);

CREATE TABLE runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client      text   NOT NULL,
    pipeline    text   NOT NULL,
    version     text   NOT NULL,
    started_at  bigint NOT NULL,
    finished_at bigint,
    -- running | succeeded | partial | failed
    status      text   NOT NULL,
    pulled      bigint NOT NULL DEFAULT 0,
    seated      bigint NOT NULL DEFAULT 0,
    duplicates  bigint NOT NULL DEFAULT 0,
    failed      bigint NOT NULL DEFAULT 0,
    error       text,
    -- The node that runs it (`nodes.id`).
    node        bigint
);

CREATE INDEX runs_pipeline ON runs (client, pipeline, id);
CREATE INDEX runs_client ON runs (client, id);
CREATE INDEX runs_finished ON runs (client, finished_at) WHERE status <> 'running';
CREATE INDEX runs_running ON runs (status) WHERE status = 'running';
CREATE INDEX runs_throughput ON runs (started_at, client, pipeline, seated) WHERE seated > 0;

CREATE TABLE run_logs (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run     bigint NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    at      bigint NOT NULL,
    level   text   NOT NULL,
    message text   NOT NULL
);

CREATE INDEX run_logs_run ON run_logs (run, id);

CREATE TABLE definitions (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    file      text   NOT NULL,
    hash      text   NOT NULL,
    content   text   NOT NULL,
    loaded_at bigint NOT NULL,
    UNIQUE (file, hash)
);

CREATE TABLE pipeline_flags (
    client   text    NOT NULL,
    pipeline text    NOT NULL,
    paused   boolean NOT NULL,
    -- Why ferry paused it by itself; NULL when a person did.
    reason   text,
    PRIMARY KEY (client, pipeline)
);

-- Where each puller of a pipeline stands, written in the transaction that seats what it
-- pulled up to there.
CREATE TABLE puller_states (
    client     text   NOT NULL,
    pipeline   text   NOT NULL,
    puller     text   NOT NULL,
    state      text   NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (client, pipeline, puller)
);

-- Input items a puller could not take, kept out of later pulls until a person acts.
CREATE TABLE quarantine (
    id          bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client      text    NOT NULL,
    pipeline    text    NOT NULL,
    puller      text    NOT NULL,
    item        text    NOT NULL,
    fingerprint text    NOT NULL,
    reason      text    NOT NULL,
    first_seen  bigint  NOT NULL,
    last_seen   bigint  NOT NULL,
    times       bigint  NOT NULL,
    discarded   boolean NOT NULL DEFAULT false,
    UNIQUE (client, pipeline, puller, item)
);

-- Console logins, by the SHA-256 of the cookie value.
CREATE TABLE sessions (
    id_hash    text   PRIMARY KEY,
    client     text   NOT NULL,
    "user"     text   NOT NULL,
    csrf       text   NOT NULL,
    expires_at bigint NOT NULL
);

-- API tokens, by the SHA-256 of their secret. An identity: a revoked token's id is never
-- given to a new one.
CREATE TABLE api_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hash         text   NOT NULL UNIQUE,
    client       text   NOT NULL,
    name         text   NOT NULL,
    role         text   NOT NULL,
    created_by   text   NOT NULL,
    created_at   bigint NOT NULL,
    last_used_at bigint
);

-- What people did; `id` orders entries of the same millisecond.
CREATE TABLE audit (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     bigint NOT NULL,
    client text   NOT NULL,
    actor  text   NOT NULL,
    action text   NOT NULL,
    target text   NOT NULL,
    detail text   NOT NULL
);

CREATE INDEX audit_client ON audit (client, at, id);
CREATE INDEX audit_target ON audit (target, at, id);
CREATE INDEX audit_at ON audit (at, id);

-- The processes working this store (nodes). A node whose heartbeat is older than the node
-- timeout is dead: only then do its leases come back and its running runs fail. Leases and
-- runs of a node not listed here belong to no living node.
CREATE TABLE nodes (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- host and process id: shown to people, never used to match.
    name         text   NOT NULL,
    started_at   bigint NOT NULL,
    heartbeat_at bigint NOT NULL
);

-- A scheduled run is started by the node that claims its slot (the time the schedule fired).
CREATE TABLE run_claims (
    client   text   NOT NULL,
    pipeline text   NOT NULL,
    slot     bigint NOT NULL,
    node     bigint NOT NULL,
    PRIMARY KEY (client, pipeline, slot)
);

-- Which node pulls a pipeline, until when; the holder renews it with its heartbeat.
CREATE TABLE pull_leases (
    client   text   NOT NULL,
    pipeline text   NOT NULL,
    node     bigint NOT NULL,
    until    bigint NOT NULL,
    PRIMARY KEY (client, pipeline)
);

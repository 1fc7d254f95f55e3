-- ferry's SQLite schema, version 3: what the console needs. Times are INTEGER milliseconds
-- since the Unix epoch, like everywhere else.

-- A passenger's children (`children`), without a scan of the queue. Only split passengers
-- have a parent, so only they are indexed.
CREATE INDEX passengers_parent ON passengers (parent) WHERE parent IS NOT NULL;

-- The runs browser pages newest first by id within one client, as the queue browser does.
-- (Within one pipeline, `runs_pipeline` does the same.)
CREATE INDEX runs_client ON runs (client, id);

-- The dashboard's throughput chart: passengers seated per pipeline by the runs started since
-- a time, read from this index alone. Runs that seated nothing add nothing to the chart and are
-- left out; queries repeat the condition word for word.
CREATE INDEX runs_throughput ON runs (started_at, client, pipeline, seated) WHERE seated > 0;

-- Console logins. Only the SHA-256 of the cookie value is kept: a copy of this file does not
-- let anyone in.
CREATE TABLE sessions (
    id_hash    TEXT    PRIMARY KEY,
    client     TEXT    NOT NULL,
    user       TEXT    NOT NULL,
    -- The token every state-changing request of the session must carry.
    csrf       TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

-- API tokens, by the SHA-256 of their secret. AUTOINCREMENT: a revoked token's id is never
-- given to a new one, so an id in the audit log names one token only.
CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    hash         TEXT    NOT NULL UNIQUE,
    client       TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    -- operator | administrator
    role         TEXT    NOT NULL,
    created_by   TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER
);

-- What people did, newest first. `id` is the rowid: it orders entries of the same millisecond.
CREATE TABLE audit (
    id     INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    client TEXT    NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    target TEXT    NOT NULL,
    detail TEXT    NOT NULL
);

-- The audit log of one client, of one target (a passenger's history), and of everyone.
CREATE INDEX audit_client ON audit (client, at);
CREATE INDEX audit_target ON audit (target, at);
CREATE INDEX audit_at ON audit (at);

-- ferry's SQLite schema, version 6: the queue browser's text search.
--
-- A trigram index over `external_id` and `source_system`, so that searching for a rare text
-- (a pasted order number) looks up its few passengers instead of reading every passenger of
-- the client. The index is filled off the seat path: a background task adds the passengers
-- seated since it last ran (`search_mark.seq`, the highest `seq` indexed), a few thousand per
-- transaction. A search reads the index up to the mark and checks the passengers beyond it one
-- by one, so it misses nothing however far behind the index is. Contentless: the texts stay in
-- `passengers`, the index holds only the trigrams; a purge deletes a passenger's entry.
CREATE VIRTUAL TABLE passenger_search USING fts5(
    external_id, source_system,
    content = '', contentless_delete = 1, tokenize = 'trigram'
);

CREATE TABLE search_mark (
    only INTEGER PRIMARY KEY CHECK (only = 1),
    seq  INTEGER NOT NULL
);
INSERT INTO search_mark VALUES (1, 0);

-- ferry's SQLite schema, version 4: the queue browser's time ranges.
--
-- A list filtered by creation time walks this index backwards from the end of the range and
-- stops after one page, whatever the range (ordered by id, a range far back first walked past
-- every newer passenger). `id` breaks ties and is the second half of the page cursor.
CREATE INDEX passengers_created ON passengers (client, created_at, id);

-- ferry's SQLite schema, version 2: passengers made by a `split` processor name their parent.
ALTER TABLE passengers ADD COLUMN parent BLOB;

//! `table` puller: CSV, JSON, NDJSON and Excel files read as record batches, with column mapping and type conversion.

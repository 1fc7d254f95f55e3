//! `sql` puller: runs a query on a PostgreSQL, MySQL/MariaDB or SQLite connection and streams the rows as record batches.

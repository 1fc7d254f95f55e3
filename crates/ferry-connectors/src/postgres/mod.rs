//! `postgres` pusher: loads record batches into a PostgreSQL table with COPY (append, replace, merge, history).

//! `http` puller: JSON REST APIs read as record batches (auth, pagination, retries).

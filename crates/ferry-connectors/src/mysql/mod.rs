//! MySQL and MariaDB: the `mysql` connection type and the `sql` puller's reader.

pub(crate) mod connection;
mod reader;

pub(crate) use connection::Mysql;

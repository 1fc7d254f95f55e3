//! SQLite: the `sqlite` connection type and the `sql` puller's reader.

pub mod connection;
mod reader;

pub use connection::SqliteConnectionFactory;

//! SQLite store (to be written).
use std::path::Path;
pub struct SqliteStore;
impl SqliteStore { pub async fn open(_path: &Path) -> crate::Result<Self> { todo!() } }

//! Raw serde structs mirroring the files (filled in by the validation work).

//! Positions of keys in a YAML file (filled in by the validation work).

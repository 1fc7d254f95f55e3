//! How deeply values from outside may nest (issue 12).
//!
//! Every decoder refuses input whose arrays and objects nest deeper than [`MAX_DEPTH`], so the
//! recursive code that later walks, serializes, clones or drops a value (serde_json's
//! serializer, VRL, the record converters) never overflows a thread's stack: a 140 KB XML file
//! of 20,000 nested elements used to abort the whole process, and every restart.

use serde_json::Value;

/// The deepest nesting of arrays and objects that ferry reads from outside data.
///
/// serde_json refuses more than 128 levels when it reads JSON, and the queue stores a value as
/// JSON inside a few levels of its own; 100 leaves that room, so whatever a decoder accepts can
/// be stored and read back.
pub const MAX_DEPTH: usize = 100;

/// The message of every depth error, so that they read the same whatever the format.
pub fn too_deep_message() -> String {
    format!(
        "values nest deeper than {MAX_DEPTH} levels (the limit of arrays and objects inside each other)"
    )
}

/// Whether `value` has arrays or objects nested more than `limit` levels deep (a scalar is
/// level 0, `[1]` level 1). Walks with its own stack, so any value can be checked.
pub fn nests_deeper_than(value: &Value, limit: usize) -> bool {
    let mut pending: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((value, depth)) = pending.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(fields) => Box::new(fields.values()),
            _ => continue,
        };
        if depth + 1 > limit {
            return true;
        }
        pending.extend(children.map(|child| (child, depth + 1)));
    }
    false
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn depth_counts_arrays_and_objects() {
        assert!(!nests_deeper_than(&json!(1), 0));
        assert!(nests_deeper_than(&json!([1]), 0));
        assert!(!nests_deeper_than(&json!([1]), 1));
        assert!(!nests_deeper_than(&json!({ "a": [1], "b": {} }), 2));
        assert!(nests_deeper_than(&json!({ "a": [[]], "b": 1 }), 2));
        assert!(!nests_deeper_than(&json!({ "a": [[]], "b": 1 }), 3));
    }
}

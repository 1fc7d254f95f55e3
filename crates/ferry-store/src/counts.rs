//! Changes to the per-state passenger counts, gathered during one store call and written by
//! the back end at its end: one row per pipeline and state, not one per passenger.

use crate::PassengerState;

/// The count changes of one call.
#[derive(Default)]
pub(crate) struct CountChanges {
    /// Few entries (the pipelines and states one call touches), so a list beats a map.
    changes: Vec<(String, String, PassengerState, i64)>,
}

impl CountChanges {
    pub(crate) fn add(&mut self, client: &str, pipeline: &str, state: PassengerState, delta: i64) {
        if delta == 0 {
            return;
        }
        let existing = self
            .changes
            .iter_mut()
            .find(|(c, p, s, _)| *s == state && c == client && p == pipeline);
        match existing {
            Some((_, _, _, n)) => *n += delta,
            None => self
                .changes
                .push((client.to_owned(), pipeline.to_owned(), state, delta)),
        }
    }

    /// One passenger went from `from` to `to`.
    pub(crate) fn change(
        &mut self,
        client: &str,
        pipeline: &str,
        from: PassengerState,
        to: PassengerState,
    ) {
        if from != to {
            self.add(client, pipeline, from, -1);
            self.add(client, pipeline, to, 1);
        }
    }

    /// The changes that are not zero: client, pipeline, state, delta.
    pub(crate) fn into_changes(
        self,
    ) -> impl Iterator<Item = (String, String, PassengerState, i64)> {
        self.changes
            .into_iter()
            .filter(|(_, _, _, delta)| *delta != 0)
    }
}

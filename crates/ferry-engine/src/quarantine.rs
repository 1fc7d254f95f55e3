//! Input a puller cannot take for good (an unreadable or malformed file) is quarantined
//! instead of tried, and logged, on every run (issue 12): logged once, left alone by later
//! pulls, shown to operators, until a person retries or discards it or the item changes.

use std::collections::{HashMap, HashSet};

use ferry_core::{PullFailure, Puller};
use ferry_store::{StoreError, Untakeable};

use crate::{Active, Shared};

/// The quarantined items of one pipeline during a run, per puller: (external id, fingerprint).
pub(crate) struct Quarantine {
    by_puller: HashMap<String, HashSet<(String, String)>>,
}

impl Quarantine {
    /// The pipeline's quarantined items as the store has them (discarded ones too).
    pub(crate) async fn load(shared: &Shared, active: &Active) -> Result<Quarantine, StoreError> {
        let mut by_puller: HashMap<String, HashSet<(String, String)>> = HashMap::new();
        for item in shared.store.quarantined(Some(&active.key), None).await? {
            by_puller
                .entry(item.puller)
                .or_default()
                .insert((item.item, item.fingerprint));
        }
        Ok(Quarantine { by_puller })
    }

    /// What puller `name` leaves alone, as [`Puller::quarantined`] takes it.
    pub(crate) fn of(&self, name: &str) -> HashSet<(String, String)> {
        self.by_puller.get(name).cloned().unwrap_or_default()
    }

    /// Handles what one pull of puller `name` could not take: ends the quarantine of the items
    /// it found changed or gone, then quarantines the failures that last. Returns the error
    /// messages the run logs and counts: new quarantines and failures that may pass (or that
    /// the store would not quarantine); items already quarantined are not reported again.
    pub(crate) async fn take_failures(
        &mut self,
        shared: &Shared,
        active: &Active,
        name: &str,
        puller: &mut dyn Puller,
        failures: &[PullFailure],
    ) -> Vec<String> {
        // First: a changed item that fails again starts a new quarantine.
        let released = puller.released();
        if !released.is_empty() {
            if let Some(skip) = self.by_puller.get_mut(name) {
                skip.retain(|(item, _)| !released.contains(item));
            }
            if let Err(error) = shared
                .store
                .release_quarantined(&active.key, name, &released)
                .await
            {
                tracing::error!(pipeline = %active.key, %error, "cannot end the quarantine of changed input");
            }
        }
        let new = quarantine(shared, active, name, failures).await;
        let mut reports = Vec::new();
        let mut added = false;
        for (failure, new) in failures.iter().zip(new) {
            let message = format!("{name}: {}: {}", failure.external_id, failure.error);
            match new {
                // Reported when it was quarantined; left alone since.
                Some(false) => {}
                Some(true) => {
                    self.by_puller
                        .entry(name.to_string())
                        .or_default()
                        .insert((failure.external_id.clone(), failure.fingerprint.clone()));
                    added = true;
                    reports.push(format!(
                        "{message} (quarantined: skipped until a person retries or discards \
                         it, or it changes)"
                    ));
                }
                None => reports.push(message),
            }
        }
        if added {
            puller.quarantined(self.of(name));
        }
        reports
    }
}

/// Quarantines the items of `failures` that failed for good (issue 12: they were retried, and
/// logged, on every run without end). For each failure: `Some(true)` newly quarantined,
/// `Some(false)` already quarantined, `None` not quarantined (a failure that may pass, or the
/// store refused: it is logged every time, as before).
async fn quarantine(
    shared: &Shared,
    active: &Active,
    name: &str,
    failures: &[PullFailure],
) -> Vec<Option<bool>> {
    let lasting: Vec<Untakeable> = failures
        .iter()
        .filter(|failure| !failure.error.retryable)
        .map(|failure| Untakeable {
            puller: name.to_string(),
            item: failure.external_id.clone(),
            fingerprint: failure.fingerprint.clone(),
            reason: failure.error.message.clone(),
        })
        .collect();
    let mut new = match shared
        .store
        .quarantine(&active.key, &lasting, chrono::Utc::now())
        .await
    {
        Ok(new) => new.into_iter(),
        Err(error) => {
            tracing::error!(pipeline = %active.key, %error, "cannot quarantine input that cannot be taken");
            Vec::new().into_iter()
        }
    };
    failures
        .iter()
        .map(|failure| match failure.error.retryable {
            true => None,
            false => new.next(),
        })
        .collect()
}

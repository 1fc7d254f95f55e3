//! The `imap` puller: one passenger per message, read with `BODY.PEEK[]` (nothing changes on
//! the server while pulling), its position kept in the store with the passengers it seated.
//!
//! Where it stands, per mailbox, is the mailbox's UIDVALIDITY, the highest UID it handled, and
//! the UIDs seated but not yet acknowledged. That position is the puller's state, which the
//! engine writes in the transaction that seats the passengers. `ack` then moves, deletes or
//! flags the messages (`after_seat`). After a crash between the two, the restarted puller
//! offers the unacknowledged messages again: the queue drops them as duplicates, and their
//! `ack` does what was missed. A changed UIDVALIDITY (the mailbox was recreated) rescans the
//! mailbox from the start; the Message-ID, the passengers' external id, drops what was seated
//! before.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_trait::async_trait;
use ferry_core::{
    BuildContext, BuildError, PullFailure, Pulled, Puller, PullerFactory, Seated, StepError,
};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::config::{ImapConnection, ImapPullerConfig, Settings, Then};
use super::message::{self, Found};
use super::session::{self, Session};

/// The most bytes of messages one pull holds in memory (bigger ones come one per pull).
const BATCH_BYTES: u64 = 64 * 1024 * 1024;

/// Builds `imap` pullers.
pub struct ImapPullerFactory;

impl PullerFactory for ImapPullerFactory {
    const TYPE: &'static str = "imap";
    type Config = ImapPullerConfig;

    fn build(
        &self,
        config: ImapPullerConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Puller>, BuildError> {
        let connection = super::connection_of(ctx, "connection", &config.connection)?;
        let settings = Settings::validate(&config)?;
        Ok(Box::new(ImapPuller::new(connection, settings)))
    }
}

/// Where the puller stands in one mailbox.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    /// The mailbox's UIDVALIDITY the UIDs belong to.
    validity: u32,
    /// The highest UID handled (seated or failed).
    last: u32,
    /// UIDs seated and not yet acknowledged (only when `after_seat` changes the mailbox).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pending: BTreeSet<u32>,
}

pub struct ImapPuller {
    connection: ImapConnection,
    settings: Settings,
    /// `imap:` and the login: the same mailbox is the same source whatever the connection
    /// is called or wherever the server moves.
    source_system: String,
    session: Option<Session>,
    positions: BTreeMap<String, Position>,
    /// Pending UIDs of the restored state, offered again by the next pull.
    reoffer: BTreeMap<String, BTreeSet<u32>>,
    /// What the last pull offered: external id → (mailbox, UID), for `ack`.
    offered: HashMap<String, Vec<(String, u32)>>,
    /// The server's capabilities, read once per session.
    idle: bool,
    moves: bool,
}

impl ImapPuller {
    fn new(connection: ImapConnection, settings: Settings) -> Self {
        ImapPuller {
            source_system: format!("imap:{}", connection.user),
            connection,
            settings,
            session: None,
            positions: BTreeMap::new(),
            reoffer: BTreeMap::new(),
            offered: HashMap::new(),
            idle: false,
            moves: false,
        }
    }

    fn tracks_pending(&self) -> bool {
        self.settings.after_seat != Default::default()
    }

    /// An IMAP command's error, retryable, naming the server and the mailbox.
    fn failed(&self, mailbox: &str, what: &str, error: impl std::fmt::Display) -> StepError {
        StepError::retryable(format!(
            "IMAP server `{}` ({}), mailbox {mailbox}: {what}: {error}",
            self.connection.name,
            self.connection.shown()
        ))
    }

    async fn session(&mut self) -> Result<Session, StepError> {
        if let Some(session) = self.session.take() {
            return Ok(session);
        }
        let mut session = session::open(&self.connection).await?;
        let capabilities = session
            .capabilities()
            .await
            .map_err(|e| self.failed("-", "CAPABILITY", e))?;
        self.idle = capabilities.has_str("IDLE");
        self.moves = capabilities.has_str("MOVE");
        if let Then::Move(folder) = &self.settings.after_seat.then {
            // Already there is the usual answer; a real problem shows at the first move.
            let _ = session.create(folder).await;
        }
        drain(&mut session);
        Ok(session)
    }

    /// Finds and reads up to `max` new messages (and those to offer again) in every mailbox.
    async fn scan(&mut self, session: &mut Session, max: usize) -> Result<Scan, StepError> {
        let mut scan = Scan::default();
        let mut room = max;
        for mailbox in self.settings.mailboxes.clone() {
            if room == 0 {
                scan.more = true;
                break;
            }
            let selected = session
                .select(&mailbox)
                .await
                .map_err(|e| self.failed(&mailbox, "SELECT", e))?;
            drain(session);
            let validity = selected.uid_validity.unwrap_or(0);
            let position = self.positions.entry(mailbox.clone()).or_default();
            if position.validity != validity {
                if position.validity != 0 {
                    warn!(
                        mailbox,
                        before = position.validity,
                        now = validity,
                        "the mailbox's UIDVALIDITY changed; reading it again from the start \
                         (messages already seated are dropped as duplicates by Message-ID)"
                    );
                    self.reoffer.remove(&mailbox);
                }
                *position = Position {
                    validity,
                    ..Position::default()
                };
                scan.changed = true;
            }
            if selected.exists == 0 {
                scan.changed |= !position.pending.is_empty();
                position.pending.clear();
                self.reoffer.remove(&mailbox);
                continue;
            }
            let last = position.last;
            let again = self.reoffer.remove(&mailbox).unwrap_or_default();
            let offered_again = again.clone();
            let query = format!("UID {}:* {}", last + 1, self.settings.search);
            let found = session
                .uid_search(&query)
                .await
                .map_err(|e| self.failed(&mailbox, "SEARCH", e))?;
            drain(session);
            let mut uids: Vec<u32> = again
                .into_iter()
                .chain(found.into_iter().filter(|uid| *uid > last))
                .collect();
            uids.sort_unstable();
            uids.dedup();
            if uids.len() > room {
                uids.truncate(room);
                scan.more = true;
            }
            if uids.is_empty() {
                continue;
            }
            let read = self
                .read(session, &mailbox, &uids, &offered_again, &mut scan)
                .await?;
            room -= read;
        }
        Ok(scan)
    }

    /// Reads the messages `uids` of the selected `mailbox` into `scan`; returns how many it
    /// handled (the rest wait for the next pull when the batch's bytes are used up).
    async fn read(
        &mut self,
        session: &mut Session,
        mailbox: &str,
        uids: &[u32],
        again: &BTreeSet<u32>,
        scan: &mut Scan,
    ) -> Result<usize, StepError> {
        let sizes: HashMap<u32, (u64, Vec<String>)> = session
            .uid_fetch(uid_set(uids), "(UID RFC822.SIZE FLAGS)")
            .await
            .map_err(|e| self.failed(mailbox, "FETCH", e))?
            .try_filter_map(|fetch| async move {
                let flags = fetch.flags().map(|flag| flag_text(&flag)).collect();
                Ok(fetch
                    .uid
                    .zip(fetch.size.map(|size| (u64::from(size), flags))))
            })
            .try_collect()
            .await
            .map_err(|e| self.failed(mailbox, "FETCH", e))?;
        drain(session);
        let after = &self.settings.after_seat;
        let position = self.positions.get_mut(mailbox).expect("selected mailbox");
        let mut wanted = Vec::new();
        let mut bytes = 0;
        let mut handled = 0;
        for &uid in uids {
            let Some((size, flags)) = sizes.get(&uid) else {
                // Gone: moved or deleted by someone else since the search, or an ack done
                // before a crash.
                scan.changed |= position.pending.remove(&uid);
                handled += 1;
                continue;
            };
            let size = *size;
            if let (Some(flag), Then::Keep) = (&after.flag, &after.then) {
                // Offered again but already flagged: its ack was done before a crash.
                if again.contains(&uid) && flags.iter().any(|f| f.eq_ignore_ascii_case(flag)) {
                    scan.changed |= position.pending.remove(&uid);
                    handled += 1;
                    continue;
                }
            }
            if size > self.settings.max_size {
                scan.failures.push(PullFailure {
                    external_id: format!("{mailbox}/{uid}"),
                    fingerprint: format!("{}:{size}", position.validity),
                    error: StepError::permanent(format!(
                        "message UID {uid} in {mailbox} is {size} bytes, over max_size ({} \
                         bytes); it stays in the mailbox",
                        self.settings.max_size
                    )),
                });
                position.last = position.last.max(uid);
                handled += 1;
                continue;
            }
            if bytes + size > BATCH_BYTES && !wanted.is_empty() {
                scan.more = true;
                break;
            }
            bytes += size;
            wanted.push(uid);
        }
        if wanted.is_empty() {
            scan.changed |= handled > 0;
            return Ok(handled);
        }
        let fetches: Vec<_> = session
            .uid_fetch(uid_set(&wanted), "(UID BODY.PEEK[])")
            .await
            .map_err(|e| self.failed(mailbox, "FETCH", e))?
            .try_collect()
            .await
            .map_err(|e| self.failed(mailbox, "FETCH", e))?;
        drain(session);
        let tracks_pending = self.tracks_pending();
        let position = self.positions.get_mut(mailbox).expect("selected mailbox");
        for fetch in &fetches {
            let (Some(uid), Some(raw)) = (fetch.uid, fetch.body()) else {
                continue;
            };
            let found = Found {
                source_system: &self.source_system,
                mailbox,
                uid,
            };
            match message::passenger(raw, &found) {
                Ok(passenger) => {
                    self.offered
                        .entry(passenger.external_id.clone())
                        .or_default()
                        .push((mailbox.to_string(), uid));
                    if tracks_pending {
                        position.pending.insert(uid);
                    }
                    scan.passengers.push(passenger);
                }
                Err(error) => scan.failures.push(PullFailure {
                    external_id: format!("{mailbox}/{uid}"),
                    fingerprint: format!("{}:{}", position.validity, raw.len()),
                    error: StepError::permanent(format!(
                        "message UID {uid} in {mailbox}: {error}; it stays in the mailbox"
                    )),
                }),
            }
        }
        if let Some(&highest) = wanted.last() {
            position.last = position.last.max(highest);
        }
        scan.changed = true;
        Ok(handled + wanted.len())
    }

    /// Waits in IDLE on the first mailbox until the server reports a change or `wait` ends.
    async fn idle(
        &self,
        session: Session,
        wait: std::time::Duration,
    ) -> Result<Session, StepError> {
        let mailbox = &self.settings.mailboxes[0];
        let mut session = session;
        session
            .select(mailbox)
            .await
            .map_err(|e| self.failed(mailbox, "SELECT", e))?;
        drain(&mut session);
        let mut handle = session.idle();
        handle
            .init()
            .await
            .map_err(|e| self.failed(mailbox, "IDLE", e))?;
        let (waiting, _stop) = handle.wait_with_timeout(wait);
        waiting.await.map_err(|e| self.failed(mailbox, "IDLE", e))?;
        let mut session = handle
            .done()
            .await
            .map_err(|e| self.failed(mailbox, "IDLE", e))?;
        drain(&mut session);
        Ok(session)
    }

    /// Does `after_seat` to `uids` of `mailbox`.
    async fn after_seat(
        &self,
        session: &mut Session,
        mailbox: &str,
        uids: &[u32],
    ) -> Result<(), StepError> {
        let set = uid_set(uids);
        session
            .select(mailbox)
            .await
            .map_err(|e| self.failed(mailbox, "SELECT", e))?;
        drain(session);
        if let Some(flag) = &self.settings.after_seat.flag {
            session
                .uid_store(&set, format!("+FLAGS.SILENT ({flag})"))
                .await
                .map_err(|e| self.failed(mailbox, "STORE", e))?
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| self.failed(mailbox, "STORE", e))?;
        }
        match &self.settings.after_seat.then {
            Then::Keep => {}
            Then::Move(folder) if self.moves => session
                .uid_mv(&set, folder)
                .await
                .map_err(|e| self.failed(mailbox, &format!("MOVE to {folder}"), e))?,
            Then::Move(folder) => {
                session
                    .uid_copy(&set, folder)
                    .await
                    .map_err(|e| self.failed(mailbox, &format!("COPY to {folder}"), e))?;
                self.delete(session, mailbox, &set).await?;
            }
            Then::Delete => self.delete(session, mailbox, &set).await?,
        }
        drain(session);
        Ok(())
    }

    async fn delete(
        &self,
        session: &mut Session,
        mailbox: &str,
        set: &str,
    ) -> Result<(), StepError> {
        session
            .uid_store(set, "+FLAGS.SILENT (\\Deleted)")
            .await
            .map_err(|e| self.failed(mailbox, "STORE \\Deleted", e))?
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| self.failed(mailbox, "STORE \\Deleted", e))?;
        session
            .uid_expunge(set)
            .await
            .map_err(|e| self.failed(mailbox, "EXPUNGE", e))?
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| self.failed(mailbox, "EXPUNGE", e))?;
        Ok(())
    }
}

/// What one scan found.
#[derive(Default)]
struct Scan {
    passengers: Vec<ferry_core::Passenger>,
    failures: Vec<PullFailure>,
    more: bool,
    /// The positions moved, so the state is seated.
    changed: bool,
}

impl Scan {
    fn merge(&mut self, other: Scan) {
        self.passengers.extend(other.passengers);
        self.failures.extend(other.failures);
        self.more |= other.more;
        self.changed |= other.changed;
    }
}

#[async_trait]
impl Puller for ImapPuller {
    async fn pull(&mut self, max: usize) -> Result<Pulled, StepError> {
        self.offered.clear();
        // On an error the session is dropped: it may be broken, and the next pull connects
        // again.
        let mut session = self.session().await?;
        let mut scan = self.scan(&mut session, max).await?;
        let found = !scan.passengers.is_empty() || !scan.failures.is_empty() || scan.more;
        if let (false, Some(wait), true) = (found, self.settings.idle, self.idle) {
            session = self.idle(session, wait).await?;
            let again = self.scan(&mut session, max).await?;
            scan.merge(again);
        }
        self.session = Some(session);
        let state = match scan.changed {
            true => Some(serde_json::to_string(&self.positions).expect("positions serialize")),
            false => None,
        };
        Ok(Pulled {
            passengers: scan.passengers,
            failures: scan.failures,
            more: scan.more,
            state,
        })
    }

    async fn ack(&mut self, seated: &[Seated]) -> Result<(), StepError> {
        if !self.tracks_pending() {
            return Ok(());
        }
        let mut by_mailbox: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for item in seated {
            for (mailbox, uid) in self.offered.get(&item.external_id).into_iter().flatten() {
                by_mailbox.entry(mailbox.clone()).or_default().push(*uid);
            }
        }
        if by_mailbox.is_empty() {
            return Ok(());
        }
        let mut session = self.session().await?;
        for (mailbox, mut uids) in by_mailbox {
            uids.sort_unstable();
            uids.dedup();
            self.after_seat(&mut session, &mailbox, &uids).await?;
            if let Some(position) = self.positions.get_mut(&mailbox) {
                for uid in &uids {
                    position.pending.remove(uid);
                }
            }
        }
        self.session = Some(session);
        Ok(())
    }

    fn restore(&mut self, state: Option<String>) {
        self.positions = state
            .and_then(|state| match serde_json::from_str(&state) {
                Ok(positions) => Some(positions),
                Err(error) => {
                    warn!(%error, "unreadable imap position; reading every mailbox again");
                    None
                }
            })
            .unwrap_or_default();
        self.reoffer = self
            .positions
            .iter()
            .filter(|(_, position)| !position.pending.is_empty())
            .map(|(mailbox, position)| (mailbox.clone(), position.pending.clone()))
            .collect();
    }
}

/// Unsolicited responses (EXISTS, EXPUNGE, flag changes) pile up in a bounded channel that
/// blocks the session when full; the puller reads positions itself, so it drops them.
fn drain(session: &mut Session) {
    while session.unsolicited_responses.try_recv().is_ok() {}
}

/// A flag as STORE writes it: `\\Seen`, or the keyword.
fn flag_text(flag: &async_imap::types::Flag) -> String {
    use async_imap::types::Flag;
    match flag {
        Flag::Seen => "\\Seen".into(),
        Flag::Answered => "\\Answered".into(),
        Flag::Flagged => "\\Flagged".into(),
        Flag::Deleted => "\\Deleted".into(),
        Flag::Draft => "\\Draft".into(),
        Flag::Recent => "\\Recent".into(),
        Flag::MayCreate => "\\*".into(),
        Flag::Custom(keyword) => keyword.to_string(),
    }
}

/// `1:3,7,9:10` for sorted, distinct `uids`.
pub(super) fn uid_set(uids: &[u32]) -> String {
    let mut parts = Vec::new();
    let mut iter = uids.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap_or(end);
        }
        parts.push(match start == end {
            true => start.to_string(),
            false => format!("{start}:{end}"),
        });
    }
    parts.join(",")
}

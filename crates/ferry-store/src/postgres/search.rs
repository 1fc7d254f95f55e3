//! The queue browser's text search, on what core PostgreSQL has (pg_trgm may not be
//! installed): ferry's own trigram index over `external_id` and `source_system`
//! (`passenger_trigrams`), filled in the background from `search_pending`.

use std::collections::BTreeSet;

use deadpool_postgres::GenericClient;

use super::{big, execute, query};
use crate::Result;

/// A needle matching more passengers than this is common: a plain scan finds a page of them
/// sooner than looking each one up.
const MAX_CANDIDATES: usize = 5_000;

/// Passengers not indexed yet that a search checks one by one, at most; when more wait, the
/// plain scan is used.
const MAX_UNINDEXED: usize = 50_000;

/// The lowercased trigrams of `text` (of its characters, not bytes). The index ignores case;
/// the exact condition of the search does not.
fn trigrams(text: &str, into: &mut BTreeSet<String>) {
    let chars: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
    for window in chars.windows(3) {
        into.insert(window.iter().collect());
    }
}

/// Where `needle` may be found: the indexed passengers holding all its trigrams (a superset:
/// the index ignores case and mixes the two columns) and every passenger not indexed yet, as
/// `seq`s. `None` when the index cannot narrow the search: the needle is shorter than a
/// trigram or common, or the index is far behind.
pub(super) async fn candidates(db: &impl GenericClient, needle: &str) -> Result<Option<Vec<i64>>> {
    let mut wanted = BTreeSet::new();
    trigrams(needle, &mut wanted);
    if wanted.is_empty() {
        return Ok(None);
    }
    let pending = query(
        db,
        "SELECT seq FROM search_pending LIMIT $1",
        &[&big(MAX_UNINDEXED + 1)],
    )
    .await?;
    if pending.len() > MAX_UNINDEXED {
        return Ok(None);
    }
    let wanted: Vec<String> = wanted.into_iter().collect();
    let found = query(
        db,
        "SELECT seq FROM passenger_trigrams WHERE trigram = ANY($1)
         GROUP BY seq HAVING count(*) = $2
         LIMIT $3",
        &[&wanted, &big(wanted.len()), &big(MAX_CANDIDATES + 1)],
    )
    .await?;
    if found.len() > MAX_CANDIDATES {
        return Ok(None);
    }
    let mut seqs = Vec::with_capacity(found.len() + pending.len());
    for row in found.iter().chain(&pending) {
        seqs.push(row.try_get(0)?);
    }
    Ok(Some(seqs))
}

/// Indexes up to `limit` passengers seated since they were last taken, oldest first; returns
/// how many. Nodes indexing at once take different passengers (`SKIP LOCKED`).
pub(super) async fn index(db: &impl GenericClient, limit: usize) -> Result<usize> {
    // The passengers are held too (KEY SHARE, which leases and finishes do not mind): a
    // purge deleting one meanwhile would otherwise wait for this transaction's list entry
    // while this one's index rows wait for the purge's deleted passenger.
    let rows = query(
        db,
        "SELECT p.seq, p.external_id, p.source_system
         FROM search_pending s JOIN passengers p ON p.seq = s.seq
         ORDER BY s.seq
         LIMIT $1
         FOR UPDATE OF s SKIP LOCKED
         FOR KEY SHARE OF p SKIP LOCKED",
        &[&big(limit)],
    )
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut seqs = Vec::with_capacity(rows.len());
    let mut grams_seqs = Vec::new();
    let mut grams = Vec::new();
    for row in &rows {
        let seq: i64 = row.try_get(0)?;
        seqs.push(seq);
        let mut own = BTreeSet::new();
        trigrams(row.try_get(1)?, &mut own);
        trigrams(row.try_get(2)?, &mut own);
        for gram in own {
            grams_seqs.push(seq);
            grams.push(gram);
        }
    }
    execute(
        db,
        "INSERT INTO passenger_trigrams (trigram, seq)
         SELECT * FROM unnest($1::text[], $2::bigint[])
         ON CONFLICT DO NOTHING",
        &[&grams, &grams_seqs],
    )
    .await?;
    execute(
        db,
        "DELETE FROM search_pending WHERE seq = ANY($1)",
        &[&seqs],
    )
    .await?;
    Ok(seqs.len())
}

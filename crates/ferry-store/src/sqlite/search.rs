//! The queue browser's text search: a trigram index over `external_id` and `source_system`
//! (`passenger_search`, migration 6), filled in the background up to `search_mark`.

use rusqlite::{Connection, params};

/// A needle matching more passengers than this is common: a plain scan finds a page of them
/// sooner than looking each one up.
const MAX_CANDIDATES: usize = 5_000;

/// Passengers not indexed yet that a search checks one by one, at most; when the index is
/// further behind (just after the upgrade to this schema, or during a long burst), the plain
/// scan is used, which stops after a page of a common needle.
const MAX_UNINDEXED: i64 = 50_000;

/// Where a needle may be found: the indexed passengers that match it (a superset: the index
/// ignores case), and every passenger seated after the index's mark.
pub(super) struct Candidates {
    /// Their `seq`s, as a JSON array for `json_each`.
    pub seqs: String,
    /// Passengers with a higher `seq` are not indexed yet.
    pub mark: i64,
}

/// The candidates for `needle`, or `None` when the index cannot narrow the search: the needle
/// is shorter than a trigram or common, or the index is far behind.
pub(super) fn candidates(conn: &Connection, needle: &str) -> rusqlite::Result<Option<Candidates>> {
    if needle.chars().count() < 3 {
        return Ok(None);
    }
    let (mark, last): (i64, i64) = conn.query_row(
        "SELECT seq, (SELECT coalesce(max(seq), 0) FROM passengers) FROM search_mark",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    if last - mark > MAX_UNINDEXED {
        return Ok(None);
    }
    // A phrase, so that the needle's characters mean nothing to the query syntax.
    let phrase = format!("\"{}\"", needle.replace('"', "\"\""));
    let mut select = conn.prepare_cached(
        "SELECT rowid FROM passenger_search WHERE passenger_search MATCH ?1 LIMIT ?2",
    )?;
    let seqs = select
        .query_map(params![phrase, MAX_CANDIDATES as i64 + 1], |row| {
            row.get::<_, i64>(0)
        })?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    if seqs.len() > MAX_CANDIDATES {
        return Ok(None);
    }
    let list: Vec<String> = seqs.iter().map(i64::to_string).collect();
    Ok(Some(Candidates {
        seqs: format!("[{}]", list.join(",")),
        mark,
    }))
}

/// Indexes up to `limit` passengers seated since the last call, in `seq` order; returns how
/// many.
pub(super) fn index(conn: &Connection, limit: usize) -> rusqlite::Result<usize> {
    let mark: i64 = conn.query_row("SELECT seq FROM search_mark", [], |row| row.get(0))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let (count, last): (i64, Option<i64>) = conn.query_row(
        "SELECT count(*), max(seq) FROM
           (SELECT seq FROM passengers WHERE seq > ?1 ORDER BY seq LIMIT ?2)",
        params![mark, limit],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let Some(last) = last else {
        return Ok(0);
    };
    conn.prepare_cached(
        "INSERT INTO passenger_search (rowid, external_id, source_system)
         SELECT seq, external_id, source_system FROM passengers WHERE seq > ?1 AND seq <= ?2",
    )?
    .execute(params![mark, last])?;
    conn.prepare_cached("UPDATE search_mark SET seq = ?1")?
        .execute([last])?;
    Ok(count as usize)
}

/// Removes purged passengers (`seqs`, a JSON array) from the index. Call after deleting them
/// from `passengers`.
pub(super) fn forget(conn: &Connection, seqs: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "DELETE FROM passenger_search
         WHERE rowid IN (SELECT value FROM json_each(?1))
           AND rowid <= (SELECT seq FROM search_mark)",
    )?
    .execute([seqs])?;
    // A new passenger takes the highest `seq` in use plus one: once the newest ones are
    // purged, their numbers come again, and the mark must not claim them as indexed.
    conn.prepare_cached(
        "UPDATE search_mark SET seq = min(seq, (SELECT coalesce(max(seq), 0) FROM passengers))",
    )?
    .execute([])?;
    Ok(())
}

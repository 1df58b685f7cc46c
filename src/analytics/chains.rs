//! The chain stamper: keeps `calls.next_offered_at` and `calls.prev_offered_at` (when the same
//! customer next and last called) true, so first-contact resolution and repeat contacts are
//! read, not sorted, at query time. A misdial is no contact: it carries its previous contact but
//! no next one (NULL). No KPI reads its stamps; the pass reads its previous contact to find where
//! a chain's change starts, and a next contact would change every earlier misdial of the
//! customer at each new call.
//!
//! Writers only note which customers' chains they touched (a trigger on `calls`, migration
//! 20261202000016), with the offer time where the chain changed (20261202000018). A pass takes
//! the committed notes and recomputes, from the calls as committed and in one transaction, each
//! noted chain from the last call before its earliest change: a new call costs its predecessor
//! and itself, not the caller's whole history. Passes are serialized across instances
//! by an advisory lock: two passes at once could each read a different moment and the older
//! one write last. A note committed after a pass read the calls stays for the next pass.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::store::{self, Restamp};
use crate::calls::{self, CallKey};

/// Notes taken per pass.
const BATCH: i64 = 10_000;

/// Calls restamped per pass, at most (but always a whole first customer). Each is locked until
/// the pass commits, and PostgreSQL's lock table is shared and bounded
/// (`max_locks_per_transaction` × connections): whole chains of 10,000 noted customers ran it
/// out ("out of shared memory"). Customers past the bound are noted again for the next pass.
const MAX_CALLS: usize = 5_000;

/// The advisory lock key of the stamper (one pass at a time, across instances).
const LOCK: i64 = 20_261_202_016;

/// Stamps the chains of every customer noted so far, waiting for a pass running elsewhere.
/// After it returns, every call committed before it was called is stamped.
pub async fn catch_up(pool: &PgPool) -> sqlx::Result<()> {
    while pass(pool, true).await? {}
    Ok(())
}

/// One pass over at most `BATCH` notes and `MAX_CALLS` calls; without `wait`, none when another
/// instance is in a pass. Returns whether notes may be left (a full batch taken, or customers
/// noted again).
async fn pass(pool: &PgPool, wait: bool) -> sqlx::Result<bool> {
    let mut tx = crate::db::begin(pool).await?;
    if !store::lock_pass(&mut tx, LOCK, wait).await? {
        return Ok(false);
    }
    let (taken, customers, since) = store::take_chain_notes(&mut tx, BATCH).await?;
    if taken == 0 {
        return Ok(false);
    }
    // Per customer, the suffix of the chain from the last contact (a call that is no misdial)
    // offered before `since` (all of it when `since` is unknown): every call whose next or
    // previous contact can have changed, and each one's neighbouring contacts are read too.
    // Only the calls whose stamps differ come back.
    let mut stale = store::stale_stamps(&mut tx, &customers, &since).await?;
    let deferred = defer_past(&mut stale, MAX_CALLS);
    if !deferred.is_empty() {
        let (customers, since): (Vec<_>, Vec<_>) = deferred.iter().copied().unzip();
        store::note_chains(&mut tx, &customers, &since).await?;
    }
    let more = taken == BATCH || !deferred.is_empty();
    if !stale.is_empty() {
        restamp(&mut tx, &stale, wait).await?;
    }
    tx.commit().await?;
    Ok(more)
}

/// Keeps whole customers' stale calls (they come grouped by customer), in order, up to `max`
/// calls (and at least the first customer's), and returns the notes of the customers left out.
fn defer_past(stale: &mut Vec<Restamp>, max: usize) -> Vec<(Uuid, Option<DateTime<Utc>>)> {
    let cut = (max.max(1)..stale.len())
        .find(|&i| stale[i].customer_id != stale[i - 1].customer_id)
        .unwrap_or(stale.len());
    let mut notes: Vec<_> = stale
        .split_off(cut)
        .iter()
        .map(|r| (r.customer_id, r.since))
        .collect();
    notes.dedup();
    notes
}

/// Writes the new stamps under each call's lock, the one call-event batches take before they
/// touch a call, so the stamper and a batch never wait for each other's row locks (they did, and
/// deadlocked: a second lost each time). Without `wait`, a call whose lock a batch holds is
/// skipped and its customer noted again for the next pass.
async fn restamp(conn: &mut PgConnection, stale: &[Restamp], wait: bool) -> sqlx::Result<()> {
    let keys: Vec<CallKey> = stale
        .iter()
        .map(|r| (r.gateway_id.clone(), r.call_id.clone()))
        .collect();
    // Waiting, every call is locked; trying, only those no batch holds.
    let locked: Option<HashSet<CallKey>> = if wait {
        calls::lock_calls(&mut *conn, &keys).await?;
        None
    } else {
        Some(
            calls::try_lock_calls(&mut *conn, &keys)
                .await?
                .into_iter()
                .collect(),
        )
    };
    let (mut stamped, mut skipped) = (Vec::new(), Vec::new());
    for (restamp, key) in stale.iter().zip(&keys) {
        match locked.as_ref().is_none_or(|l| l.contains(key)) {
            true => stamped.push(restamp),
            false => skipped.push(restamp),
        }
    }
    store::write_stamps(&mut *conn, &stamped).await?;
    if !skipped.is_empty() {
        let notes: HashSet<_> = skipped.iter().map(|r| (r.customer_id, r.since)).collect();
        let (customers, since): (Vec<_>, Vec<_>) = notes.into_iter().unzip();
        store::note_chains(&mut *conn, &customers, &since).await?;
    }
    Ok(())
}

/// Makes `misdial_seconds` the threshold below which a call is no contact (the server's
/// `--misdial-seconds`), and notes the chains that changes. Idempotent: a no-op when the
/// database already has it.
pub async fn apply_misdial_rule(pool: &PgPool, misdial_seconds: i32) -> sqlx::Result<()> {
    let mut tx = crate::db::begin(pool).await?;
    let noted = store::set_misdial_seconds(&mut tx, misdial_seconds).await?;
    tx.commit().await?;
    if noted > 0 {
        tracing::info!(
            misdial_seconds,
            customers = noted,
            "misdial threshold changed; restamping the chains it moves"
        );
    }
    Ok(())
}

/// Applies the misdial rule, then runs passes every `every` until `stop` turns true, so a KPI
/// request's catch-up is small.
pub fn spawn(
    pool: PgPool,
    every: Duration,
    misdial_seconds: i32,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let rule_applied = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    super::spawn_rounds(every, stop, "call chain stamping", move || {
        let (pool, rule_applied) = (pool.clone(), rule_applied.clone());
        async move {
            if !rule_applied.load(std::sync::atomic::Ordering::Relaxed) {
                apply_misdial_rule(&pool, misdial_seconds).await?;
                rule_applied.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            while pass(&pool, false).await? {}
            Ok(())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stale(customer: u128, call: &str) -> Restamp {
        Restamp {
            customer_id: Uuid::from_u128(customer),
            since: None,
            gateway_id: "g".into(),
            call_id: call.into(),
            offered_at: DateTime::UNIX_EPOCH,
            next_at: None,
            prev_at: None,
        }
    }

    #[test]
    fn a_pass_keeps_whole_customers_up_to_the_bound_and_notes_the_rest_again() {
        let calls = |rows: &[Restamp]| rows.iter().map(|r| r.call_id.clone()).collect::<Vec<_>>();
        let mut rows = vec![
            stale(1, "a"),
            stale(1, "b"),
            stale(2, "c"),
            stale(2, "d"),
            stale(2, "e"),
            stale(3, "f"),
        ];
        // The bound falls inside customer 2: all of 2 is kept, 3 waits.
        let deferred = defer_past(&mut rows, 3);
        assert_eq!(calls(&rows), ["a", "b", "c", "d", "e"]);
        assert_eq!(deferred, [(Uuid::from_u128(3), None)]);

        // One customer larger than the bound still goes (a pass always makes progress).
        let mut rows = vec![stale(1, "a"), stale(1, "b"), stale(2, "c")];
        let deferred = defer_past(&mut rows, 1);
        assert_eq!(calls(&rows), ["a", "b"]);
        assert_eq!(deferred, [(Uuid::from_u128(2), None)]);

        // Under the bound: everything, nothing deferred.
        let mut rows = vec![stale(1, "a"), stale(2, "b")];
        assert!(defer_past(&mut rows, 10).is_empty());
        assert_eq!(rows.len(), 2);
    }
}

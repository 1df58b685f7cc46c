//! The chain stamper: keeps `calls.next_offered_at` (when the same customer next called) true,
//! so first-contact resolution and repeat contacts are read, not sorted, at query time.
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

use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::store::{self, Restamp};
use crate::calls::{self, CallKey};

/// Notes taken per pass.
const BATCH: i64 = 10_000;

/// The advisory lock key of the stamper (one pass at a time, across instances).
const LOCK: i64 = 20_261_202_016;

/// Stamps the chains of every customer noted so far, waiting for a pass running elsewhere.
/// After it returns, every call committed before it was called is stamped.
pub async fn catch_up(pool: &PgPool) -> sqlx::Result<()> {
    while pass(pool, true).await? == BATCH {}
    Ok(())
}

/// One pass over at most `BATCH` notes; without `wait`, none when another instance is in a pass.
/// Returns the number of notes taken.
async fn pass(pool: &PgPool, wait: bool) -> sqlx::Result<i64> {
    let mut tx = crate::db::begin(pool).await?;
    if !store::lock_stamper(&mut tx, LOCK, wait).await? {
        return Ok(0);
    }
    let (taken, customers, since) = store::take_chain_notes(&mut tx, BATCH).await?;
    if taken == 0 {
        return Ok(0);
    }
    // Per customer, the suffix of the chain from the last call offered before `since` (all of it
    // when `since` is unknown): every call whose next contact can have changed, and each one's
    // next contact is inside the suffix too. Only the calls whose stamp differs come back.
    let stale = store::stale_stamps(&mut tx, &customers, &since).await?;
    if !stale.is_empty() {
        restamp(&mut tx, &stale, wait).await?;
    }
    tx.commit().await?;
    Ok(taken)
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

/// Runs passes every `every` until `stop` turns true, so a KPI request's catch-up is small.
pub fn spawn(pool: PgPool, every: Duration, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            let result = async {
                while pass(&pool, false).await? == BATCH {}
                Ok::<_, sqlx::Error>(())
            }
            .await;
            match result {
                Ok(()) => failing = false,
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, "call chain stamping paused (retrying)");
                    }
                    failing = true;
                }
            }
        }
    })
}

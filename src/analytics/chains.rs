//! The chain stamper: keeps `calls.next_offered_at` (when the same customer next called) true,
//! so first-contact resolution and repeat contacts are read, not sorted, at query time.
//!
//! Writers only note which customers' chains they touched (a trigger on `calls`, migration
//! 20261202000016). A pass takes the committed notes and recomputes those customers' whole
//! chains from the calls as committed, in one transaction. Passes are serialized across instances
//! by an advisory lock: two passes at once could each read a different moment and the older
//! one write last. A note committed after a pass read the calls stays for the next pass.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
    if wait {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK)
            .execute(&mut *tx)
            .await?;
    } else {
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            return Ok(0);
        }
    }
    let (taken, customers): (i64, Vec<uuid::Uuid>) = sqlx::query_as(
        "WITH taken AS ( \
           DELETE FROM contact_chains_dirty \
           WHERE id IN (SELECT id FROM contact_chains_dirty ORDER BY id LIMIT $1) \
           RETURNING customer_id) \
         SELECT count(*), COALESCE(array_agg(DISTINCT customer_id), '{}') FROM taken",
    )
    .bind(BATCH)
    .fetch_one(&mut *tx)
    .await?;
    if taken == 0 {
        return Ok(0);
    }
    sqlx::query(
        "UPDATE calls c SET next_offered_at = n.next_at \
         FROM (SELECT gateway_id, call_id, \
                 lead(offered_at) OVER (PARTITION BY customer_id \
                                        ORDER BY offered_at, gateway_id, call_id) AS next_at \
               FROM calls \
               WHERE customer_id = ANY($1) AND offered_at IS NOT NULL) n \
         WHERE c.gateway_id = n.gateway_id AND c.call_id = n.call_id \
           AND c.next_offered_at IS DISTINCT FROM n.next_at",
    )
    .bind(&customers)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(taken)
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

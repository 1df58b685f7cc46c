//! The RFM computation, set-based: scores into a temporary table, then one update of the
//! customers whose segment changed.

use sqlx::PgConnection;
use uuid::Uuid;

use super::Run;
use super::rules::Grid;

/// One run at a time (two would only repeat each other's work), with memory enough to sort a
/// million customers three times without spilling to disk (13 s -> 2.6 s at 1,089,096).
pub async fn prepare(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('switchboard:segmentation'))")
        .execute(&mut *conn)
        .await?;
    sqlx::query("SET LOCAL work_mem = '256MB'")
        .execute(conn)
        .await?;
    Ok(())
}

/// Scores every live customer into `rfm` (dropped at commit); returns how many.
pub async fn score(conn: &mut PgConnection, run: &Run) -> sqlx::Result<i64> {
    sqlx::query(
        "CREATE TEMP TABLE rfm ON COMMIT DROP AS \
         WITH o AS ( \
           SELECT customer_id, count(*) AS n, \
             COALESCE(sum(amount_minor) FILTER (WHERE currency = $3), 0) AS spent, \
             max(ordered_at) AS last \
           FROM orders \
           WHERE ordered_at > $1 - make_interval(days => $2) AND ordered_at <= $1 \
             AND status NOT IN ('cancelled', 'returned') \
           GROUP BY customer_id), \
         i AS ( \
           SELECT customer_id, count(*) AS n, max(started_at) AS last \
           FROM interactions \
           WHERE started_at > $1 - make_interval(days => $2) AND started_at <= $1 \
           GROUP BY customer_id), \
         raw AS ( \
           SELECT c.id, c.segment AS current, GREATEST(o.last, i.last) AS last_at, \
             COALESCE(o.n, 0) + COALESCE(i.n, 0) AS frequency, COALESCE(o.spent, 0) AS monetary \
           FROM customers c \
           LEFT JOIN o ON o.customer_id = c.id \
           LEFT JOIN i ON i.customer_id = c.id \
           WHERE c.deleted_at IS NULL AND c.erased_at IS NULL) \
         SELECT id, current, last_at IS NOT NULL AS active, \
           LEAST(5, 1 + floor(5 * percent_rank() OVER (ORDER BY last_at NULLS FIRST)))::smallint AS r, \
           LEAST(5, 1 + floor(5 * percent_rank() OVER (ORDER BY frequency)))::smallint AS f, \
           LEAST(5, 1 + floor(5 * percent_rank() OVER (ORDER BY monetary)))::smallint AS m \
         FROM raw",
    )
    .bind(run.as_of)
    .bind(run.window_days)
    .bind(&run.currency)
    .execute(&mut *conn)
    .await?;
    sqlx::query("ANALYZE rfm").execute(&mut *conn).await?;
    sqlx::query_scalar("SELECT count(*) FROM rfm")
        .fetch_one(conn)
        .await
}

/// Writes the segment of every scored customer whose segment changes; returns them. The scoring
/// read each customer's segment, so only the changed ones are visited again (and checked again:
/// a concurrent edit wins until the next run).
pub async fn apply(conn: &mut PgConnection, grid: &Grid) -> sqlx::Result<Vec<(Uuid, String)>> {
    sqlx::query(
        "CREATE TEMP TABLE rfm_names ON COMMIT DROP AS \
         SELECT * FROM unnest($1::smallint[], $2::smallint[], $3::smallint[], $4::bool[], $5::text[]) \
           AS n(r, f, m, active, segment)",
    )
    .bind(&grid.recency)
    .bind(&grid.frequency)
    .bind(&grid.monetary)
    .bind(&grid.active)
    .bind(&grid.segment)
    .execute(&mut *conn)
    .await?;
    sqlx::query_as(
        "UPDATE customers c SET segment = ch.segment, updated_at = now(), version = c.version + 1 \
         FROM (SELECT rfm.id, n.segment FROM rfm JOIN rfm_names n USING (r, f, m, active) \
               WHERE rfm.current IS DISTINCT FROM n.segment) ch \
         WHERE c.id = ch.id AND c.segment IS DISTINCT FROM ch.segment \
         RETURNING c.id, ch.segment",
    )
    .fetch_all(conn)
    .await
}

/// Customers per segment after the run, largest first.
pub async fn distribution(conn: &mut PgConnection) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT n.segment, count(*) FROM rfm JOIN rfm_names n USING (r, f, m, active) \
         GROUP BY n.segment ORDER BY count(*) DESC, n.segment",
    )
    .fetch_all(conn)
    .await
}

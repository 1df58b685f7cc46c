//! The KPI query: one pass over the calls offered in a period, grouped.

use std::collections::BTreeMap;

use sqlx::PgConnection;

use super::kpis::Tally;
use super::{Grouping, Query, Window};

#[derive(sqlx::FromRow)]
struct Row {
    key: String,
    offered: i64,
    answered: i64,
    abandoned: i64,
    short_abandoned: i64,
    in_progress: i64,
    answered_within: i64,
    wait_ms: f64,
    handled: i64,
    talk_ms: f64,
    hold_ms: f64,
    wrap_up_ms: f64,
    transferred: i64,
}

/// Tallies per group key ("" for everything when `grouping` is `Total`).
pub async fn tallies(
    conn: &mut PgConnection,
    query: &Query,
    window: &Window,
    grouping: Grouping,
) -> sqlx::Result<BTreeMap<String, Tally>> {
    let rows: Vec<Row> = sqlx::query_as(
        "WITH c AS ( \
           SELECT c.*, CASE $3 \
               WHEN 'queue' THEN COALESCE(c.queue, '') \
               WHEN 'agent' THEN COALESCE(c.handled_by[1], '') \
               WHEN 'day' THEN to_char(c.offered_at AT TIME ZONE $4, 'YYYY-MM-DD') \
               WHEN 'hour' THEN to_char(c.offered_at AT TIME ZONE $4, 'YYYY-MM-DD\"T\"HH24') \
               ELSE '' END AS key \
           FROM calls c \
           WHERE c.offered_at >= $1 AND c.offered_at < $2 \
             AND (cardinality($5::text[]) = 0 OR c.queue = ANY($5)) \
             AND (cardinality($6::text[]) = 0 OR c.handled_by[1] = ANY($6))), \
         w AS ( \
           SELECT i.gateway_id, i.call_id, max(i.wrap_up_ms) AS wrap_up_ms \
           FROM interactions i \
           WHERE i.call_id IS NOT NULL AND i.wrap_up_ms IS NOT NULL \
             AND i.started_at >= $1 - interval '1 day' \
           GROUP BY 1, 2) \
         SELECT c.key, \
           count(*) AS offered, \
           count(*) FILTER (WHERE c.answered_at IS NOT NULL) AS answered, \
           count(*) FILTER (WHERE c.outcome = 'abandoned') AS abandoned, \
           count(*) FILTER (WHERE c.outcome = 'abandoned' \
             AND c.ended_at - c.offered_at < make_interval(secs => $7)) AS short_abandoned, \
           count(*) FILTER (WHERE c.outcome = 'in_progress') AS in_progress, \
           count(*) FILTER (WHERE c.answered_at IS NOT NULL \
             AND c.answered_at - COALESCE(c.queued_at, c.offered_at) <= make_interval(secs => $8)) \
             AS answered_within, \
           COALESCE(sum(1000 * extract(epoch FROM c.answered_at - COALESCE(c.queued_at, c.offered_at))) \
             FILTER (WHERE c.answered_at IS NOT NULL), 0)::float8 AS wait_ms, \
           count(*) FILTER (WHERE c.outcome = 'completed') AS handled, \
           COALESCE(sum(1000 * extract(epoch FROM c.ended_at - c.answered_at) - c.hold_ms) \
             FILTER (WHERE c.outcome = 'completed'), 0)::float8 AS talk_ms, \
           COALESCE(sum(c.hold_ms) FILTER (WHERE c.outcome = 'completed'), 0)::float8 AS hold_ms, \
           COALESCE(sum(w.wrap_up_ms) FILTER (WHERE c.outcome = 'completed'), 0)::float8 AS wrap_up_ms, \
           count(*) FILTER (WHERE c.answered_at IS NOT NULL AND c.transfers > 0) AS transferred \
         FROM c LEFT JOIN w ON w.gateway_id = c.gateway_id AND w.call_id = c.call_id \
         GROUP BY c.key",
    )
    .bind(window.start)
    .bind(window.end)
    .bind(grouping.as_str())
    .bind(&query.time_zone)
    .bind(&query.queues)
    .bind(&query.agents)
    .bind(f64::from(query.short_abandon_seconds))
    .bind(f64::from(query.service_level_seconds))
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.key,
                Tally {
                    offered: r.offered,
                    answered: r.answered,
                    abandoned: r.abandoned,
                    short_abandoned: r.short_abandoned,
                    in_progress: r.in_progress,
                    answered_within: r.answered_within,
                    wait_ms: r.wait_ms,
                    handled: r.handled,
                    talk_ms: r.talk_ms,
                    hold_ms: r.hold_ms,
                    wrap_up_ms: r.wrap_up_ms,
                    transferred: r.transferred,
                },
            )
        })
        .collect())
}

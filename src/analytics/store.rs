//! The KPI query: one pass over the calls offered in a period, grouped.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::{PgConnection, Postgres};

use super::kpis::Tally;
use super::{Grouping, Part, Query, Window};

#[derive(sqlx::FromRow)]
struct Row {
    key: String,
    offered: i64,
    answered: i64,
    abandoned: i64,
    short_abandoned: i64,
    abandoned_within: i64,
    short_abandoned_within: i64,
    self_service: i64,
    in_progress: i64,
    answered_within: i64,
    wait_ms: f64,
    wait_ms_sq: f64,
    handled: i64,
    talk_ms: f64,
    hold_ms: f64,
    transfer_ring_ms: f64,
    requeue_wait_ms: f64,
    aht_calls: i64,
    aht_ms: f64,
    aht_ms_sq: f64,
    wrap_up_ms: f64,
    wrap_up_ms_sq: f64,
    wrap_up_outliers: i64,
    transferred: i64,
    with_customer: i64,
    repeated: i64,
    first_contact_resolved: i64,
    csat_sum: i64,
    csat_count: i64,
    csat_top_two: i64,
    nps_promoters: i64,
    nps_detractors: i64,
    nps_count: i64,
}

impl Row {
    fn keyed(self) -> (String, Tally) {
        let r = self;
        (
            r.key,
            Tally {
                offered: r.offered,
                answered: r.answered,
                abandoned: r.abandoned,
                short_abandoned: r.short_abandoned,
                abandoned_within: r.abandoned_within,
                short_abandoned_within: r.short_abandoned_within,
                self_service: r.self_service,
                in_progress: r.in_progress,
                answered_within: r.answered_within,
                wait_ms: r.wait_ms,
                wait_ms_sq: r.wait_ms_sq,
                handled: r.handled,
                talk_ms: r.talk_ms,
                hold_ms: r.hold_ms,
                transfer_ring_ms: r.transfer_ring_ms,
                requeue_wait_ms: r.requeue_wait_ms,
                aht_calls: r.aht_calls,
                aht_ms: r.aht_ms,
                aht_ms_sq: r.aht_ms_sq,
                wrap_up_ms: r.wrap_up_ms,
                wrap_up_ms_sq: r.wrap_up_ms_sq,
                wrap_up_outliers: r.wrap_up_outliers,
                transferred: r.transferred,
                with_customer: r.with_customer,
                repeated: r.repeated,
                first_contact_resolved: r.first_contact_resolved,
                csat_sum: r.csat_sum,
                csat_count: r.csat_count,
                csat_top_two: r.csat_top_two,
                nps_promoters: r.nps_promoters,
                nps_detractors: r.nps_detractors,
                nps_count: r.nps_count,
                ..Tally::default()
            },
        )
    }
}

/// The call tallies of one part of a period, per group key: scanned, or summed from the rollups.
pub async fn tallies(
    conn: &mut PgConnection,
    query: &Query,
    part: Part<'_>,
    grouping: Grouping,
) -> sqlx::Result<BTreeMap<String, Tally>> {
    match part {
        Part::Scanned(window) => scanned_tallies(conn, query, window, grouping).await,
        Part::Rolled(days) => rolled_tallies(conn, query, days, grouping).await,
    }
}

/// The campaign attempts of one part of a period, per group key: (reached, converted).
pub async fn conversions(
    conn: &mut PgConnection,
    query: &Query,
    part: Part<'_>,
    grouping: Grouping,
) -> sqlx::Result<BTreeMap<String, (i64, i64)>> {
    match part {
        Part::Scanned(window) => scanned_conversions(conn, query, window, grouping).await,
        Part::Rolled(days) => rolled_conversions(conn, query, days, grouping).await,
    }
}

/// The agent time of one part of a period, per group key: (occupied ms, idle ms).
pub async fn agent_time(
    conn: &mut PgConnection,
    query: &Query,
    part: Part<'_>,
    grouping: Grouping,
) -> sqlx::Result<BTreeMap<String, (f64, f64)>> {
    match part {
        Part::Scanned(window) => scanned_agent_time(conn, query, window, grouping).await,
        Part::Rolled(days) => rolled_agent_time(conn, query, days, grouping).await,
    }
}

/// The KPI scan of the calls offered in [$1, $2), grouped by $3 (a [`Grouping`], or "rollup":
/// a JSON array of queue, agent, team and the sorted ids of the campaigns the call counts for).
/// $4 time zone, $5 queues, $6 agents, $7 short-abandon and $8 service-level seconds, $9 repeat
/// window hours, $10 after-call work cap seconds. A macro, so that the rollup pass inserts
/// exactly what the scan reads. `span` is read three times (the calls, and the interactions
/// and feedback that count for them); NOT MATERIALIZED keeps each an index scan: materialized,
/// a month's million wide rows made the scan three times slower.
macro_rules! call_tallies_sql {
    () => {
        "WITH span AS NOT MATERIALIZED ( \
           SELECT c.gateway_id, c.call_id, c.customer_id, c.queue, c.handled_by[1] AS agent, \
             c.outcome, c.transfers, c.hold_ms, c.offered_at, c.queued_at, c.answered_at, \
             c.ended_at, c.dialed_number, c.next_offered_at AS next_at, c.team, \
             c.prev_offered_at AS prev_at, c.transfer_ring_ms, c.requeue_wait_ms \
           FROM calls c \
           WHERE c.offered_at >= $1 AND c.offered_at < $2), \
         w AS ( \
           SELECT i.gateway_id, i.call_id, \
             sum(CASE WHEN i.created_at > COALESCE(i.ended_at, i.started_at) \
                            + make_interval(secs => $10) THEN NULL \
                      ELSE GREATEST(0, 1000 * date_part('epoch', \
                             i.wrap_up_ended_at - COALESCE(i.ended_at, i.started_at))) END) \
               AS wrap_up_ms, \
             bool_or(d.resolves) FILTER (WHERE i.wrap_up_completed_at IS NOT NULL) AS resolved \
           FROM interactions i \
           JOIN span s ON s.gateway_id = i.gateway_id AND s.call_id = i.call_id \
           LEFT JOIN dispositions d ON d.code = i.disposition_code \
           WHERE i.call_id IS NOT NULL AND i.started_at >= $1 - interval '1 day' \
             AND i.started_at >= s.offered_at - interval '1 day' \
           GROUP BY 1, 2), \
         f AS ( \
           SELECT b.gateway_id, b.call_id, \
             sum(b.score) FILTER (WHERE b.score_kind = 'csat') AS csat_sum, \
             count(*) FILTER (WHERE b.score_kind = 'csat') AS csat_count, \
             count(*) FILTER (WHERE b.score_kind = 'csat' AND b.score >= 4) AS csat_top_two, \
             count(*) FILTER (WHERE b.score_kind = 'nps' AND b.score >= 9) AS promoters, \
             count(*) FILTER (WHERE b.score_kind = 'nps' AND b.score <= 6) AS detractors, \
             count(*) FILTER (WHERE b.score_kind = 'nps') AS nps_count \
           FROM feedback b \
           JOIN span s ON s.gateway_id = b.gateway_id AND s.call_id = b.call_id \
           WHERE b.call_id IS NOT NULL AND b.score IS NOT NULL \
             AND b.created_at >= $1 - interval '1 day' \
             AND b.created_at >= s.offered_at - interval '1 day' \
           GROUP BY 1, 2), \
         r AS ( \
           SELECT c.*, COALESCE(w.wrap_up_ms, 0) AS wrap, COALESCE(w.resolved, false) AS resolved, \
             COALESCE(w.wrap_up_ms, 0) > 1000 * $10 AS outlier, \
             c.outcome = 'abandoned' AND c.queued_at IS NOT NULL AS gave_up, \
             c.ended_at - c.queued_at AS waited, \
             f.csat_sum, f.csat_count, f.csat_top_two, f.promoters, f.detractors, f.nps_count, \
             c.outcome = 'completed' AND c.customer_id IS NOT NULL \
               AND NOT COALESCE(c.ended_at < c.offered_at + (SELECT make_interval(secs => \
                                  misdial_seconds) FROM contact_chain_rule), false) AS known, \
             1000 * date_part('epoch', c.answered_at - COALESCE(c.queued_at, c.offered_at)) AS wait_ms, \
             1000 * date_part('epoch', c.ended_at - c.answered_at) \
               - c.transfer_ring_ms - c.requeue_wait_ms AS handled_ms, \
             c.next_at IS NOT NULL \
               AND c.next_at < COALESCE(c.ended_at, c.offered_at) + make_interval(hours => $9) AS is_repeat, \
             c.prev_at IS NOT NULL \
               AND c.prev_at > c.offered_at - make_interval(hours => $9) AS follows_up, \
             CASE $3 WHEN 'queue' THEN COALESCE(c.queue, '') \
                     WHEN 'agent' THEN COALESCE(c.agent, '') \
                     WHEN 'team' THEN COALESCE(c.team, '') \
                     WHEN 'campaign' THEN COALESCE(k.id::text, '') \
                     WHEN 'rollup' THEN json_build_array(COALESCE(c.queue, ''), COALESCE(c.agent, ''), \
                       COALESCE(c.team, ''), ARRAY(SELECT k.id::text FROM campaigns k \
                         WHERE c.dialed_number = ANY(k.dialed_numbers) \
                           AND c.offered_at >= k.starts_at AND c.offered_at < k.ends_at \
                         ORDER BY 1))::text \
                     ELSE '' END AS k_text, \
             CASE $3 WHEN 'day' THEN date_trunc('day', c.offered_at AT TIME ZONE $4) \
                     WHEN 'hour' THEN date_trunc('hour', c.offered_at AT TIME ZONE $4) \
                     WHEN 'month' THEN date_trunc('month', c.offered_at AT TIME ZONE $4) END AS k_time \
           FROM span c \
           LEFT JOIN w ON w.gateway_id = c.gateway_id AND w.call_id = c.call_id \
           LEFT JOIN f ON f.gateway_id = c.gateway_id AND f.call_id = c.call_id \
           LEFT JOIN ( \
             SELECT k.id, n.number, k.starts_at, k.ends_at \
             FROM campaigns k CROSS JOIN unnest(k.dialed_numbers) AS n(number) \
             WHERE $3 = 'campaign') k \
             ON k.number = c.dialed_number AND c.offered_at >= k.starts_at \
               AND c.offered_at < k.ends_at \
           WHERE (cardinality($5::text[]) = 0 OR c.queue = ANY($5)) \
             AND (cardinality($6::text[]) = 0 OR c.agent = ANY($6))) \
         SELECT COALESCE(to_char(c.k_time, \
             CASE $3 WHEN 'day' THEN 'YYYY-MM-DD' WHEN 'month' THEN 'YYYY-MM' \
               ELSE 'YYYY-MM-DD\"T\"HH24' END), c.k_text) AS key, \
           count(*) AS offered, \
           count(*) FILTER (WHERE c.answered_at IS NOT NULL) AS answered, \
           count(*) FILTER (WHERE c.gave_up) AS abandoned, \
           count(*) FILTER (WHERE c.gave_up AND c.waited < make_interval(secs => $7)) \
             AS short_abandoned, \
           count(*) FILTER (WHERE c.gave_up AND c.waited <= make_interval(secs => $8)) \
             AS abandoned_within, \
           count(*) FILTER (WHERE c.gave_up AND c.waited < make_interval(secs => $7) \
             AND c.waited <= make_interval(secs => $8)) AS short_abandoned_within, \
           count(*) FILTER (WHERE c.outcome IN ('abandoned', 'unanswered') \
             AND c.queued_at IS NULL AND c.answered_at IS NULL) AS self_service, \
           count(*) FILTER (WHERE c.outcome = 'in_progress') AS in_progress, \
           count(*) FILTER (WHERE c.answered_at IS NOT NULL \
             AND c.answered_at - COALESCE(c.queued_at, c.offered_at) <= make_interval(secs => $8)) \
             AS answered_within, \
           COALESCE(sum(c.wait_ms) FILTER (WHERE c.answered_at IS NOT NULL), 0)::float8 AS wait_ms, \
           COALESCE(sum(c.wait_ms * c.wait_ms) FILTER (WHERE c.answered_at IS NOT NULL), 0)::float8 \
             AS wait_ms_sq, \
           count(*) FILTER (WHERE c.outcome = 'completed') AS handled, \
           COALESCE(sum(c.handled_ms - c.hold_ms) \
             FILTER (WHERE c.outcome = 'completed'), 0)::float8 AS talk_ms, \
           COALESCE(sum(c.hold_ms) FILTER (WHERE c.outcome = 'completed'), 0)::float8 AS hold_ms, \
           COALESCE(sum(c.transfer_ring_ms) FILTER (WHERE c.outcome = 'completed'), 0)::float8 \
             AS transfer_ring_ms, \
           COALESCE(sum(c.requeue_wait_ms) FILTER (WHERE c.outcome = 'completed'), 0)::float8 \
             AS requeue_wait_ms, \
           count(*) FILTER (WHERE c.outcome = 'completed' AND NOT c.outlier) AS aht_calls, \
           COALESCE(sum(c.handled_ms + c.wrap) \
             FILTER (WHERE c.outcome = 'completed' AND NOT c.outlier), 0)::float8 AS aht_ms, \
           COALESCE(sum((c.handled_ms + c.wrap) * (c.handled_ms + c.wrap)) \
             FILTER (WHERE c.outcome = 'completed' AND NOT c.outlier), 0)::float8 AS aht_ms_sq, \
           COALESCE(sum(c.wrap) FILTER (WHERE c.outcome = 'completed' AND NOT c.outlier), 0)::float8 \
             AS wrap_up_ms, \
           COALESCE(sum(c.wrap * c.wrap) \
             FILTER (WHERE c.outcome = 'completed' AND NOT c.outlier), 0)::float8 AS wrap_up_ms_sq, \
           count(*) FILTER (WHERE c.outcome = 'completed' AND c.outlier) AS wrap_up_outliers, \
           count(*) FILTER (WHERE c.answered_at IS NOT NULL AND c.transfers > 0) AS transferred, \
           count(*) FILTER (WHERE c.known) AS with_customer, \
           count(*) FILTER (WHERE c.known AND c.is_repeat) AS repeated, \
           count(*) FILTER (WHERE c.known AND c.resolved AND NOT c.is_repeat AND NOT c.follows_up) \
             AS first_contact_resolved, \
           COALESCE(sum(c.csat_sum), 0)::int8 AS csat_sum, \
           COALESCE(sum(c.csat_count), 0)::int8 AS csat_count, \
           COALESCE(sum(c.csat_top_two), 0)::int8 AS csat_top_two, \
           COALESCE(sum(c.promoters), 0)::int8 AS nps_promoters, \
           COALESCE(sum(c.detractors), 0)::int8 AS nps_detractors, \
           COALESCE(sum(c.nps_count), 0)::int8 AS nps_count \
         FROM r c \
         GROUP BY c.k_text, c.k_time"
    };
}

/// Tallies per group key ("" for everything when `grouping` is `Total`). One scan of the calls
/// offered in the period; each call carries when its customer next called (`next_offered_at`,
/// kept by triggers: migration 20261202000016), so a repeat that falls after the period or in
/// another queue is seen without reading those calls.
async fn scanned_tallies(
    conn: &mut PgConnection,
    query: &Query,
    window: &Window,
    grouping: Grouping,
) -> sqlx::Result<BTreeMap<String, Tally>> {
    let rows: Vec<Row> =
        bind_call_tallies(sqlx::query_as(call_tallies_sql!()), query, window, grouping)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().map(Row::keyed).collect())
}

/// Binds [`call_tallies_sql`]'s parameters.
fn bind_call_tallies<'q, O>(
    statement: QueryAs<'q, Postgres, O, PgArguments>,
    query: &'q Query,
    window: &Window,
    grouping: Grouping,
) -> QueryAs<'q, Postgres, O, PgArguments> {
    statement
        .bind(window.start)
        .bind(window.end)
        .bind(grouping.as_str())
        .bind(&query.time_zone)
        .bind(&query.queues)
        .bind(&query.agents)
        .bind(f64::from(query.short_abandon_seconds))
        .bind(f64::from(query.service_level_seconds))
        .bind(query.repeat_window_hours)
        .bind(f64::from(query.wrap_up_cap_seconds))
}

/// [`scanned_conversions`]' statement: ($1 start, $2 end, $3 grouping or "rollup": a JSON array of
/// campaign, agent and team, $4 time zone, $5 agents) to (key, reached, converted).
macro_rules! conversions_sql {
    () => {
        "SELECT CASE $3 \
             WHEN 'campaign' THEN t.campaign_id::text \
             WHEN 'agent' THEN t.agent_id \
             WHEN 'team' THEN COALESCE(t.team, '') \
             WHEN 'day' THEN to_char(t.at AT TIME ZONE $4, 'YYYY-MM-DD') \
             WHEN 'hour' THEN to_char(t.at AT TIME ZONE $4, 'YYYY-MM-DD\"T\"HH24') \
             WHEN 'month' THEN to_char(t.at AT TIME ZONE $4, 'YYYY-MM') \
             WHEN 'rollup' THEN json_build_array(t.campaign_id::text, t.agent_id, \
               COALESCE(t.team, ''))::text \
             ELSE '' END AS key, \
           count(*) FILTER (WHERE t.outcome IN \
             ('reached', 'converted', 'declined', 'callback_requested')) AS reached, \
           count(*) FILTER (WHERE t.outcome = 'converted') AS converted \
         FROM campaign_attempts t \
         WHERE t.at >= $1 AND t.at < $2 \
           AND (cardinality($5::text[]) = 0 OR t.agent_id = ANY($5)) \
         GROUP BY 1"
    };
}

/// Outbound campaign attempts recorded in the window, per group key: (reached, converted).
/// Reached: the outcome came from talking to the customer (reached, converted, declined,
/// callback requested).
async fn scanned_conversions(
    conn: &mut PgConnection,
    query: &Query,
    window: &Window,
    grouping: Grouping,
) -> sqlx::Result<BTreeMap<String, (i64, i64)>> {
    pairs_by_key(conn, conversions_sql!(), query, window, grouping).await
}

/// [`scanned_agent_time`]'s statement: ($1 start, $2 end, $3 grouping or "rollup": by UTC day ($4), a
/// JSON array of agent and team, $5 agents) to (key, occupied ms, idle ms).
macro_rules! agent_time_sql {
    () => {
        "WITH changes AS ( \
           SELECT s.agent_id, s.team, s.state, s.at, s.id FROM agent_state_changes s \
           WHERE s.at >= $1 AND s.at < $2 \
           UNION ALL \
           SELECT a.agent_id, p.team, p.state, p.at, p.id FROM agents a \
           CROSS JOIN LATERAL ( \
             SELECT team, state, at, id FROM agent_state_changes \
             WHERE agent_id = a.agent_id AND at < $1 ORDER BY at DESC, id DESC LIMIT 1) p), \
         spans AS ( \
           SELECT agent_id, team, state, greatest(at, $1) AS since, \
             least(COALESCE(lead(at) OVER (PARTITION BY agent_id ORDER BY at, id), now()), $2) \
               AS until \
           FROM changes \
           WHERE (cardinality($5::text[]) = 0 OR agent_id = ANY($5))), \
         pieces AS ( \
           SELECT s.agent_id, s.team, s.state, b.bucket, \
             greatest(s.since, b.bucket_start) AS since, least(s.until, b.bucket_end) AS until \
           FROM spans s \
           CROSS JOIN LATERAL ( \
             SELECT local AS bucket, local AT TIME ZONE $4 AS bucket_start, \
               (local + CASE $3 WHEN 'hour' THEN interval '1 hour' \
                  WHEN 'month' THEN interval '1 month' ELSE interval '1 day' END) \
                 AT TIME ZONE $4 AS bucket_end \
             FROM generate_series( \
               date_trunc(CASE $3 WHEN 'hour' THEN 'hour' WHEN 'month' THEN 'month' ELSE 'day' END, \
                 s.since AT TIME ZONE $4), \
               s.until AT TIME ZONE $4, \
               CASE $3 WHEN 'hour' THEN interval '1 hour' \
                 WHEN 'month' THEN interval '1 month' ELSE interval '1 day' END) AS local \
             WHERE $3 IN ('day', 'hour', 'month', 'rollup') \
             UNION ALL \
             SELECT NULL, s.since, s.until WHERE $3 NOT IN ('day', 'hour', 'month', 'rollup')) b \
           WHERE s.until > s.since AND s.state IN ('busy', 'after_call_work', 'available')) \
         SELECT CASE $3 \
             WHEN 'agent' THEN p.agent_id \
             WHEN 'team' THEN COALESCE(p.team, '') \
             WHEN 'day' THEN to_char(p.bucket, 'YYYY-MM-DD') \
             WHEN 'hour' THEN to_char(p.bucket, 'YYYY-MM-DD\"T\"HH24') \
             WHEN 'month' THEN to_char(p.bucket, 'YYYY-MM') \
             WHEN 'rollup' THEN json_build_array(p.agent_id, COALESCE(p.team, ''))::text \
             ELSE '' END AS key, \
           COALESCE(sum(1000 * date_part('epoch', p.until - p.since)) \
             FILTER (WHERE p.state <> 'available'), 0)::float8 AS occupied_ms, \
           COALESCE(sum(1000 * date_part('epoch', p.until - p.since)) \
             FILTER (WHERE p.state = 'available'), 0)::float8 AS idle_ms \
         FROM pieces p \
         WHERE p.until > p.since \
         GROUP BY 1"
    };
}

/// Agent time in the window from the agents' state history, per group key: (occupied ms, idle
/// ms). Occupied is BUSY or AFTER_CALL_WORK; idle is AVAILABLE; AWAY and OFFLINE count for
/// neither. Each state lasts from its change to the agent's next change (or now), clipped to the
/// window and, for days and hours, cut at each bucket's edge in the time zone.
async fn scanned_agent_time(
    conn: &mut PgConnection,
    query: &Query,
    window: &Window,
    grouping: Grouping,
) -> sqlx::Result<BTreeMap<String, (f64, f64)>> {
    pairs_by_key(conn, agent_time_sql!(), query, window, grouping).await
}

/// Runs a per-group query that takes ($1 start, $2 end, $3 grouping, $4 time zone, $5 agents)
/// and returns (key, a, b) rows, as a map from key to (a, b).
async fn pairs_by_key<A, B>(
    conn: &mut PgConnection,
    sql: &'static str,
    query: &Query,
    window: &Window,
    grouping: Grouping,
) -> sqlx::Result<BTreeMap<String, (A, B)>>
where
    (String, A, B): for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let rows: Vec<(String, A, B)> = sqlx::query_as(sql)
        .bind(window.start)
        .bind(window.end)
        .bind(grouping.as_str())
        .bind(&query.time_zone)
        .bind(&query.agents)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(|(key, a, b)| (key, (a, b))).collect())
}

// The KPI rollups' statements (`rollups.rs`, migration 20261207000034).

/// The tally columns of `kpi_call_rollups`, in the order [`call_tallies_sql`] returns them.
macro_rules! tally_columns {
    () => {
        "offered, answered, abandoned, short_abandoned, abandoned_within, \
         short_abandoned_within, self_service, in_progress, answered_within, wait_ms, wait_ms_sq, \
         handled, talk_ms, hold_ms, transfer_ring_ms, requeue_wait_ms, aht_calls, aht_ms, \
         aht_ms_sq, wrap_up_ms, wrap_up_ms_sq, wrap_up_outliers, transferred, with_customer, \
         repeated, first_contact_resolved, csat_sum, csat_count, csat_top_two, nps_promoters, \
         nps_detractors, nps_count"
    };
}

/// What a KPI read needs to know of the rollups of the days in [first, last).
#[derive(Debug, sqlx::FromRow)]
pub struct RollupState {
    /// The IANA zone the rollups' days are cut in.
    pub zone: String,
    /// Today (in `zone`) in the database's clock: not closed, never rolled up.
    pub today: NaiveDate,
    /// Days before it with no note never had data (migration 20261207000034).
    pub first_day: NaiveDate,
    pub rolled: Vec<NaiveDate>,
    /// Closed days with a note: changed since they were rolled up.
    pub noted: Vec<NaiveDate>,
}

pub async fn rollup_state(
    conn: &mut PgConnection,
    first: NaiveDate,
    last: NaiveDate,
) -> sqlx::Result<RollupState> {
    sqlx::query_as!(
        RollupState,
        "SELECT (SELECT zone FROM kpi_rollup_state) AS \"zone!\", kpi_day(now()) AS \"today!\", \
           (SELECT first_day FROM kpi_rollup_state) AS \"first_day!\", \
           ARRAY(SELECT day FROM kpi_rollup_days WHERE day >= $1 AND day < $2 ORDER BY day) \
             AS \"rolled!\", \
           ARRAY(SELECT DISTINCT day FROM kpi_rollup_notes \
                 WHERE day >= $1 AND day < LEAST($2, kpi_day(now())) ORDER BY day) AS \"noted!\"",
        first,
        last
    )
    .fetch_one(conn)
    .await
}

/// The call tallies of these rolled-up days, per group key (the keys of [`scanned_tallies`]; `grouping`
/// is never `Hour` or `Rollup`, and `Day` only in UTC).
async fn rolled_tallies(
    conn: &mut PgConnection,
    query: &Query,
    days: &[NaiveDate],
    grouping: Grouping,
) -> sqlx::Result<BTreeMap<String, Tally>> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT CASE $2 WHEN 'queue' THEN r.queue WHEN 'agent' THEN r.agent \
             WHEN 'team' THEN r.team WHEN 'campaign' THEN k.campaign \
             WHEN 'day' THEN to_char(r.day, 'YYYY-MM-DD') \
             WHEN 'month' THEN to_char(r.day, 'YYYY-MM') ELSE '' END AS key, \
           sum(offered)::int8 AS offered, sum(answered)::int8 AS answered, \
           sum(abandoned)::int8 AS abandoned, sum(short_abandoned)::int8 AS short_abandoned, \
           sum(abandoned_within)::int8 AS abandoned_within, \
           sum(short_abandoned_within)::int8 AS short_abandoned_within, \
           sum(self_service)::int8 AS self_service, sum(in_progress)::int8 AS in_progress, \
           sum(answered_within)::int8 AS answered_within, sum(wait_ms) AS wait_ms, \
           sum(wait_ms_sq) AS wait_ms_sq, sum(handled)::int8 AS handled, \
           sum(talk_ms) AS talk_ms, sum(hold_ms) AS hold_ms, \
           sum(transfer_ring_ms) AS transfer_ring_ms, sum(requeue_wait_ms) AS requeue_wait_ms, \
           sum(aht_calls)::int8 AS aht_calls, sum(aht_ms) AS aht_ms, sum(aht_ms_sq) AS aht_ms_sq, \
           sum(wrap_up_ms) AS wrap_up_ms, sum(wrap_up_ms_sq) AS wrap_up_ms_sq, \
           sum(wrap_up_outliers)::int8 AS wrap_up_outliers, \
           sum(transferred)::int8 AS transferred, sum(with_customer)::int8 AS with_customer, \
           sum(repeated)::int8 AS repeated, \
           sum(first_contact_resolved)::int8 AS first_contact_resolved, \
           sum(csat_sum)::int8 AS csat_sum, sum(csat_count)::int8 AS csat_count, \
           sum(csat_top_two)::int8 AS csat_top_two, sum(nps_promoters)::int8 AS nps_promoters, \
           sum(nps_detractors)::int8 AS nps_detractors, sum(nps_count)::int8 AS nps_count \
         FROM kpi_call_rollups r \
         CROSS JOIN LATERAL unnest(CASE WHEN $2 = 'campaign' AND cardinality(r.campaigns) > 0 \
                                   THEN r.campaigns ELSE ARRAY[''] END) AS k(campaign) \
         WHERE r.day = ANY($1) \
           AND (cardinality($3::text[]) = 0 OR r.queue = ANY($3)) \
           AND (cardinality($4::text[]) = 0 OR r.agent = ANY($4)) \
         GROUP BY 1",
    )
    .bind(days)
    .bind(grouping.as_str())
    .bind(&query.queues)
    .bind(&query.agents)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Row::keyed).collect())
}

/// The conversions of these rolled-up days, per group key (as [`scanned_conversions`]).
async fn rolled_conversions(
    conn: &mut PgConnection,
    query: &Query,
    days: &[NaiveDate],
    grouping: Grouping,
) -> sqlx::Result<BTreeMap<String, (i64, i64)>> {
    rolled_pairs(
        conn,
        "SELECT CASE $2 WHEN 'campaign' THEN campaign WHEN 'agent' THEN agent \
             WHEN 'team' THEN team WHEN 'day' THEN to_char(day, 'YYYY-MM-DD') \
             WHEN 'month' THEN to_char(day, 'YYYY-MM') ELSE '' END AS key, \
           sum(reached)::int8, sum(converted)::int8 \
         FROM kpi_conversion_rollups \
         WHERE day = ANY($1) AND (cardinality($3::text[]) = 0 OR agent = ANY($3)) \
         GROUP BY 1",
        query,
        days,
        grouping,
    )
    .await
}

/// The agent time of these rolled-up days, per group key (as [`scanned_agent_time`]).
async fn rolled_agent_time(
    conn: &mut PgConnection,
    query: &Query,
    days: &[NaiveDate],
    grouping: Grouping,
) -> sqlx::Result<BTreeMap<String, (f64, f64)>> {
    rolled_pairs(
        conn,
        "SELECT CASE $2 WHEN 'agent' THEN agent WHEN 'team' THEN team \
             WHEN 'day' THEN to_char(day, 'YYYY-MM-DD') \
             WHEN 'month' THEN to_char(day, 'YYYY-MM') ELSE '' END AS key, \
           sum(occupied_ms), sum(idle_ms) \
         FROM kpi_occupancy_rollups \
         WHERE day = ANY($1) AND (cardinality($3::text[]) = 0 OR agent = ANY($3)) \
         GROUP BY 1",
        query,
        days,
        grouping,
    )
    .await
}

/// Runs a rollup read that takes ($1 days, $2 grouping, $3 agents) and returns (key, a, b) rows.
async fn rolled_pairs<A, B>(
    conn: &mut PgConnection,
    sql: &'static str,
    query: &Query,
    days: &[NaiveDate],
    grouping: Grouping,
) -> sqlx::Result<BTreeMap<String, (A, B)>>
where
    (String, A, B): for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let rows: Vec<(String, A, B)> = sqlx::query_as(sql)
        .bind(days)
        .bind(grouping.as_str())
        .bind(&query.agents)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(|(key, a, b)| (key, (a, b))).collect())
}

/// Moves the barrier (migration 20261207000034): the barrier day becomes safe once every
/// transaction older than its id has ended, and a day closed since the last safe one gets a
/// barrier, this transaction's id. Returns the rollups' zone, the last safe day, and whether a
/// barrier is waited on.
pub async fn advance_barrier(conn: &mut PgConnection) -> sqlx::Result<(String, NaiveDate, bool)> {
    sqlx::query!(
        "UPDATE kpi_rollup_state \
         SET safe_through = barrier_day, barrier_day = NULL, barrier_xid = NULL \
         WHERE barrier_xid IS NOT NULL AND pg_snapshot_xmin(pg_current_snapshot()) >= barrier_xid"
    )
    .execute(&mut *conn)
    .await?;
    let state = sqlx::query!(
        "UPDATE kpi_rollup_state \
         SET barrier_day = CASE WHEN barrier_xid IS NULL \
                                 AND safe_through < kpi_day(clock_timestamp()) - 1 \
                            THEN kpi_day(clock_timestamp()) - 1 ELSE barrier_day END, \
             barrier_xid = CASE WHEN barrier_xid IS NULL \
                                 AND safe_through < kpi_day(clock_timestamp()) - 1 \
                            THEN pg_current_xact_id() ELSE barrier_xid END \
         RETURNING zone, safe_through, barrier_day IS NOT NULL AS \"waiting!\""
    )
    .fetch_one(conn)
    .await?;
    Ok((state.zone, state.safe_through, state.waiting))
}

/// Makes `zone` the rollups' time zone. When it was another, drops every rollup and note: the
/// pass rolls every closed day up again, and reads scan them meanwhile. No day is safe until a
/// barrier taken after this passes: a write in flight noted nothing for the old zone's today,
/// which may be a closed day in the new one. Returns whether it changed. Takes the rollup lock
/// first, so no pass runs meanwhile.
pub async fn set_rollup_zone(conn: &mut PgConnection, lock: i64, zone: &str) -> sqlx::Result<bool> {
    lock_pass(&mut *conn, lock, true).await?;
    let changed = sqlx::query!(
        "UPDATE kpi_rollup_state SET zone = $1 WHERE zone <> $1",
        zone
    )
    .execute(&mut *conn)
    .await?
    .rows_affected()
        > 0;
    if changed {
        sqlx::query!(
            "WITH a AS (DELETE FROM kpi_call_rollups), b AS (DELETE FROM kpi_conversion_rollups), \
               c AS (DELETE FROM kpi_occupancy_rollups), d AS (DELETE FROM kpi_rollup_notes) \
             DELETE FROM kpi_rollup_days"
        )
        .execute(&mut *conn)
        .await?;
        sqlx::query!(
            "UPDATE kpi_rollup_state SET first_day = kpi_first_day(), \
               safe_through = kpi_first_day() - 1, barrier_day = NULL, barrier_xid = NULL"
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(changed)
}

/// Takes up to `max` closed days to roll up, oldest first, up to `safe_through`: every day with
/// a note (whose notes it deletes), and every day from `first_day` never rolled up. A noted day
/// already rolled up is due only once `spacing` times its last rollup's duration has passed
/// since that rollup (0: at once); until then its notes stay.
pub async fn take_rollup_days(
    conn: &mut PgConnection,
    max: i64,
    safe_through: NaiveDate,
    spacing: f64,
) -> sqlx::Result<Vec<NaiveDate>> {
    sqlx::query_scalar!(
        "WITH due AS ( \
           SELECT n.day FROM kpi_rollup_notes n WHERE n.day <= $2 \
             AND NOT EXISTS (SELECT 1 FROM kpi_rollup_days r \
                             WHERE r.day = n.day AND r.rolled_at + r.took * $3 > now()) \
           UNION \
           SELECT g::date FROM kpi_rollup_state s, \
             generate_series(s.first_day, $2, interval '1 day') AS g \
           WHERE NOT EXISTS (SELECT 1 FROM kpi_rollup_days r WHERE r.day = g::date)), \
         picked AS (SELECT day FROM due ORDER BY day LIMIT $1), \
         taken AS (DELETE FROM kpi_rollup_notes n USING picked p WHERE n.day = p.day) \
         SELECT day AS \"day!\" FROM picked ORDER BY day",
        max,
        safe_through,
        spacing
    )
    .fetch_all(conn)
    .await
}

/// Rolls one day up from the data as committed: its call tallies, conversions and agent time
/// under the rollup's definition (`query`), replacing what it had, and records what it took.
pub async fn roll_up_day(
    conn: &mut PgConnection,
    query: &Query,
    window: &Window,
    day: NaiveDate,
) -> sqlx::Result<()> {
    let started = std::time::Instant::now();
    sqlx::query!(
        "WITH a AS (DELETE FROM kpi_call_rollups WHERE day = $1), \
           b AS (DELETE FROM kpi_conversion_rollups WHERE day = $1) \
         DELETE FROM kpi_occupancy_rollups WHERE day = $1",
        day
    )
    .execute(&mut *conn)
    .await?;
    let grouping = Grouping::Rollup;
    bind_call_tallies(
        sqlx::query_as::<_, (i64,)>(concat!(
            "WITH added AS (INSERT INTO kpi_call_rollups (day, queue, agent, team, campaigns, ",
            tally_columns!(),
            ") SELECT kpi_day($1), k->>0, k->>1, k->>2, \
               ARRAY(SELECT json_array_elements_text(k->3)), ",
            tally_columns!(),
            " FROM (",
            call_tallies_sql!(),
            ") t CROSS JOIN LATERAL (SELECT t.key::json AS k) j RETURNING 1) \
             SELECT count(*) FROM added"
        )),
        query,
        window,
        grouping,
    )
    .fetch_one(&mut *conn)
    .await?;
    for sql in [
        concat!(
            "INSERT INTO kpi_conversion_rollups (day, campaign, agent, team, reached, converted) \
             SELECT kpi_day($1), k->>0, k->>1, k->>2, t.reached, t.converted FROM (",
            conversions_sql!(),
            ") t CROSS JOIN LATERAL (SELECT t.key::json AS k) j"
        ),
        concat!(
            "INSERT INTO kpi_occupancy_rollups (day, agent, team, occupied_ms, idle_ms) \
             SELECT kpi_day($1), k->>0, k->>1, t.occupied_ms, t.idle_ms FROM (",
            agent_time_sql!(),
            ") t CROSS JOIN LATERAL (SELECT t.key::json AS k) j"
        ),
    ] {
        sqlx::query(sql)
            .bind(window.start)
            .bind(window.end)
            .bind(grouping.as_str())
            .bind(&query.time_zone)
            .bind(&query.agents)
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query!(
        "INSERT INTO kpi_rollup_days (day, took) VALUES ($1, make_interval(secs => $2)) \
         ON CONFLICT (day) DO UPDATE SET rolled_at = now(), took = EXCLUDED.took",
        day,
        started.elapsed().as_secs_f64()
    )
    .execute(conn)
    .await?;
    Ok(())
}

// The call-chain stamper's statements (`chains.rs`). They stay checked at run time: they bind
// arrays with NULL elements, which the query macros cannot type.

/// Notes taken, and per noted customer where their chain changed (`None`: anywhere).
pub type ChainNotes = (
    i64,
    Vec<uuid::Uuid>,
    Vec<Option<chrono::DateTime<chrono::Utc>>>,
);

/// A call whose stamps are out of date: its customer and where their chain changed, the call, and
/// its next and previous contacts.
#[derive(sqlx::FromRow)]
pub struct Restamp {
    pub customer_id: uuid::Uuid,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub gateway_id: String,
    pub call_id: String,
    /// The call's offer time, with its key its row's identity (`calls` is partitioned on it).
    pub offered_at: chrono::DateTime<chrono::Utc>,
    pub next_at: Option<chrono::DateTime<chrono::Utc>>,
    pub prev_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Takes a background pass's advisory lock (`key`: the chain stamper's or the rollups') for the
/// transaction: waiting for it, or (without `wait`) only if it is free. Returns whether it is
/// held.
pub async fn lock_pass(conn: &mut PgConnection, key: i64, wait: bool) -> sqlx::Result<bool> {
    if wait {
        sqlx::query!("SELECT pg_advisory_xact_lock($1)", key)
            .execute(conn)
            .await?;
        Ok(true)
    } else {
        sqlx::query_scalar!("SELECT pg_try_advisory_xact_lock($1) AS \"locked!\"", key)
            .fetch_one(conn)
            .await
    }
}

/// Takes up to `batch` notes: how many, and per noted customer where the chain changed.
pub async fn take_chain_notes(conn: &mut PgConnection, batch: i64) -> sqlx::Result<ChainNotes> {
    sqlx::query_as(
        "WITH taken AS ( \
           DELETE FROM contact_chains_dirty \
           WHERE id IN (SELECT id FROM contact_chains_dirty ORDER BY id LIMIT $1) \
           RETURNING customer_id, since), \
         per_customer AS ( \
           SELECT customer_id, CASE WHEN bool_or(since IS NULL) THEN NULL ELSE min(since) END AS since \
           FROM taken GROUP BY customer_id) \
         SELECT (SELECT count(*) FROM taken), COALESCE(array_agg(customer_id), '{}'), \
                COALESCE(array_agg(since), '{}') \
         FROM per_customer",
    )
    .bind(batch)
    .fetch_one(conn)
    .await
}

/// The calls of these customers' chains (from where each changed) whose stamps differ, grouped
/// by customer. A misdial (ended within `contact_chain_rule.misdial_seconds` of its offer) is
/// no contact: its neighbours skip it, and it carries its previous contact but no next one
/// (migration 20261207000041).
///
/// Per customer, `start` is the last contact before the change and `back` the contact before
/// that (whose offer is `start`'s previous contact); the calls from `start` on are restamped.
/// Both are found from stored stamps, in two index probes: the latest call before the change
/// is `start` if it is a contact, and otherwise carries it as its previous contact; `back` is
/// the previous contact of the first contact offered at `start`. They used to be found by
/// walking back through the customer's calls, misdials and all, which cost as many heap reads
/// as the customer had misdials since their last contact, at every new call. A stored stamp is
/// out of date only while a change before it waits in a note of its own, and that note's pass
/// restamps everything from its own, earlier `start`.
///
/// The window then reads the calls from the change on, and the contacts offered at `back` and at
/// `start`: what lies between them and the change is misdials that did not change (one that did
/// has a note of its own), whose heap pages it used to read one by one. Both bounds are computed once
/// per customer (a materialized CTE; inlined, the planner re-evaluated them for every call row),
/// and each customer's calls are one index scan (`OFFSET 0` keeps it a parameterized scan,
/// where a large batch made the planner hash the whole table). The stored stamps come from the
/// same rows, with no join back to `calls`.
pub async fn stale_stamps(
    conn: &mut PgConnection,
    customers: &[uuid::Uuid],
    since: &[Option<chrono::DateTime<chrono::Utc>>],
) -> sqlx::Result<Vec<Restamp>> {
    sqlx::query_as(
        "WITH rule AS MATERIALIZED (SELECT make_interval(secs => \
                         (SELECT misdial_seconds FROM contact_chain_rule)) AS misdial), \
         chains AS MATERIALIZED ( \
           SELECT d.customer_id, d.since, s.start, COALESCE(b.back, s.start) AS back \
           FROM unnest($1::uuid[], $2::timestamptz[]) AS d(customer_id, since) \
           CROSS JOIN rule \
           CROSS JOIN LATERAL ( \
             SELECT CASE WHEN d.since IS NULL THEN '-infinity'::timestamptz \
                    ELSE COALESCE((SELECT CASE WHEN p.ended_at < p.offered_at + rule.misdial \
                                               THEN p.prev_offered_at ELSE p.offered_at END \
                                   FROM calls p \
                                   WHERE p.customer_id = d.customer_id AND p.offered_at < d.since \
                                   ORDER BY p.offered_at DESC, p.gateway_id DESC, p.call_id DESC \
                                   LIMIT 1), \
                                  d.since) END AS start OFFSET 0) s \
           CROSS JOIN LATERAL ( \
             SELECT (SELECT p.prev_offered_at FROM calls p \
                     WHERE p.customer_id = d.customer_id AND p.offered_at = s.start \
                       AND p.offered_at < d.since \
                       AND NOT COALESCE(p.ended_at < p.offered_at + rule.misdial, false) \
                     ORDER BY p.gateway_id, p.call_id LIMIT 1) AS back OFFSET 0) b) \
         SELECT n.customer_id, n.since, n.gateway_id, n.call_id, n.offered_at, n.next_at, n.prev_at \
         FROM (SELECT c.customer_id, c.since, c.start, t.gateway_id, t.call_id, t.offered_at, \
                 t.old_next, t.old_prev, \
                 CASE WHEN t.contact THEN min(t.contact_at) OVER (PARTITION BY c.customer_id \
                   ORDER BY t.offered_at DESC, t.gateway_id DESC, t.call_id DESC \
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) END AS next_at, \
                 max(t.contact_at) OVER (PARTITION BY c.customer_id \
                   ORDER BY t.offered_at, t.gateway_id, t.call_id \
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_at \
               FROM chains c \
               CROSS JOIN rule \
               CROSS JOIN LATERAL ( \
                 SELECT x.gateway_id, x.call_id, x.offered_at, x.next_offered_at AS old_next, \
                   x.prev_offered_at AS old_prev, m.contact, \
                   CASE WHEN m.contact THEN x.offered_at END AS contact_at \
                 FROM calls x \
                 CROSS JOIN LATERAL (SELECT NOT COALESCE(x.ended_at < x.offered_at + rule.misdial, \
                                                         false) AS contact) m \
                 WHERE x.customer_id = c.customer_id \
                   AND (x.offered_at >= COALESCE(c.since, '-infinity') \
                        OR (x.offered_at IN (c.back, c.start) AND m.contact)) \
                 OFFSET 0) t) n \
         WHERE n.offered_at >= n.start \
           AND (n.old_next IS DISTINCT FROM n.next_at OR n.old_prev IS DISTINCT FROM n.prev_at) \
         ORDER BY n.customer_id, n.offered_at, n.gateway_id, n.call_id",
    )
    .bind(customers)
    .bind(since)
    .fetch_all(conn)
    .await
}

/// Makes `seconds` the misdial threshold of every chain (and of the KPIs that read them), noting
/// the chains of the customers whose calls it turns into misdials or back into contacts.
/// Returns how many customers were noted.
pub async fn set_misdial_seconds(conn: &mut PgConnection, seconds: i32) -> sqlx::Result<i64> {
    let old = sqlx::query_scalar!("SELECT misdial_seconds FROM contact_chain_rule FOR UPDATE")
        .fetch_one(&mut *conn)
        .await?;
    if old == seconds {
        return Ok(0);
    }
    sqlx::query!(
        "UPDATE contact_chain_rule SET misdial_seconds = $1",
        seconds
    )
    .execute(&mut *conn)
    .await?;
    let noted = sqlx::query!(
        "INSERT INTO contact_chains_dirty (customer_id, since) \
         SELECT customer_id, min(offered_at) FROM calls \
         WHERE customer_id IS NOT NULL \
           AND ended_at >= offered_at + make_interval(secs => LEAST($1::int, $2::int)) \
           AND ended_at < offered_at + make_interval(secs => GREATEST($1::int, $2::int)) \
         GROUP BY customer_id",
        old,
        seconds
    )
    .execute(&mut *conn)
    .await?;
    Ok(noted.rows_affected() as i64)
}

/// Writes the new next-contact stamps.
pub async fn write_stamps(conn: &mut PgConnection, stamped: &[&Restamp]) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE calls c SET next_offered_at = u.next_at, prev_offered_at = u.prev_at \
         FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::timestamptz[]) \
           AS u(gateway_id, call_id, next_at, prev_at, offered_at) \
         WHERE c.gateway_id = u.gateway_id AND c.call_id = u.call_id AND c.offered_at = u.offered_at",
    )
    .bind(
        stamped
            .iter()
            .map(|r| r.gateway_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        stamped
            .iter()
            .map(|r| r.call_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(stamped.iter().map(|r| r.next_at).collect::<Vec<_>>())
    .bind(stamped.iter().map(|r| r.prev_at).collect::<Vec<_>>())
    .bind(stamped.iter().map(|r| r.offered_at).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// Notes these customers' chains again, for the next pass.
pub async fn note_chains(
    conn: &mut PgConnection,
    customers: &[uuid::Uuid],
    since: &[Option<chrono::DateTime<chrono::Utc>>],
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO contact_chains_dirty (customer_id, since) \
         SELECT * FROM unnest($1::uuid[], $2::timestamptz[])",
    )
    .bind(customers)
    .bind(since)
    .execute(conn)
    .await?;
    Ok(())
}

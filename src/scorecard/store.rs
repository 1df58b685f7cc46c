//! The scorecard's reads: adoption per call and agent, the cases opened from calls, the team
//! coordination counts and the feedback loop. The efficiency KPIs come from the analytics
//! context's KPI query, so they are the KPIs of docs/KPIS.md.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{AgentAdoption, CaseSla, FeedbackCount, FeedbackTotals, TeamCases, TeamTransfers};

/// Answered calls offered in [start, end), per group and first answering agent: how many, and of
/// those how many had the pop delivered to that agent, an interaction, a disposition and notes.
pub async fn adoption(
    conn: &mut PgConnection,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    by_queue: bool,
) -> sqlx::Result<Vec<AgentAdoption>> {
    sqlx::query_as!(
        AgentAdoption,
        "WITH c AS ( \
           SELECT c.gateway_id, c.call_id, COALESCE(c.handled_by[1], '') AS agent, \
             CASE WHEN $3 THEN COALESCE(c.queue, '') ELSE COALESCE(c.team, '') END AS key \
           FROM calls c \
           WHERE c.offered_at >= $1 AND c.offered_at < $2 AND c.answered_at IS NOT NULL), \
         i AS ( \
           SELECT i.gateway_id, i.call_id, bool_or(i.disposition_code IS NOT NULL) AS disposition, \
             bool_or(i.notes <> '') AS notes \
           FROM interactions i \
           WHERE i.call_id IS NOT NULL AND i.started_at >= $1::timestamptz - interval '1 day' \
           GROUP BY 1, 2) \
         SELECT c.key AS \"key!\", c.agent AS \"agent_id!\", \
           COALESCE(max(a.display_name), '') AS \"display_name!\", \
           count(*) AS \"answered!\", count(p.agent_id) AS \"popped!\", \
           count(i.call_id) AS \"logged!\", \
           count(*) FILTER (WHERE i.disposition) AS \"disposition!\", \
           count(*) FILTER (WHERE i.notes) AS \"notes!\" \
         FROM c \
         LEFT JOIN i ON i.gateway_id = c.gateway_id AND i.call_id = c.call_id \
         LEFT JOIN pop_deliveries p \
           ON p.gateway_id = c.gateway_id AND p.call_id = c.call_id AND p.agent_id = c.agent \
         LEFT JOIN agents a ON a.agent_id = c.agent \
         GROUP BY c.key, c.agent \
         ORDER BY c.key, c.agent",
        start,
        end,
        by_queue
    )
    .fetch_all(conn)
    .await
}

/// Cases opened from the calls offered in [start, end) (named by an interaction or feedback on
/// the call, and opened no earlier than the call's offer), per group of the first such call:
/// those updated by their SLA due time, and those whose SLA is decided (updated, or due by now).
pub async fn cases_from_calls(
    conn: &mut PgConnection,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    by_queue: bool,
) -> sqlx::Result<Vec<CaseSla>> {
    sqlx::query_as!(
        CaseSla,
        "WITH l AS ( \
           SELECT case_id, gateway_id, call_id FROM interactions \
           WHERE case_id IS NOT NULL AND call_id IS NOT NULL AND started_at >= $1::timestamptz - interval '1 day' \
           UNION ALL \
           SELECT case_id, gateway_id, call_id FROM feedback \
           WHERE case_id IS NOT NULL AND call_id IS NOT NULL AND created_at >= $1), \
         k AS ( \
           SELECT DISTINCT ON (s.id) s.id, s.sla_due_at, \
             CASE WHEN $3 THEN COALESCE(c.queue, '') ELSE COALESCE(c.team, '') END AS key \
           FROM l \
           JOIN cases s ON s.id = l.case_id \
           JOIN calls c ON c.gateway_id = l.gateway_id AND c.call_id = l.call_id \
           WHERE c.offered_at >= $1 AND c.offered_at < $2 AND s.created_at >= c.offered_at \
           ORDER BY s.id, c.offered_at), \
         u AS ( \
           SELECT k.key, k.sla_due_at, \
             (SELECT min(h.at) FROM case_history h \
              WHERE h.case_id = k.id AND h.action <> 'opened') AS first_update \
           FROM k) \
         SELECT key AS \"key!\", \
           count(*) FILTER (WHERE first_update <= sla_due_at) AS \"within!\", \
           count(*) FILTER (WHERE first_update IS NOT NULL OR sla_due_at <= now()) AS \"decided!\" \
         FROM u GROUP BY key ORDER BY key",
        start,
        end,
        by_queue
    )
    .fetch_all(conn)
    .await
}

/// Per team: answered calls offered in [start, end) handled by two or more agents all in the
/// team of the first (after a transfer), and of those the ones wrapped up with a resolving
/// disposition.
pub async fn transfers_in_team(
    conn: &mut PgConnection,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> sqlx::Result<Vec<TeamTransfers>> {
    sqlx::query_as!(
        TeamTransfers,
        "SELECT c.team AS \"team!\", count(*) AS \"transfers!\", \
           count(*) FILTER (WHERE w.resolved) AS \"resolved!\" \
         FROM calls c \
         LEFT JOIN LATERAL ( \
           SELECT bool_or(d.resolves) AS resolved \
           FROM interactions i JOIN dispositions d ON d.code = i.disposition_code \
           WHERE i.gateway_id = c.gateway_id AND i.call_id = c.call_id \
             AND i.wrap_up_completed_at IS NOT NULL) w ON true \
         WHERE c.offered_at >= $1 AND c.offered_at < $2 AND c.answered_at IS NOT NULL \
           AND c.transfers > 0 AND COALESCE(c.team, '') <> '' \
           AND (SELECT count(DISTINCT h) FROM unnest(c.handled_by) AS h) >= 2 \
           AND NOT EXISTS ( \
             SELECT 1 FROM unnest(c.handled_by[2:]) AS h(agent_id) \
             LEFT JOIN agents a ON a.agent_id = h.agent_id \
             WHERE COALESCE(a.team, '') <> c.team) \
         GROUP BY c.team ORDER BY c.team",
        start,
        end
    )
    .fetch_all(conn)
    .await
}

/// Per team of the agent who opened them: cases resolved in [start, end), and those resolved by
/// another agent of that team.
pub async fn cases_by_teammates(
    conn: &mut PgConnection,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> sqlx::Result<Vec<TeamCases>> {
    sqlx::query_as!(
        TeamCases,
        "WITH r AS ( \
           SELECT \
             (SELECT h.actor FROM case_history h WHERE h.case_id = s.id AND h.action = 'opened' \
              ORDER BY h.id LIMIT 1) AS opener, \
             (SELECT h.actor FROM case_history h WHERE h.case_id = s.id AND h.action = 'status' \
                AND h.\"to\" = 'resolved' ORDER BY h.id DESC LIMIT 1) AS resolver \
           FROM cases s WHERE s.resolved_at >= $1 AND s.resolved_at < $2) \
         SELECT o.team AS \"team!\", count(*) AS \"resolved!\", \
           count(*) FILTER (WHERE r.resolver <> r.opener AND x.team = o.team) AS \"by_teammate!\" \
         FROM r JOIN agents o ON o.agent_id = r.opener \
         LEFT JOIN agents x ON x.agent_id = r.resolver \
         WHERE o.team <> '' \
         GROUP BY o.team ORDER BY o.team",
        start,
        end
    )
    .fetch_all(conn)
    .await
}

/// Feedback submitted in [start, end) by source and category.
pub async fn feedback_counts(
    conn: &mut PgConnection,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> sqlx::Result<Vec<FeedbackCount>> {
    sqlx::query_as!(
        FeedbackCount,
        "SELECT source, category, count(*) AS \"items!\", \
           count(*) FILTER (WHERE status IN ('resolved', 'closed')) AS \"resolved!\", \
           count(*) FILTER (WHERE status NOT IN ('resolved', 'closed') AND due_at < now()) \
             AS \"past_due!\" \
         FROM feedback WHERE created_at >= $1 AND created_at < $2 \
         GROUP BY source, category ORDER BY source, category",
        start,
        end
    )
    .fetch_all(conn)
    .await
}

/// Feedback submitted in [start, end): the median time to resolution, and the negative items
/// tied to a case with how many of those cases are resolved or closed.
pub async fn feedback_totals(
    conn: &mut PgConnection,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> sqlx::Result<FeedbackTotals> {
    sqlx::query_as!(
        FeedbackTotals,
        "SELECT \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY date_part('epoch', f.resolved_at - f.created_at)) \
             FILTER (WHERE f.status IN ('resolved', 'closed') AND f.resolved_at IS NOT NULL) \
             AS median_seconds, \
           count(*) FILTER (WHERE f.sentiment = 'negative' AND f.case_id IS NOT NULL) \
             AS \"negative_with_case!\", \
           count(*) FILTER (WHERE f.sentiment = 'negative' AND s.status IN ('resolved', 'closed')) \
             AS \"negative_case_resolved!\" \
         FROM feedback f LEFT JOIN cases s ON s.id = f.case_id \
         WHERE f.created_at >= $1 AND f.created_at < $2",
        start,
        end
    )
    .fetch_one(conn)
    .await
}

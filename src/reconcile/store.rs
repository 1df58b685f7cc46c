//! The run's SQL. The records live in temporary tables of the run's transaction, which sqlx's
//! compile-time checks cannot see, so these queries are checked by the tests instead.

use sqlx::{PgConnection, Row as _};

use super::{Cdr, Day, Discrepancy, Kind, LISTED, Side};

pub async fn create_table(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query(
        "CREATE TEMP TABLE cdr_rows (line int8 NOT NULL, call_id text, caller text, dialed text, \
           started_at timestamptz NOT NULL, answered_at timestamptz, ended_at timestamptz, \
           talk_ms int8) ON COMMIT DROP",
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn insert(conn: &mut PgConnection, records: &[Cdr]) -> sqlx::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&Cdr) -> Option<String>| records.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO cdr_rows SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], \
           $5::timestamptz[], $6::timestamptz[], $7::timestamptz[], $8::int8[])",
    )
    .bind(records.iter().map(|r| r.line).collect::<Vec<_>>())
    .bind(column(|r| r.call_id.clone()))
    .bind(column(|r| r.caller.clone()))
    .bind(column(|r| r.dialed.clone()))
    .bind(records.iter().map(|r| r.started_at).collect::<Vec<_>>())
    .bind(records.iter().map(|r| r.answered_at).collect::<Vec<_>>())
    .bind(records.iter().map(|r| r.ended_at).collect::<Vec<_>>())
    .bind(records.iter().map(|r| r.talk_ms).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// Temporary tables are never analyzed by autovacuum: without this the planner guesses their size.
pub async fn analyze(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query("ANALYZE cdr_rows").execute(conn).await?;
    Ok(())
}

/// `cdr_pairs`: every record, whether it repeats an earlier line, and the call it matched.
pub async fn pair(conn: &mut PgConnection, gateway_id: &str, tolerance_s: i32) -> sqlx::Result<()> {
    sqlx::query(
        "CREATE TEMP TABLE cdr_pairs ON COMMIT DROP AS \
         WITH d AS ( \
           SELECT r.*, \
             row_number() OVER w AS nth, min(r.line) OVER w AS first_line \
           FROM cdr_rows r \
           WINDOW w AS (PARTITION BY COALESCE(r.call_id, \
             COALESCE(r.caller, '') || '|' || COALESCE(r.dialed, '') || '|' || r.started_at::text) \
             ORDER BY r.line ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)), \
         ids AS ( \
           SELECT DISTINCT ON (d.line) d.line, c.call_id AS sb, c.offered_at AS sb_at \
           FROM d JOIN calls c ON c.gateway_id = $1 AND c.call_id = d.call_id \
             AND c.offered_at BETWEEN d.started_at - interval '1 day' AND d.started_at + interval '1 day' \
           WHERE d.nth = 1 \
           ORDER BY d.line, abs(date_part('epoch', c.offered_at - d.started_at))), \
         span AS ( \
           SELECT min(started_at) - make_interval(secs => $2) AS lo, \
             max(started_at) + make_interval(secs => $2) AS hi FROM cdr_rows), \
         free_calls AS ( \
           SELECT c.call_id, c.caller_number, c.dialed_number, c.offered_at \
           FROM calls c CROSS JOIN span \
           WHERE c.gateway_id = $1 AND c.offered_at BETWEEN span.lo AND span.hi \
             AND NOT EXISTS (SELECT 1 FROM ids WHERE ids.sb = c.call_id AND ids.sb_at = c.offered_at)), \
         nearest AS ( \
           SELECT DISTINCT ON (d.line) d.line, f.call_id AS sb, f.offered_at AS sb_at, \
             abs(date_part('epoch', f.offered_at - d.started_at)) AS gap \
           FROM d JOIN free_calls f \
             ON f.caller_number IS NOT DISTINCT FROM d.caller \
            AND (d.dialed IS NULL OR f.dialed_number IS NULL OR f.dialed_number = d.dialed) \
            AND f.offered_at BETWEEN d.started_at - make_interval(secs => $2) \
                                 AND d.started_at + make_interval(secs => $2) \
           WHERE d.nth = 1 AND NOT EXISTS (SELECT 1 FROM ids WHERE ids.line = d.line) \
           ORDER BY d.line, gap, f.call_id), \
         by_numbers AS ( \
           SELECT DISTINCT ON (sb, sb_at) line, sb, sb_at FROM nearest ORDER BY sb, sb_at, gap, line) \
         SELECT d.line, d.nth > 1 AS duplicate, d.first_line, m.sb, m.sb_at, d.call_id, d.started_at, \
           d.answered_at, COALESCE(d.talk_ms::float8, \
             1000 * date_part('epoch', d.ended_at - d.answered_at)) AS talk \
         FROM d LEFT JOIN (SELECT line, sb, sb_at FROM ids UNION ALL SELECT line, sb, sb_at FROM by_numbers) m \
           ON m.line = d.line",
    )
    .bind(gateway_id)
    .bind(f64::from(tolerance_s))
    .execute(&mut *conn)
    .await?;
    sqlx::query("ANALYZE cdr_pairs").execute(conn).await?;
    Ok(())
}

/// The calls of the gateway a pair names, with their talk time (SQL shared with `concat!`, so the
/// statements stay `'static` strings with every value bound).
macro_rules! paired {
    () => {
        "FROM cdr_pairs p \
         LEFT JOIN (SELECT call_id, offered_at, answered_at, \
                      1000 * date_part('epoch', ended_at - answered_at) AS talk \
                    FROM calls WHERE gateway_id = $1) c ON c.call_id = p.sb AND c.offered_at = p.sb_at"
    };
}

/// The CDR side of each day, by the records' start.
pub async fn cdr_days(
    conn: &mut PgConnection,
    gateway_id: &str,
    time_zone: &str,
    tolerance_ms: i64,
) -> sqlx::Result<Vec<Day>> {
    let rows = sqlx::query(concat!(
        "SELECT to_char(p.started_at AT TIME ZONE $2, 'YYYY-MM-DD') AS day, \
           count(*) FILTER (WHERE NOT p.duplicate) AS cdrs, \
           count(*) FILTER (WHERE p.duplicate) AS duplicates, \
           count(*) FILTER (WHERE p.sb IS NOT NULL) AS matched, \
           count(*) FILTER (WHERE NOT p.duplicate AND p.sb IS NULL) AS missing, \
           count(*) FILTER (WHERE p.sb IS NOT NULL \
             AND (p.answered_at IS NOT NULL) <> (c.answered_at IS NOT NULL)) AS outcome, \
           count(*) FILTER (WHERE p.sb IS NOT NULL AND abs(p.talk - c.talk) > $3) AS duration, \
           count(*) FILTER (WHERE NOT p.duplicate AND p.answered_at IS NOT NULL) AS answered, \
           COALESCE(sum(1000 * date_part('epoch', p.answered_at - p.started_at)) \
             FILTER (WHERE NOT p.duplicate AND p.answered_at IS NOT NULL), 0)::float8 AS wait_ms, \
           COALESCE(sum(p.talk) FILTER (WHERE NOT p.duplicate AND p.answered_at IS NOT NULL), 0) \
             ::float8 AS talk_ms, \
           count(p.talk) FILTER (WHERE NOT p.duplicate AND p.answered_at IS NOT NULL) AS talked \
         ",
        paired!(),
        " GROUP BY 1"
    ))
    .bind(gateway_id)
    .bind(time_zone)
    .bind(tolerance_ms as f64)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Day {
                day: r.try_get("day")?,
                cdrs: r.try_get("cdrs")?,
                matched: r.try_get("matched")?,
                missing_in_switchboard: r.try_get("missing")?,
                duplicates: r.try_get("duplicates")?,
                outcome_mismatches: r.try_get("outcome")?,
                duration_mismatches: r.try_get("duration")?,
                cdr: Side {
                    offered: r.try_get("cdrs")?,
                    answered: r.try_get("answered")?,
                    wait_ms: r.try_get("wait_ms")?,
                    talk_ms: r.try_get("talk_ms")?,
                    talked: r.try_get("talked")?,
                },
                ..Day::default()
            })
        })
        .collect()
}

/// The calls of the gateway offered within the records' span (widened by the tolerance).
macro_rules! span {
    () => {
        "FROM calls c \
         CROSS JOIN (SELECT min(started_at) - make_interval(secs => $3) AS lo, \
                       max(started_at) + make_interval(secs => $3) AS hi FROM cdr_rows) s \
         LEFT JOIN cdr_pairs m ON m.sb = c.call_id AND m.sb_at = c.offered_at \
         WHERE c.gateway_id = $1 AND c.offered_at BETWEEN s.lo AND s.hi"
    };
}

/// Switchboard's side of each day, by the calls' offer; and its calls no record matched.
pub async fn switchboard_days(
    conn: &mut PgConnection,
    gateway_id: &str,
    time_zone: &str,
    tolerance_s: i32,
) -> sqlx::Result<Vec<(String, Side, i64)>> {
    let rows = sqlx::query(concat!(
        "SELECT to_char(c.offered_at AT TIME ZONE $2, 'YYYY-MM-DD') AS day, count(*) AS offered, \
           count(*) FILTER (WHERE c.answered_at IS NOT NULL) AS answered, \
           COALESCE(sum(1000 * date_part('epoch', c.answered_at - c.offered_at)) \
             FILTER (WHERE c.answered_at IS NOT NULL), 0)::float8 AS wait_ms, \
           COALESCE(sum(1000 * date_part('epoch', c.ended_at - c.answered_at)) \
             FILTER (WHERE c.answered_at IS NOT NULL), 0)::float8 AS talk_ms, \
           count(c.ended_at) FILTER (WHERE c.answered_at IS NOT NULL) AS talked, \
           count(*) FILTER (WHERE m.sb IS NULL) AS missing \
         ",
        span!(),
        " GROUP BY 1"
    ))
    .bind(gateway_id)
    .bind(time_zone)
    .bind(f64::from(tolerance_s))
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok((
                r.try_get("day")?,
                Side {
                    offered: r.try_get("offered")?,
                    answered: r.try_get("answered")?,
                    wait_ms: r.try_get("wait_ms")?,
                    talk_ms: r.try_get("talk_ms")?,
                    talked: r.try_get("talked")?,
                },
                r.try_get("missing")?,
            ))
        })
        .collect()
}

/// The discrepancies, records by line then the calls no record matched; at most [`LISTED`],
/// with how many there are in all.
pub async fn discrepancies(
    conn: &mut PgConnection,
    gateway_id: &str,
    time_zone: &str,
    tolerance_s: i32,
    tolerance_ms: i64,
) -> sqlx::Result<(Vec<Discrepancy>, i64)> {
    let rows = sqlx::query(concat!(
        "WITH p AS ( \
           SELECT p.*, c.answered_at AS sb_answered_at, c.talk AS sb_talk, \
             to_char(p.started_at AT TIME ZONE $2, 'YYYY-MM-DD') AS day ",
        paired!(),
        "), \
         x AS ( \
           SELECT 'duplicate' AS kind, line, COALESCE(call_id, '') AS call_id, day, \
             'the same call as line ' || first_line AS detail FROM p WHERE duplicate \
           UNION ALL \
           SELECT 'missing_in_switchboard', line, COALESCE(call_id, ''), day, 'no call in switchboard' \
           FROM p WHERE NOT duplicate AND sb IS NULL \
           UNION ALL \
           SELECT 'outcome', line, sb, day, \
             CASE WHEN answered_at IS NOT NULL THEN 'answered in the cdr, not in switchboard' \
                  ELSE 'answered in switchboard, not in the cdr' END \
           FROM p WHERE sb IS NOT NULL AND (answered_at IS NOT NULL) <> (sb_answered_at IS NOT NULL) \
           UNION ALL \
           SELECT 'duration', line, sb, day, \
             format('talk %s s in the cdr, %s s in switchboard', round(talk / 1000), \
               round(sb_talk / 1000)) \
           FROM p WHERE sb IS NOT NULL AND abs(talk - sb_talk) > $4 \
           UNION ALL \
           SELECT 'missing_in_cdrs', 0, c.call_id, \
             to_char(c.offered_at AT TIME ZONE $2, 'YYYY-MM-DD'), 'no cdr' \
           ",
        span!(),
        " AND m.sb IS NULL) \
         SELECT kind, line, call_id, day, detail, count(*) OVER () AS total FROM x \
         ORDER BY line = 0, line, call_id, kind LIMIT $5"
    ))
    .bind(gateway_id)
    .bind(time_zone)
    .bind(f64::from(tolerance_s))
    .bind(tolerance_ms as f64)
    .bind(LISTED)
    .fetch_all(conn)
    .await?;
    let total = match rows.first() {
        Some(row) => row.try_get("total")?,
        None => 0,
    };
    let mut listed = Vec::with_capacity(rows.len());
    for row in rows {
        let kind: String = row.try_get("kind")?;
        let Some(kind) = Kind::parse(&kind) else {
            continue;
        };
        listed.push(Discrepancy {
            kind,
            line: row.try_get("line")?,
            call_id: row.try_get("call_id")?,
            day: row.try_get("day")?,
            detail: row.try_get("detail")?,
        });
    }
    Ok((listed, total))
}

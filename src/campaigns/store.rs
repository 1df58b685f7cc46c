//! PostgreSQL access for campaigns, their members, leases and attempts.

use chrono::{DateTime, Duration, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::ids::CustomerId;

use super::rules::AfterOutcome;
use super::{
    AttemptPolicy, CallingWindow, Campaign, CampaignError, CampaignFields, CampaignStats,
    CampaignStatus, Channel, Lease, MemberState, Offer, Outcome, SegmentFilter,
};

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    name: String,
    channel: String,
    status: String,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    offer_text: String,
    dialed_numbers: Vec<String>,
    max_attempts: i32,
    retry_after_seconds: i64,
    lease_seconds: i64,
    window_start: i32,
    window_end: i32,
    default_time_zone: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
}

impl From<Row> for Campaign {
    fn from(r: Row) -> Self {
        Campaign {
            id: r.id,
            fields: CampaignFields {
                name: r.name,
                // CHECK constraints admit only known values.
                channel: Channel::parse(&r.channel).unwrap_or(Channel::OutboundCall),
                status: CampaignStatus::parse(&r.status).unwrap_or(CampaignStatus::Draft),
                starts_at: r.starts_at,
                ends_at: r.ends_at,
                offer_text: r.offer_text,
                dialed_numbers: r.dialed_numbers,
                policy: AttemptPolicy {
                    max_attempts: r.max_attempts,
                    retry_after: Duration::seconds(r.retry_after_seconds),
                },
                lease: Duration::seconds(r.lease_seconds),
                window: CallingWindow {
                    start_minute: r.window_start,
                    end_minute: r.window_end,
                },
                default_time_zone: r.default_time_zone,
            },
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: r.version,
        }
    }
}

macro_rules! select {
    ($rest:literal) => {
        concat!(
            "SELECT id, name, channel, status, starts_at, ends_at, offer_text, dialed_numbers, max_attempts, ",
            "retry_after_seconds, lease_seconds, window_start, window_end, default_time_zone, created_at, ",
            "updated_at, version FROM campaigns ",
            $rest
        )
    };
}

/// One campaign by a single-parameter `WHERE` (a `select!` literal).
async fn one<T>(
    conn: &mut PgConnection,
    sql: &'static str,
    key: T,
) -> sqlx::Result<Option<Campaign>>
where
    T: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send,
{
    let row: Option<Row> = sqlx::query_as(sql).bind(key).fetch_optional(conn).await?;
    Ok(row.map(Campaign::from))
}

pub async fn find_by_request_id(
    conn: &mut PgConnection,
    request_id: &str,
) -> sqlx::Result<Option<Campaign>> {
    one(
        conn,
        select!("WHERE request_id = $1"),
        request_id.to_owned(),
    )
    .await
}

pub async fn load(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Campaign>> {
    one(conn, select!("WHERE id = $1"), id).await
}

pub async fn load_for_update(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Campaign>> {
    one(conn, select!("WHERE id = $1 FOR UPDATE"), id).await
}

/// Holds off a concurrent completion while members are added.
pub async fn load_for_share(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Campaign>> {
    one(conn, select!("WHERE id = $1 FOR SHARE"), id).await
}

/// A checked statement with `leading` arguments, then the 13 client-set columns of `f`, from `name`
/// to `default_time_zone` in table order.
macro_rules! with_fields {
    ($sql:literal, [$($leading:expr),*], $f:expr) => {
        sqlx::query!(
            $sql,
            $($leading,)*
            &$f.name,
            $f.channel.as_str(),
            $f.status.as_str(),
            $f.starts_at,
            $f.ends_at,
            &$f.offer_text,
            &$f.dialed_numbers,
            $f.policy.max_attempts,
            $f.policy.retry_after.num_seconds(),
            $f.lease.num_seconds(),
            $f.window.start_minute,
            $f.window.end_minute,
            &$f.default_time_zone
        )
    };
}

/// Inserts unless the request id is taken (a concurrent retry); returns whether it inserted.
pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    request_id: &str,
    f: &CampaignFields,
) -> sqlx::Result<bool> {
    let inserted = with_fields!(
        "INSERT INTO campaigns (id, request_id, name, channel, status, starts_at, ends_at, offer_text, \
           dialed_numbers, max_attempts, retry_after_seconds, lease_seconds, window_start, window_end, \
           default_time_zone) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
         ON CONFLICT (request_id) DO NOTHING",
        [id, request_id],
        f
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Writes a changed campaign, bumping its version. (The channel is not updatable; it is written
/// back unchanged.)
pub async fn save(conn: &mut PgConnection, c: &Campaign) -> sqlx::Result<()> {
    let f = &c.fields;
    with_fields!(
        "UPDATE campaigns SET name = $2, channel = $3, status = $4, starts_at = $5, ends_at = $6, \
           offer_text = $7, dialed_numbers = $8, max_attempts = $9, retry_after_seconds = $10, \
           lease_seconds = $11, window_start = $12, window_end = $13, default_time_zone = $14, \
           updated_at = now(), version = version + 1 \
         WHERE id = $1",
        [c.id],
        f
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes ownership of dialed numbers; a number owned by another campaign is `NumberTaken` (a
/// concurrent claim of the same number waits for the other transaction, then sees it taken).
pub async fn claim_numbers(
    conn: &mut PgConnection,
    campaign_id: Uuid,
    numbers: &[String],
) -> Result<(), CampaignError> {
    if numbers.is_empty() {
        return Ok(());
    }
    let claimed: Vec<String> = sqlx::query_scalar!(
        "INSERT INTO campaign_numbers (number, campaign_id) SELECT n, $2 FROM unnest($1::text[]) n \
         ON CONFLICT (number) DO NOTHING RETURNING number",
        numbers,
        campaign_id
    )
    .fetch_all(conn)
    .await?;
    match numbers.iter().find(|n| !claimed.contains(n)) {
        Some(taken) => Err(CampaignError::NumberTaken(taken.clone())),
        None => Ok(()),
    }
}

pub async fn release_numbers(conn: &mut PgConnection, campaign_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM campaign_numbers WHERE campaign_id = $1",
        campaign_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn list(
    conn: &mut PgConnection,
    status: Option<CampaignStatus>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<Campaign>> {
    let (after_at, after_id) = after.unzip();
    let rows: Vec<Row> = sqlx::query_as(select!(
        "WHERE ($1::text IS NULL OR status = $1) \
           AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3)) \
         ORDER BY created_at DESC, id DESC LIMIT $4"
    ))
    .bind(status.map(CampaignStatus::as_str))
    .bind(after_at)
    .bind(after_id)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Campaign::from).collect())
}

pub async fn stats(
    conn: &mut PgConnection,
    campaign: &Campaign,
    now: DateTime<Utc>,
) -> sqlx::Result<CampaignStats> {
    let tally = sqlx::query!(
        "SELECT count(*) AS \"members!\", \
                count(*) FILTER (WHERE state = 'pending' OR (state = 'leased' AND lease_expires_at <= $2)) \
                  AS \"pending!\", \
                count(*) FILTER (WHERE state = 'leased' AND lease_expires_at > $2) AS \"leased!\", \
                count(*) FILTER (WHERE state = 'done') AS \"done!\" \
         FROM campaign_members WHERE campaign_id = $1",
        campaign.id,
        now
    )
    .fetch_one(&mut *conn)
    .await?;
    let (members, pending, leased, done) = (tally.members, tally.pending, tally.leased, tally.done);
    let counts: Vec<(String, i64)> = sqlx::query!(
        "SELECT outcome, count(*) AS \"n!\" FROM campaign_attempts WHERE campaign_id = $1 \
         GROUP BY outcome ORDER BY outcome",
        campaign.id
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|row| (row.outcome, row.n))
    .collect();
    let reached_members: i64 = sqlx::query_scalar!(
        "SELECT count(DISTINCT customer_id) AS \"n!\" FROM campaign_attempts \
         WHERE campaign_id = $1 AND outcome IN ('reached', 'converted', 'declined')",
        campaign.id
    )
    .fetch_one(&mut *conn)
    .await?;
    let inbound_calls: i64 = sqlx::query_scalar!(
        "SELECT count(*) AS \"n!\" FROM calls WHERE dialed_number = ANY($1) \
           AND offered_at >= $2 AND offered_at < $3",
        &campaign.fields.dialed_numbers,
        campaign.fields.starts_at,
        campaign.fields.ends_at
    )
    .fetch_one(&mut *conn)
    .await?;
    let outcomes: Vec<(Outcome, i64)> = counts
        .into_iter()
        .filter_map(|(outcome, n)| Some((Outcome::parse(&outcome)?, n)))
        .collect();
    let attempts = outcomes.iter().map(|(_, n)| n).sum();
    let conversions = outcomes
        .iter()
        .filter(|(o, _)| *o == Outcome::Converted)
        .map(|(_, n)| n)
        .sum();
    Ok(CampaignStats {
        members,
        pending,
        leased,
        done,
        outcomes,
        attempts,
        conversions,
        conversion_rate: if reached_members == 0 {
            0.0
        } else {
            conversions as f64 / reached_members as f64
        },
        inbound_calls,
    })
}

/// The first of `ids` that is not a live customer, if any.
pub async fn first_missing_customer(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        "SELECT i AS \"i!\" FROM unnest($1::uuid[]) WITH ORDINALITY AS t(i, n) \
         WHERE NOT EXISTS (SELECT 1 FROM customers c WHERE c.id = t.i AND c.deleted_at IS NULL \
                             AND c.erased_at IS NULL) \
         ORDER BY n LIMIT 1",
        ids
    )
    .fetch_optional(conn)
    .await
}

/// Adds the customers not yet on the list; returns how many were asked for (distinct) and the
/// ids added.
pub async fn add_ids(
    conn: &mut PgConnection,
    campaign_id: Uuid,
    ids: &[Uuid],
) -> sqlx::Result<(i64, Vec<Uuid>)> {
    let mut distinct = ids.to_vec();
    distinct.sort();
    distinct.dedup();
    // Insertion in the order given, so the list is called in that order.
    let added: Vec<Uuid> = sqlx::query_scalar!(
        "INSERT INTO campaign_members (campaign_id, customer_id) \
         SELECT $1, i FROM (SELECT DISTINCT ON (i) i, n FROM unnest($2::uuid[]) WITH ORDINALITY AS t(i, n) \
                            ORDER BY i, n) d ORDER BY n \
         ON CONFLICT (campaign_id, customer_id) DO NOTHING RETURNING customer_id",
        campaign_id,
        ids
    )
    .fetch_all(conn)
    .await?;
    Ok((distinct.len() as i64, added))
}

/// Adds every live customer matching the filter; returns how many matched and the ids added.
pub async fn add_segment(
    conn: &mut PgConnection,
    campaign_id: Uuid,
    f: &SegmentFilter,
) -> sqlx::Result<(i64, Vec<Uuid>)> {
    let (matched, added): (i64, Option<Vec<Uuid>>) = sqlx::query_as(
        "WITH matched AS ( \
           SELECT c.id FROM customers c \
           LEFT JOIN LATERAL ( \
             SELECT GREATEST((SELECT max(i.started_at) FROM interactions i WHERE i.customer_id = c.id), \
                             (SELECT k.ended_at FROM customer_last_calls k WHERE k.customer_id = c.id)) AS at \
           ) last_contact ON true \
           WHERE c.deleted_at IS NULL AND c.erased_at IS NULL \
             AND (cardinality($2::text[]) = 0 OR c.tier = ANY($2)) \
             AND (cardinality($3::text[]) = 0 OR c.segment = ANY($3)) \
             AND (cardinality($4::text[]) = 0 OR c.preferred_language = ANY($4)) \
             AND ($6::bigint IS NULL OR COALESCE((SELECT v.lifetime_minor FROM customer_values v \
                    WHERE v.customer_id = c.id AND v.currency = $5), 0) >= $6) \
             AND ($7::bigint IS NULL OR COALESCE((SELECT v.lifetime_minor FROM customer_values v \
                    WHERE v.customer_id = c.id AND v.currency = $5), 0) <= $7) \
             AND ($8::timestamptz IS NULL OR last_contact.at IS NULL OR last_contact.at < $8) \
             AND ($9::timestamptz IS NULL OR last_contact.at >= $9) \
             AND ($10::boolean IS NULL OR EXISTS (SELECT 1 FROM cases k WHERE k.customer_id = c.id \
                    AND k.status IN ('new', 'open', 'pending')) = $10) \
         ), added AS ( \
           INSERT INTO campaign_members (campaign_id, customer_id) \
           SELECT $1, id FROM matched ORDER BY id \
           ON CONFLICT (campaign_id, customer_id) DO NOTHING RETURNING customer_id \
         ) \
         SELECT (SELECT count(*) FROM matched), (SELECT array_agg(customer_id) FROM added)",
    )
    .bind(campaign_id)
    .bind(&f.tiers)
    .bind(&f.segments)
    .bind(&f.languages)
    .bind(&f.currency)
    .bind(f.min_lifetime_value_minor)
    .bind(f.max_lifetime_value_minor)
    .bind(f.last_contact_before)
    .bind(f.last_contact_after)
    .bind(f.has_open_case)
    .fetch_one(conn)
    .await?;
    Ok((matched, added.unwrap_or_default()))
}

/// Customers still on the list (not done), whose pops show the campaign's offer.
pub async fn open_member_ids(
    conn: &mut PgConnection,
    campaign_id: Uuid,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        "SELECT customer_id FROM campaign_members WHERE campaign_id = $1 AND state <> 'done'",
        campaign_id
    )
    .fetch_all(conn)
    .await
}

#[derive(sqlx::FromRow)]
struct LeaseRow {
    customer_id: Uuid,
    display_name: String,
    time_zone: String,
    attempts: i32,
    callback_at: Option<DateTime<Utc>>,
    lease_expires_at: DateTime<Utc>,
    phone: Option<String>,
}

/// Leases the next callable member in one statement: due callbacks first, then list order.
/// `FOR UPDATE SKIP LOCKED` lets concurrent agents pass over the rows others are taking.
pub async fn lease_next(
    conn: &mut PgConnection,
    campaign: &Campaign,
    agent_id: &str,
    open_zones: &[&str],
    now: DateTime<Utc>,
) -> sqlx::Result<Option<Lease>> {
    for callbacks_only in [true, false] {
        let lease_id = Uuid::new_v4();
        let row = sqlx::query_as!(
        LeaseRow,
        "WITH next AS ( \
               SELECT m.campaign_id, m.customer_id FROM campaign_members m \
               JOIN customers c ON c.id = m.customer_id \
               WHERE m.campaign_id = $1 \
                 AND (m.state = 'pending' OR (m.state = 'leased' AND m.lease_expires_at <= $4)) \
                 AND m.attempts < $5 \
                 AND (m.next_attempt_at IS NULL OR m.next_attempt_at <= $4) \
                 AND (NOT $8 OR m.callback_at IS NOT NULL) \
                 AND NOT c.do_not_call AND c.marketing_consent \
                 AND c.deleted_at IS NULL AND c.erased_at IS NULL \
                 AND COALESCE(NULLIF(c.time_zone, ''), $6) = ANY($7::text[]) \
                 AND EXISTS (SELECT 1 FROM contact_points p WHERE p.customer_id = c.id AND p.kind = 'phone') \
               ORDER BY m.seq LIMIT 1 \
               FOR UPDATE OF m SKIP LOCKED \
             ), leased AS ( \
               UPDATE campaign_members m SET state = 'leased', lease_id = $2, leased_by = $3, \
                 lease_expires_at = $4 + make_interval(secs => $9), updated_at = $4 \
               FROM next WHERE m.campaign_id = next.campaign_id AND m.customer_id = next.customer_id \
               RETURNING m.customer_id, m.attempts, m.callback_at, m.lease_expires_at \
             ), recorded AS ( \
               INSERT INTO campaign_leases (lease_id, campaign_id, customer_id, agent_id, leased_at, expires_at) \
               SELECT $2, $1, customer_id, $3, $4, lease_expires_at FROM leased \
             ) \
             SELECT l.customer_id AS \"customer_id!\", c.display_name, c.time_zone, \
                    l.attempts AS \"attempts!\", l.callback_at, l.lease_expires_at AS \"lease_expires_at!\", \
                    (SELECT p.value FROM contact_points p WHERE p.customer_id = l.customer_id AND p.kind = 'phone' \
                     ORDER BY p.is_primary DESC, p.seq LIMIT 1) AS phone \
             FROM leased l JOIN customers c ON c.id = l.customer_id",
        campaign.id,
        lease_id,
        agent_id,
        now,
        campaign.fields.policy.max_attempts,
        &campaign.fields.default_time_zone,
        &open_zones
            .iter()
            .map(|zone| (*zone).to_owned())
            .collect::<Vec<String>>(),
        callbacks_only,
        campaign.fields.lease.num_seconds() as f64
    )
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(row) = row {
            return Ok(Some(Lease {
                lease_id,
                customer_id: row.customer_id,
                display_name: row.display_name,
                phone_number: row.phone.unwrap_or_default(),
                time_zone: row.time_zone,
                attempts: row.attempts,
                expires_at: row.lease_expires_at,
                callback_at: row.callback_at,
                offer_text: campaign.fields.offer_text.clone(),
            }));
        }
    }
    Ok(None)
}

/// When the next member held back by spacing, a callback time or a lease becomes callable.
pub async fn earliest_retry(
    conn: &mut PgConnection,
    campaign_id: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar!(
        "SELECT min(CASE WHEN state = 'leased' AND lease_expires_at > $2 \
                         THEN GREATEST(lease_expires_at, COALESCE(next_attempt_at, lease_expires_at)) \
                         ELSE next_attempt_at END) \
         FROM campaign_members WHERE campaign_id = $1 AND state <> 'done' \
           AND ((state = 'leased' AND lease_expires_at > $2) OR next_attempt_at > $2)",
        campaign_id,
        now
    )
    .fetch_one(conn)
    .await
}

pub struct LeaseRecord {
    pub lease_id: Uuid,
    pub campaign_id: Uuid,
    pub customer_id: Uuid,
    pub agent_id: String,
}

pub async fn load_lease(
    conn: &mut PgConnection,
    lease_id: Uuid,
) -> sqlx::Result<Option<LeaseRecord>> {
    let row = sqlx::query!(
        "SELECT campaign_id, customer_id, agent_id FROM campaign_leases WHERE lease_id = $1",
        lease_id
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| LeaseRecord {
        lease_id,
        campaign_id: row.campaign_id,
        customer_id: row.customer_id,
        agent_id: row.agent_id,
    }))
}

/// The outcome already recorded for a lease, and what it did.
pub async fn recorded_attempt(
    conn: &mut PgConnection,
    lease_id: Uuid,
) -> sqlx::Result<Option<(Outcome, AfterOutcome)>> {
    let row = sqlx::query!(
        "SELECT outcome, member_state, attempts, next_attempt_at FROM campaign_attempts WHERE lease_id = $1",
        lease_id
    )
    .fetch_optional(conn)
    .await?
    .map(|row| (row.outcome, row.member_state, row.attempts, row.next_attempt_at));
    Ok(row.and_then(|(outcome, state, attempts, next_attempt_at)| {
        Some((
            Outcome::parse(&outcome)?,
            AfterOutcome {
                state: MemberState::parse(&state)?,
                attempts,
                next_attempt_at,
            },
        ))
    }))
}

pub struct MemberRow {
    pub lease_id: Option<Uuid>,
    pub attempts: i32,
}

pub async fn lock_member(
    conn: &mut PgConnection,
    campaign_id: Uuid,
    customer_id: Uuid,
) -> sqlx::Result<MemberRow> {
    sqlx::query_as!(
        MemberRow,
        "SELECT lease_id, attempts FROM campaign_members \
         WHERE campaign_id = $1 AND customer_id = $2 FOR UPDATE",
        campaign_id,
        customer_id
    )
    .fetch_one(conn)
    .await
}

/// Writes the attempt and moves the member to its next state, ending the lease.
pub async fn finish_attempt(
    conn: &mut PgConnection,
    lease: &LeaseRecord,
    outcome: Outcome,
    callback_at: Option<DateTime<Utc>>,
    after: &AfterOutcome,
) -> sqlx::Result<()> {
    let callback_at = (outcome == Outcome::CallbackRequested)
        .then_some(callback_at)
        .flatten();
    sqlx::query!(
        "INSERT INTO campaign_attempts (lease_id, campaign_id, customer_id, agent_id, outcome, callback_at, \
           member_state, attempts, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        lease.lease_id,
        lease.campaign_id,
        lease.customer_id,
        &lease.agent_id,
        outcome.as_str(),
        callback_at,
        after.state.as_str(),
        after.attempts,
        after.next_attempt_at
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE campaign_members SET state = $3, attempts = $4, next_attempt_at = $5, callback_at = $6, \
           last_outcome = $7, lease_id = NULL, leased_by = NULL, lease_expires_at = NULL, updated_at = now() \
         WHERE campaign_id = $1 AND customer_id = $2",
        lease.campaign_id,
        lease.customer_id,
        after.state.as_str(),
        after.attempts,
        after.next_attempt_at,
        callback_at,
        outcome.as_str()
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct OfferRow {
    number: String,
    id: Uuid,
    name: String,
    offer_text: String,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
}

/// Dialed number -> offer of every running campaign.
pub async fn running_offers(pool: &PgPool) -> sqlx::Result<Vec<(String, Offer)>> {
    let rows = sqlx::query_as!(
        OfferRow,
        "SELECT n.number, c.id, c.name, c.offer_text, c.starts_at, c.ends_at \
         FROM campaign_numbers n JOIN campaigns c ON c.id = n.campaign_id \
         WHERE c.status = 'active' AND c.ends_at > now()"
    )
    .fetch_all(&mut *crate::db::acquire(pool).await?)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.number,
                Offer {
                    campaign_id: r.id,
                    name: r.name,
                    offer_text: r.offer_text,
                    starts_at: r.starts_at,
                    ends_at: r.ends_at,
                },
            )
        })
        .collect())
}

/// This context's rows per customer, as a merge moves them and an unmerge moves them back (the
/// keys are kept in merges' lineage: never change their form).
pub const CUSTOMER_ROWS: &[crate::customer_rows::CustomerRows] = &[
    crate::customer_rows::CustomerRows {
        shared: Some(crate::customer_rows::SharedRows {
            lineage_key: "dropped_memberships",
            drop: |conn, from, to| Box::pin(drop_shared_memberships(conn, from, to)),
            put_back: |conn, rows| Box::pin(restore_memberships(conn, rows)),
        }),
        ..crate::customer_rows::customer_rows!(
            "campaign_members",
            reassign: "UPDATE campaign_members SET customer_id = $1 WHERE customer_id = $2 \
                       RETURNING campaign_id::text AS \"key!\"",
            restore: "UPDATE campaign_members SET customer_id = $2 WHERE customer_id = $1 \
                      AND campaign_id::text = ANY($3)",
        )
    },
    crate::customer_rows::customer_rows!(
        "campaign_leases",
        reassign: "UPDATE campaign_leases SET customer_id = $1 WHERE customer_id = $2 \
                   RETURNING lease_id::text AS \"key!\"",
        restore: "UPDATE campaign_leases SET customer_id = $2 WHERE customer_id = $1 \
                  AND lease_id::text = ANY($3)",
    ),
    crate::customer_rows::customer_rows!(
        "campaign_attempts",
        reassign: "UPDATE campaign_attempts SET customer_id = $1 WHERE customer_id = $2 \
                   RETURNING lease_id::text AS \"key!\"",
        restore: "UPDATE campaign_attempts SET customer_id = $2 WHERE customer_id = $1 \
                  AND lease_id::text = ANY($3)",
    ),
];

/// Deletes `from`'s memberships of campaigns `to` is on; returns them whole.
async fn drop_shared_memberships(
    conn: &mut PgConnection,
    from: CustomerId,
    to: CustomerId,
) -> sqlx::Result<Vec<serde_json::Value>> {
    sqlx::query_scalar!(
        "DELETE FROM campaign_members d WHERE d.customer_id = $2 AND EXISTS ( \
           SELECT 1 FROM campaign_members s WHERE s.customer_id = $1 AND s.campaign_id = d.campaign_id) \
         RETURNING to_jsonb(d) AS \"row!\"",
        to.as_uuid(),
        from.as_uuid()
    )
    .fetch_all(conn)
    .await
}

async fn restore_memberships(
    conn: &mut PgConnection,
    rows: &[serde_json::Value],
) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "INSERT INTO campaign_members OVERRIDING SYSTEM VALUE \
         SELECT * FROM jsonb_populate_recordset(NULL::campaign_members, $1)",
        serde_json::Value::Array(rows.to_vec())
    )
    .execute(conn)
    .await?;
    Ok(())
}

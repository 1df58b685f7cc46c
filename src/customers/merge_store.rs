//! PostgreSQL access for merging and unmerging customers.
//!
//! The customer record's own tables. Every other table holding customer rows is moved by its
//! owning context's store (see [`crate::customer_rows`]); a table added later that holds
//! `customer_id` must be in some context's `CUSTOMER_ROWS` or in [`NOT_MOVED`], or the
//! `every_customer_table_is_merged_or_left_on_purpose` test fails.

use sqlx::PgConnection;
use uuid::Uuid;

/// The customer record's own rows per customer that a merge moves: the other contexts' tables
/// are moved by their own stores (their `CUSTOMER_ROWS`), composed in `app::wiring`.
pub const CUSTOMER_ROWS: &[crate::customer_rows::CustomerRows] = &[
    crate::customer_rows::customer_rows!(
        "contact_points",
        reassign: "UPDATE contact_points SET customer_id = $1 WHERE customer_id = $2 \
                   RETURNING id::text AS \"key!\"",
        restore: "UPDATE contact_points SET customer_id = $2 WHERE customer_id = $1 \
                  AND id::text = ANY($3)",
    ),
    crate::customer_rows::customer_rows!(
        "external_references",
        reassign: "UPDATE external_references SET customer_id = $1 WHERE customer_id = $2 \
                   RETURNING json_build_array(system, external_id)::text AS \"key!\"",
        restore: "UPDATE external_references SET customer_id = $2 WHERE customer_id = $1 \
                  AND json_build_array(system, external_id)::text = ANY($3)",
    ),
];

/// Tables whose `customer_id` is deliberately not moved: derived data rebuilt after a merge
/// (`customer_values`), history that records what happened to whom (`audit_events`, and the
/// event feed, where `customer.merged` tells consumers), the merge lineage itself, and the notes
/// of call chains to restamp (moving calls notes both customers), and the stored screen-pop
/// cards (`customer_cards`: each is derived from its own customer's rows, and moving those rows
/// marks both cards to be rebuilt), and the customers' latest call ends (`customer_last_calls`:
/// moving calls raises the survivor's and recounts the duplicate's, in the triggers on `calls`).
pub const NOT_MOVED: &[&str] = &[
    "customer_values",
    "customer_cards",
    "customer_last_calls",
    "audit_events",
    "feed_events",
    "customer_merges",
    "contact_chains_dirty",
];

/// Deletes the duplicate's contact points the survivor already has; returns them whole.
pub async fn drop_shared_contact_points(
    conn: &mut PgConnection,
    survivor: Uuid,
    duplicate: Uuid,
) -> sqlx::Result<Vec<serde_json::Value>> {
    sqlx::query_scalar!(
        "DELETE FROM contact_points d WHERE d.customer_id = $2 AND EXISTS ( \
           SELECT 1 FROM contact_points s WHERE s.customer_id = $1 AND s.kind = d.kind \
             AND s.value = d.value AND s.extension = d.extension) \
         RETURNING to_jsonb(d) AS \"row!\"",
        survivor,
        duplicate
    )
    .fetch_all(conn)
    .await
}

/// Clears the duplicate's primary flags where the survivor has a primary of the same kind.
pub async fn demote_primaries(
    conn: &mut PgConnection,
    survivor: Uuid,
    duplicate: Uuid,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        "UPDATE contact_points d SET is_primary = false WHERE d.customer_id = $2 AND d.is_primary \
           AND EXISTS (SELECT 1 FROM contact_points s WHERE s.customer_id = $1 AND s.kind = d.kind \
                       AND s.is_primary) \
         RETURNING d.id",
        survivor,
        duplicate
    )
    .fetch_all(conn)
    .await
}

pub async fn promote(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE contact_points SET is_primary = true WHERE id = ANY($1)",
        ids
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn restore_contact_points(
    conn: &mut PgConnection,
    rows: &[serde_json::Value],
) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "INSERT INTO contact_points OVERRIDING SYSTEM VALUE \
         SELECT * FROM jsonb_populate_recordset(NULL::contact_points, $1)",
        serde_json::Value::Array(rows.to_vec())
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Locks both customers (in id order, so two merges cannot deadlock); returns which are live.
pub async fn lock_pair(conn: &mut PgConnection, a: Uuid, b: Uuid) -> sqlx::Result<Vec<Uuid>> {
    let pair = [a, b];
    sqlx::query_scalar!(
        "SELECT id FROM customers WHERE id = ANY($1) AND deleted_at IS NULL AND erased_at IS NULL \
         ORDER BY id FOR UPDATE",
        pair.as_slice()
    )
    .fetch_all(conn)
    .await
}

pub async fn tombstone(
    conn: &mut PgConnection,
    duplicate: Uuid,
    survivor: Uuid,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE customers SET merged_into = $2, deleted_at = now(), updated_at = now(), \
           version = version + 1 WHERE id = $1",
        duplicate,
        survivor
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn revive(conn: &mut PgConnection, duplicate: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE customers SET merged_into = NULL, deleted_at = NULL, updated_at = now(), \
           version = version + 1 WHERE id = $1",
        duplicate
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn insert_merge(
    conn: &mut PgConnection,
    id: Uuid,
    survivor: Uuid,
    duplicate: Uuid,
    lineage: &serde_json::Value,
    merged_by: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO customer_merges (id, survivor_id, duplicate_id, lineage, merged_by) \
         VALUES ($1, $2, $3, $4, $5)",
        id,
        survivor,
        duplicate,
        lineage,
        merged_by
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The merge in force whose duplicate is `duplicate`, locked: (merge id, survivor, lineage).
pub async fn merge_in_force(
    conn: &mut PgConnection,
    duplicate: Uuid,
) -> sqlx::Result<Option<(Uuid, Uuid, serde_json::Value)>> {
    Ok(sqlx::query!(
        "SELECT id, survivor_id, lineage FROM customer_merges \
         WHERE duplicate_id = $1 AND unmerged_at IS NULL FOR UPDATE",
        duplicate
    )
    .fetch_optional(conn)
    .await?
    .map(|r| (r.id, r.survivor_id, r.lineage)))
}

pub async fn mark_unmerged(conn: &mut PgConnection, merge_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE customer_merges SET unmerged_at = now() WHERE id = $1",
        merge_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Where a tombstone points.
pub async fn merged_into(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Uuid>> {
    Ok(
        sqlx::query_scalar!("SELECT merged_into FROM customers WHERE id = $1", id)
            .fetch_optional(conn)
            .await?
            .flatten(),
    )
}

/// Live customers sharing a phone number or email with `id`, its name (case-insensitive), or a
/// similar name (the same last word and first letter: "A. Lovelace", "Ada Lovelace"):
/// (customer id, reasons). The similar-name test reads every customer row (about 0.3 s per
/// million); phone, email and exact name use indexes.
pub async fn duplicates_of(
    conn: &mut PgConnection,
    id: Uuid,
    limit: i64,
) -> sqlx::Result<Vec<(Uuid, Vec<String>)>> {
    Ok(sqlx::query!(
        "WITH candidates AS ( \
           SELECT o.customer_id AS id, 'same ' || o.kind AS reason \
           FROM contact_points mine JOIN contact_points o ON o.kind = mine.kind AND o.value = mine.value \
           WHERE mine.customer_id = $1 AND o.customer_id <> $1 \
           UNION \
           SELECT c.id, 'same name' FROM customers me JOIN customers c \
             ON lower(c.display_name) COLLATE \"C\" = lower(me.display_name) COLLATE \"C\" \
           WHERE me.id = $1 AND c.id <> $1 AND c.deleted_at IS NULL \
           UNION \
           SELECT c.id, 'similar name' FROM customers me JOIN customers c \
             ON split_part(lower(c.display_name), ' ', -1) = split_part(lower(me.display_name), ' ', -1) \
            AND left(lower(c.display_name), 1) = left(lower(me.display_name), 1) \
            AND lower(c.display_name) <> lower(me.display_name) \
           WHERE me.id = $1 AND c.id <> $1 AND c.deleted_at IS NULL \
         ) \
         SELECT k.id AS \"id!\", array_agg(DISTINCT k.reason ORDER BY k.reason) AS \"reasons!\" \
         FROM candidates k \
         JOIN customers c ON c.id = k.id AND c.deleted_at IS NULL AND c.erased_at IS NULL \
         GROUP BY k.id ORDER BY count(*) DESC, k.id LIMIT $2",
        id,
        limit
    )
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(|row| (row.id, row.reasons))
    .collect())
}

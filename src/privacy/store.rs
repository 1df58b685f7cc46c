//! The statements `switchboard retention remask` runs over every stored free-text column of every
//! context: a maintenance command that walks other contexts' tables by design, in one place. They
//! stay checked at run time: each is assembled per column.

use sqlx::PgConnection;

/// How a column holds its text.
#[derive(Clone, Copy)]
pub enum Kind {
    Text,
    /// A JSON document whose keys and string values are all masked.
    Json,
}

pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
    /// `$1`: the last ctid read; `$2`: the batch size. Rows: (ctid as text, the column as text).
    pub(super) select: &'static str,
    /// `$1`: the ctid; `$2`: the masked text; `$3`: the text as read.
    pub(super) update: &'static str,
}

macro_rules! column {
    ($table:literal, $column:literal, $kind:ident, $cast:literal) => {
        Column {
            name: concat!($table, ".", $column),
            kind: Kind::$kind,
            select: concat!(
                "SELECT ctid::text, ",
                $column,
                "::text FROM ",
                $table,
                " WHERE ctid > $1::tid AND ",
                $column,
                "::text ~ '[0-9]' ORDER BY ctid LIMIT $2"
            ),
            update: concat!(
                "UPDATE ",
                $table,
                " SET ",
                $column,
                " = $2::",
                $cast,
                " WHERE ctid = $1::tid AND ",
                $column,
                "::text = $3"
            ),
        }
    };
    ($table:literal, $column:literal) => {
        column!($table, $column, Text, "text")
    };
}

/// Every stored column that holds free text (the storage side of `card_data::MASKED`).
pub const COLUMNS: &[Column] = &[
    column!("agent_state_changes", "reason"),
    column!("agents", "reason"),
    column!("agents", "display_name"),
    column!("call_events", "attached_data", Json, "jsonb"),
    column!("campaigns", "name"),
    column!("campaigns", "offer_text"),
    column!("case_comments", "text"),
    column!("case_history", "\"from\""),
    column!("case_history", "\"to\""),
    column!("cases", "subject"),
    column!("cases", "description"),
    column!("contact_points", "label"),
    column!("customers", "display_name"),
    column!("customers", "company"),
    column!("dispositions", "label"),
    column!("feedback", "text"),
    column!("feedback", "resolution"),
    column!("feedback_history", "from_value"),
    column!("feedback_history", "to_value"),
    column!("interactions", "notes"),
    column!("interactions", "outcome"),
    column!("service_events", "description"),
];

/// Up to `batch` rows of `column` after the ctid `after` that hold a digit: (ctid, text).
pub async fn texts_after(
    conn: &mut PgConnection,
    column: &Column,
    after: &str,
    batch: i64,
) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as(column.select)
        .bind(after)
        .bind(batch)
        .fetch_all(conn)
        .await
}

/// Writes `masked` into the row at `ctid` if it still holds `text`; returns the rows changed.
pub async fn replace_text(
    conn: &mut PgConnection,
    column: &Column,
    ctid: &str,
    masked: &str,
    text: &str,
) -> sqlx::Result<u64> {
    Ok(sqlx::query(column.update)
        .bind(ctid)
        .bind(masked)
        .bind(text)
        .execute(conn)
        .await?
        .rows_affected())
}

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
    table: &'static str,
    column: &'static str,
    cast: &'static str,
}

impl Column {
    /// `$1`: the last ctid read; `$2`: the batch size. Rows: (ctid as text, the column as text),
    /// in ctid order: the output is not named `ctid`, or `ORDER BY ctid` would sort its text,
    /// where "(10,1)" comes before "(2,1)".
    /// `relation` is the table, or one partition of it: a ctid names a row within one relation.
    /// `relation` comes from the catalog ([`relations`]), quoted; the names are this file's own.
    pub(super) fn select(&self, relation: &str) -> String {
        format!(
            "SELECT ctid::text AS place, {column}::text FROM {relation} \
             WHERE ctid > $1::tid AND {column}::text ~ '[0-9]' ORDER BY ctid LIMIT $2",
            column = self.column
        )
    }

    /// `$1`: the ctid; `$2`: the masked text; `$3`: the text as read.
    pub(super) fn update(&self, relation: &str) -> String {
        format!(
            "UPDATE {relation} SET {column} = $2::{cast} WHERE ctid = $1::tid AND {column}::text = $3",
            column = self.column,
            cast = self.cast
        )
    }
}

macro_rules! column {
    ($table:literal, $column:literal, $kind:ident, $cast:literal) => {
        Column {
            name: concat!($table, ".", $column),
            kind: Kind::$kind,
            table: $table,
            column: $column,
            cast: $cast,
        }
    };
    ($table:literal, $column:literal) => {
        column!($table, $column, Text, "text")
    };
}

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

/// The relations that hold `column`'s rows: its table, or each partition of a partitioned one
/// (a ctid is a row's place within one relation, so each is walked on its own).
pub async fn relations(conn: &mut PgConnection, column: &Column) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT quote_ident(c.relname::text) FROM pg_class c \
         WHERE c.relkind = 'r' AND (c.oid = to_regclass($1) OR c.oid IN ( \
           SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass($1))) \
         ORDER BY c.relname",
    )
    .bind(column.table)
    .fetch_all(conn)
    .await
}

/// Up to `batch` rows of `column` in `relation` after the ctid `after` that hold a digit:
/// (ctid, text).
pub async fn texts_after(
    conn: &mut PgConnection,
    column: &Column,
    relation: &str,
    after: &str,
    batch: i64,
) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as(sqlx::AssertSqlSafe(column.select(relation)))
        .bind(after)
        .bind(batch)
        .fetch_all(conn)
        .await
}

/// Writes `masked` into the row of `relation` at `ctid` if it still holds `text`; returns the
/// rows changed.
pub async fn replace_text(
    conn: &mut PgConnection,
    column: &Column,
    relation: &str,
    ctid: &str,
    masked: &str,
    text: &str,
) -> sqlx::Result<u64> {
    Ok(sqlx::query(sqlx::AssertSqlSafe(column.update(relation)))
        .bind(ctid)
        .bind(masked)
        .bind(text)
        .execute(conn)
        .await?
        .rows_affected())
}

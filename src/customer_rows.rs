//! The port through which a customer merge moves the rows other contexts own. A leaf, owned by
//! `customers`: it names no context.
//!
//! Each context that keeps rows per customer says, in its own store, how to move them from a
//! duplicate to the survivor and how to move exactly those rows back ([`CustomerRows`]). The
//! composition root hands the list to [`crate::customers::Customers`], which runs every entry in
//! the merge's transaction and records the keys it got back in the merge's lineage, under the
//! entry's table name. So no context writes another's table, and `customers` depends on none of
//! the contexts whose rows it moves.

use futures::future::BoxFuture;
use sqlx::PgConnection;

use crate::ids::CustomerId;

/// Moves every row of `from` to `to`; returns each moved row's key (stable text).
pub type Reassign = for<'c> fn(
    &'c mut PgConnection,
    CustomerId,
    CustomerId,
) -> BoxFuture<'c, sqlx::Result<Vec<String>>>;

/// Moves the rows with these keys from `from` back to `to`; returns how many moved.
pub type Restore = for<'c> fn(
    &'c mut PgConnection,
    CustomerId,
    CustomerId,
    &'c [String],
) -> BoxFuture<'c, sqlx::Result<u64>>;

/// Deletes `from`'s rows that `to` already has an equivalent of (a customer is on a campaign at
/// most once); returns them whole so that an unmerge can put them back.
pub type DropShared = for<'c> fn(
    &'c mut PgConnection,
    CustomerId,
    CustomerId,
) -> BoxFuture<'c, sqlx::Result<Vec<serde_json::Value>>>;

/// Puts rows returned by a [`DropShared`] back as they were.
pub type PutBack =
    for<'c> fn(&'c mut PgConnection, &'c [serde_json::Value]) -> BoxFuture<'c, sqlx::Result<()>>;

/// One table's rows per customer, as its owning context moves them.
#[derive(Clone, Copy)]
pub struct CustomerRows {
    /// The table: the lineage key of the moved rows, so it never changes.
    pub table: &'static str,
    pub reassign: Reassign,
    pub restore: Restore,
    /// For a table where the survivor may already hold the same row: drop the duplicate's first.
    pub shared: Option<SharedRows>,
}

/// How a table whose rows may clash between two customers drops and restores the clashing ones.
#[derive(Clone, Copy)]
pub struct SharedRows {
    /// The lineage field the dropped rows are kept in.
    pub lineage_key: &'static str,
    pub drop: DropShared,
    pub put_back: PutBack,
}

/// A [`CustomerRows`] for `$table` from two literal statements, checked at compile time:
/// `reassign` with `$1` the survivor and `$2` the duplicate, returning `key`; `restore` with `$1`
/// the survivor, `$2` the duplicate and `$3` the keys.
macro_rules! customer_rows {
    ($table:literal, reassign: $reassign:literal, restore: $restore:literal $(,)?) => {
        $crate::customer_rows::CustomerRows {
            table: $table,
            reassign: |conn, from, to| {
                Box::pin(async move {
                    sqlx::query_scalar!($reassign, to.as_uuid(), from.as_uuid())
                        .fetch_all(conn)
                        .await
                })
            },
            restore: |conn, from, to, keys| {
                Box::pin(async move {
                    Ok(sqlx::query!($restore, from.as_uuid(), to.as_uuid(), keys)
                        .execute(conn)
                        .await?
                        .rows_affected())
                })
            },
            shared: None,
        }
    };
}
pub(crate) use customer_rows;

//! PostgreSQL access for orders, lifetime values and service events.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    CustomerRef, Money, NewOrder, NewServiceEvent, Order, OrderStatus, ServiceEvent,
    ServiceEventKind,
};

/// The live customer a reference names.
pub async fn resolve_customer(
    conn: &mut PgConnection,
    customer: &CustomerRef,
) -> sqlx::Result<Option<Uuid>> {
    match customer {
        CustomerRef::Id(id) => {
            sqlx::query_scalar!(
                "SELECT id FROM customers WHERE id = $1 AND deleted_at IS NULL",
                id
            )
            .fetch_optional(conn)
            .await
        }
        CustomerRef::External(reference) => {
            sqlx::query_scalar!(
                "SELECT c.id FROM external_references r JOIN customers c ON c.id = r.customer_id \
                 WHERE r.system = $1 AND r.external_id = $2 AND c.deleted_at IS NULL",
                &reference.system,
                &reference.external_id
            )
            .fetch_optional(conn)
            .await
        }
    }
}

/// The customer an existing order belongs to, locked for the rest of the transaction.
pub async fn lock_order_owner(
    conn: &mut PgConnection,
    system: &str,
    order_id: &str,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        "SELECT customer_id FROM orders WHERE system = $1 AND order_id = $2 FOR UPDATE",
        system,
        order_id
    )
    .fetch_optional(conn)
    .await
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    system: String,
    order_id: String,
    customer_id: Uuid,
    amount_minor: i64,
    currency: String,
    status: String,
    ordered_at: DateTime<Utc>,
}

pub async fn upsert_order(
    conn: &mut PgConnection,
    customer_id: Uuid,
    new: &NewOrder,
) -> sqlx::Result<Order> {
    let row = sqlx::query_as!(
        OrderRow,
        "INSERT INTO orders (system, order_id, customer_id, amount_minor, currency, status, ordered_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (system, order_id) DO UPDATE SET customer_id = $3, amount_minor = $4, currency = $5, \
           status = $6, ordered_at = $7, updated_at = now() \
         RETURNING system, order_id, customer_id, amount_minor, currency, status, ordered_at",
        &new.system,
        &new.order_id,
        customer_id,
        new.amount.amount_minor,
        &new.amount.currency,
        new.status.as_str(),
        new.ordered_at
    )
    .fetch_one(conn)
    .await?;
    Ok(Order::from(row))
}

impl From<OrderRow> for Order {
    fn from(row: OrderRow) -> Self {
        Order {
            system: row.system,
            order_id: row.order_id,
            customer_id: row.customer_id,
            amount: Money {
                currency: row.currency,
                amount_minor: row.amount_minor,
            },
            // The CHECK constraint admits only known statuses.
            status: OrderStatus::parse(&row.status).unwrap_or(OrderStatus::Placed),
            ordered_at: row.ordered_at,
        }
    }
}

/// Rebuilds the customer's lifetime value from its orders (neither cancelled nor returned).
pub async fn recompute_value(conn: &mut PgConnection, customer_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM customer_values WHERE customer_id = $1",
        customer_id
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "INSERT INTO customer_values (customer_id, currency, lifetime_minor, orders, last_order_at) \
         SELECT customer_id, currency, sum(amount_minor), count(*), max(ordered_at) FROM orders \
         WHERE customer_id = $1 AND status NOT IN ('cancelled', 'returned') GROUP BY customer_id, currency",
        customer_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn lifetime_value(
    conn: &mut PgConnection,
    customer_id: Uuid,
) -> sqlx::Result<Vec<Money>> {
    let rows: Vec<(String, i64)> = sqlx::query!(
        "SELECT currency, lifetime_minor FROM customer_values WHERE customer_id = $1 ORDER BY currency",
        customer_id
    )
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(|row| (row.currency, row.lifetime_minor))
    .collect();
    Ok(rows
        .into_iter()
        .map(|(currency, amount_minor)| Money {
            currency,
            amount_minor,
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct ServiceEventRow {
    system: String,
    event_id: String,
    customer_id: Uuid,
    kind: String,
    status: String,
    description: String,
    occurred_at: DateTime<Utc>,
}

pub async fn upsert_service_event(
    conn: &mut PgConnection,
    customer_id: Uuid,
    new: &NewServiceEvent,
) -> sqlx::Result<ServiceEvent> {
    let row = sqlx::query_as!(
        ServiceEventRow,
        "INSERT INTO service_events (system, event_id, customer_id, kind, status, description, occurred_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (system, event_id) DO UPDATE SET customer_id = $3, kind = $4, status = $5, \
           description = $6, occurred_at = $7, updated_at = now() \
         RETURNING system, event_id, customer_id, kind, status, description, occurred_at",
        &new.system,
        &new.event_id,
        customer_id,
        new.kind.as_str(),
        &new.status,
        &new.description,
        new.occurred_at
    )
    .fetch_one(conn)
    .await?;
    Ok(ServiceEvent::from(row))
}

impl From<ServiceEventRow> for ServiceEvent {
    fn from(row: ServiceEventRow) -> Self {
        ServiceEvent {
            system: row.system,
            event_id: row.event_id,
            customer_id: row.customer_id,
            kind: ServiceEventKind::parse(&row.kind).unwrap_or(ServiceEventKind::Other),
            status: row.status,
            description: row.description,
            occurred_at: row.occurred_at,
        }
    }
}

/// What a privacy export reads and what erasure blanks.
pub mod privacy {
    use sqlx::PgConnection;
    use uuid::Uuid;

    use super::{Order, OrderRow, ServiceEvent, ServiceEventRow};

    /// The customer's orders, oldest first.
    pub async fn orders(conn: &mut PgConnection, customer_id: Uuid) -> sqlx::Result<Vec<Order>> {
        let rows = sqlx::query_as!(
        OrderRow,
        "SELECT system, order_id, customer_id, amount_minor, currency, status, ordered_at              FROM orders WHERE customer_id = $1 ORDER BY ordered_at, system, order_id",
        customer_id
    )
        .fetch_all(conn)
        .await?;
        Ok(rows.into_iter().map(Order::from).collect())
    }

    /// The customer's service events, oldest first.
    pub async fn service_events(
        conn: &mut PgConnection,
        customer_id: Uuid,
    ) -> sqlx::Result<Vec<ServiceEvent>> {
        let rows = sqlx::query_as!(
        ServiceEventRow,
        "SELECT system, event_id, customer_id, kind, status, description, occurred_at              FROM service_events WHERE customer_id = $1 ORDER BY occurred_at, system, event_id",
        customer_id
    )
        .fetch_all(conn)
        .await?;
        Ok(rows.into_iter().map(ServiceEvent::from).collect())
    }

    /// Blanks service event descriptions; orders hold no personal text and stay for KPIs.
    pub async fn erase(conn: &mut PgConnection, customer_id: Uuid) -> sqlx::Result<()> {
        sqlx::query!(
            "UPDATE service_events SET description = '' WHERE customer_id = $1",
            customer_id
        )
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// This context's rows per customer, as a merge moves them and an unmerge moves them back (the
/// keys are kept in merges' lineage: never change their form).
pub const CUSTOMER_ROWS: &[crate::customer_rows::CustomerRows] = &[
    crate::customer_rows::customer_rows!(
        "orders",
        reassign: "UPDATE orders SET customer_id = $1 WHERE customer_id = $2 \
                   RETURNING json_build_array(system, order_id)::text AS \"key!\"",
        restore: "UPDATE orders SET customer_id = $2 WHERE customer_id = $1 \
                  AND json_build_array(system, order_id)::text = ANY($3)",
    ),
    crate::customer_rows::customer_rows!(
        "service_events",
        reassign: "UPDATE service_events SET customer_id = $1 WHERE customer_id = $2 \
                   RETURNING json_build_array(system, event_id)::text AS \"key!\"",
        restore: "UPDATE service_events SET customer_id = $2 WHERE customer_id = $1 \
                  AND json_build_array(system, event_id)::text = ANY($3)",
    ),
];

//! Sales and service facts from other systems (ERP, billing, field service) on the shared record:
//! orders with the customer's lifetime value, and service events. Writes are idempotent on
//! (system, id); an order write invalidates the screen pops of the customers whose cards it changes.

pub mod grpc;
mod store;

pub use self::store::CUSTOMER_ROWS;

/// Rebuilds a customer's lifetime value from its orders, in the caller's transaction (after
/// orders moved between customers).
pub async fn recompute_value(
    conn: &mut sqlx::PgConnection,
    customer_id: crate::ids::CustomerId,
) -> sqlx::Result<()> {
    store::recompute_value(conn, customer_id.as_uuid()).await
}

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::card_data;
use crate::ids::ExternalReference;
use crate::screenpop::PopInvalidator;
use crate::text_enum::text_enum;
use crate::validation::Violations;

pub use self::store::privacy;

text_enum!(OrderStatus {
    Placed => "placed",
    Paid => "paid",
    Shipped => "shipped",
    Delivered => "delivered",
    Cancelled => "cancelled",
    Returned => "returned",
});

text_enum!(ServiceEventKind {
    Installation => "installation",
    Delivery => "delivery",
    Outage => "outage",
    Maintenance => "maintenance",
    Other => "other",
});

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerRef {
    Id(Uuid),
    External(ExternalReference),
}

/// Integer minor units of an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    pub currency: String,
    pub amount_minor: i64,
}

#[derive(Debug, Clone)]
pub struct NewOrder {
    pub system: String,
    pub order_id: String,
    pub customer: CustomerRef,
    pub amount: Money,
    pub status: OrderStatus,
    pub ordered_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub system: String,
    pub order_id: String,
    pub customer_id: Uuid,
    pub amount: Money,
    pub status: OrderStatus,
    pub ordered_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewServiceEvent {
    pub system: String,
    pub event_id: String,
    pub customer: CustomerRef,
    pub kind: ServiceEventKind,
    pub status: String,
    pub description: String,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEvent {
    pub system: String,
    pub event_id: String,
    pub customer_id: Uuid,
    pub kind: ServiceEventKind,
    pub status: String,
    pub description: String,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum ActivityError {
    #[error("{0}")]
    Invalid(Violations),
    #[error("customer not found")]
    CustomerNotFound,
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

crate::db::from_sqlx!(ActivityError);

#[derive(Clone)]
pub struct Activity {
    pool: PgPool,
    pops: PopInvalidator,
}

impl Activity {
    pub fn new(pool: PgPool, pops: PopInvalidator) -> Self {
        Self { pool, pops }
    }

    /// Records or updates an order and returns it with the customer's lifetime value.
    #[tracing::instrument(skip_all, fields(system = %new.system))]
    pub async fn record_order(&self, new: NewOrder) -> Result<(Order, Vec<Money>), ActivityError> {
        let mut tx = crate::db::begin(&self.pool).await?;
        let customer_id = store::resolve_customer(&mut tx, &new.customer)
            .await?
            .ok_or(ActivityError::CustomerNotFound)?;
        let previous_owner = store::lock_order_owner(&mut tx, &new.system, &new.order_id).await?;
        let order = store::upsert_order(&mut tx, customer_id, &new).await?;
        let mut touched = vec![customer_id];
        touched.extend(previous_owner.filter(|owner| *owner != customer_id));
        for customer in &touched {
            store::recompute_value(&mut tx, *customer).await?;
            crate::audit::record_write(&mut tx, (*customer).into()).await?;
        }
        let value = store::lifetime_value(&mut tx, customer_id).await?;
        let event = crate::feed::Event::new(
            "order.recorded",
            format!("{}/{}", order.system, order.order_id),
        )
        .customer(Some(customer_id.into()))
        .data(serde_json::json!({
            "system": order.system,
            "order_id": order.order_id,
            "amount_minor": order.amount.amount_minor,
            "currency": order.amount.currency,
            "status": order.status.as_str(),
            "ordered_at": order.ordered_at,
            "previous_customer_id": previous_owner.filter(|owner| *owner != customer_id),
        }));
        crate::feed::record(&mut tx, event).await?;
        let pending = self.pops.record_for_customers(&mut tx, &touched).await?;
        tx.commit().await?;
        self.pops.apply(pending).await;
        Ok((order, value))
    }

    /// Records or updates a service event (its description masked). Service events are not on the
    /// screen pop card, so no pop is invalidated.
    #[tracing::instrument(skip_all, fields(system = %new.system))]
    pub async fn record_service_event(
        &self,
        mut new: NewServiceEvent,
    ) -> Result<ServiceEvent, ActivityError> {
        new.description = card_data::mask(&new.description).into_owned();
        let mut tx = crate::db::begin(&self.pool).await?;
        let customer_id = store::resolve_customer(&mut tx, &new.customer)
            .await?
            .ok_or(ActivityError::CustomerNotFound)?;
        let event = store::upsert_service_event(&mut tx, customer_id, &new).await?;
        crate::audit::record_write(&mut tx, customer_id.into()).await?;
        tx.commit().await?;
        Ok(event)
    }
}

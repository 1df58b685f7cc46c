//! Data-subject requests: export everything held about a customer, erase a customer, and purge
//! old free text on a retention schedule.
//!
//! This context owns no tables. Each context that holds personal data exposes a `privacy` module
//! next to its store (`customers::privacy`, `interactions::privacy`, ...) that knows its own
//! columns: what to export, what to blank on erasure, what ages out. This module runs them in one
//! transaction and purges Redis through the same durable path as every other write
//! ([`PopInvalidator`]): recorded in the transaction, applied before the response, retried by the
//! relay if Redis is down (while the cache is not trusted).
//!
//! What erasure keeps is what KPIs count: the anonymous customer row (so foreign keys and
//! per-customer aggregates such as repeat contacts stay right), dispositions, timings, agents,
//! queues and order amounts. What it removes is everything that identifies or describes the
//! person: name, company, language, time zone, segment, contact points, external references,
//! caller numbers, notes, free-text outcomes, case subjects, descriptions and comments, service
//! event descriptions and the attached data of their calls' events.

pub mod grpc;
mod remask;
mod retention;
mod store;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

pub use self::remask::{RemaskReport, remask};
pub use self::retention::{RetentionReport, RetentionTarget, run_retention, run_retention_job};
use crate::audit::{self, AuditEvent};
use crate::calls::CallSummary;
use crate::cases::{Case, Change, Comment};
use crate::interactions::Interaction;
use crate::screenpop::PopInvalidator;
use crate::{activity, calls, cases, customers, feedback, interactions};

#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    #[error("customer not found")]
    NotFound,
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

crate::db::from_sqlx!(PrivacyError);

pub type Result<T, E = PrivacyError> = std::result::Result<T, E>;

/// Everything held about one customer at one instant.
pub struct CustomerData {
    pub customer: customers::privacy::Held,
    pub interactions: Vec<Interaction>,
    pub cases: Vec<(Case, Vec<Comment>, Vec<Change>)>,
    pub orders: Vec<activity::Order>,
    pub service_events: Vec<activity::ServiceEvent>,
    pub calls: Vec<CallSummary>,
    pub feedback: Vec<feedback::Feedback>,
    pub access_log: Vec<AuditEvent>,
    pub exported_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Erasure {
    pub erased_at: DateTime<Utc>,
    /// Numbers whose cached pops and pins were purged (zero when it was erased before).
    pub numbers_purged: usize,
}

#[derive(Clone)]
pub struct Privacy {
    pool: PgPool,
    pops: PopInvalidator,
}

impl Privacy {
    pub fn new(pool: PgPool, pops: PopInvalidator) -> Self {
        Self { pool, pops }
    }

    /// Reads everything in one repeatable-read snapshot, and records the export on the audit
    /// trail in the same transaction, so the export lists itself.
    pub async fn export(&self, id: Uuid) -> Result<CustomerData> {
        let mut tx = crate::db::begin(&self.pool).await?;
        crate::db::set_transaction(&mut tx, crate::db::TransactionMode::RepeatableRead).await?;
        let customer = customers::privacy::load(&mut tx, id)
            .await?
            .ok_or(PrivacyError::NotFound)?;
        audit::record_read(&mut tx, id).await?;
        let data = CustomerData {
            interactions: interactions::privacy::for_customer(&mut tx, id).await?,
            cases: cases::privacy::for_customer(&mut tx, id).await?,
            orders: activity::privacy::orders(&mut tx, id).await?,
            service_events: activity::privacy::service_events(&mut tx, id).await?,
            calls: calls::privacy::for_customer(&mut tx, id, &customer.phone_numbers).await?,
            feedback: feedback::privacy::for_customer(&mut tx, id).await?,
            access_log: audit::for_customer(&mut tx, id).await?,
            exported_at: Utc::now(),
            customer,
        };
        tx.commit().await?;
        Ok(data)
    }

    /// Erases the customer's personal data in one transaction, then purges their numbers' cached
    /// pops and pins before returning. Erasing an erased customer changes nothing.
    pub async fn erase(&self, id: Uuid) -> Result<Erasure> {
        let mut tx = crate::db::begin(&self.pool).await?;
        match customers::privacy::lock(&mut tx, id).await? {
            None => return Err(PrivacyError::NotFound),
            Some(Some(erased_at)) => {
                return Ok(Erasure {
                    erased_at,
                    numbers_purged: 0,
                });
            }
            Some(None) => {}
        }
        // The customer and every duplicate merged into them before: each tombstone still holds
        // its own row (name, company), and the merges kept what they moved.
        let mut lineage = vec![id];
        lineage.extend(customers::privacy::merged_into(&mut tx, id).await?);
        let mut numbers = Vec::new();
        let mut erased_at = None;
        for &customer in &lineage {
            let own = customers::privacy::phone_numbers(&mut tx, customer).await?;
            calls::privacy::erase(&mut tx, customer, &own).await?;
            interactions::privacy::erase(&mut tx, customer).await?;
            cases::privacy::erase(&mut tx, customer).await?;
            activity::privacy::erase(&mut tx, customer).await?;
            feedback::privacy::erase(&mut tx, customer).await?;
            let at = customers::privacy::erase(&mut tx, customer).await?;
            erased_at = erased_at.or(Some(at));
            audit::record_erasure(&mut tx, customer).await?;
            crate::feed::scrub_customer(&mut tx, customer.into()).await?;
            numbers.extend(own);
        }
        customers::privacy::scrub_merges(&mut tx, &lineage).await?;
        let erased_at = erased_at.unwrap_or_else(Utc::now);
        crate::feed::record(
            &mut tx,
            crate::feed::Event::new("customer.erased", id).customer(Some(id.into())),
        )
        .await?;
        let numbers_purged = numbers.len();
        let pending = self.pops.record(&mut tx, numbers).await?;
        tx.commit().await?;
        self.pops.apply(pending).await;
        Ok(Erasure {
            erased_at,
            numbers_purged,
        })
    }
}

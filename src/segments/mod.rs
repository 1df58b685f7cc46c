//! Customer segmentation: RFM scores from orders and interactions, and a named segment stored on
//! each live customer (shown on the pop, filtered on by campaigns).

pub mod grpc;
mod rules;
mod store;

use std::time::Instant;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::screenpop::PopInvalidator;

pub use rules::{SEGMENTS, segment_of};

#[derive(Debug, Clone)]
pub struct Run {
    pub as_of: DateTime<Utc>,
    pub window_days: i32,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub scored: i64,
    pub changed: i64,
    /// (segment, customers), largest first.
    pub segments: Vec<(String, i64)>,
    pub took_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

crate::db::from_sqlx!(SegmentError);

#[derive(Clone)]
pub struct Segmentation {
    pool: PgPool,
    pops: PopInvalidator,
}

impl Segmentation {
    pub fn new(pool: PgPool, pops: PopInvalidator) -> Self {
        Self { pool, pops }
    }

    /// Scores everyone and rewrites the segments that changed, in one transaction.
    #[tracing::instrument(skip(self))]
    pub async fn run(&self, run: Run) -> Result<Outcome, SegmentError> {
        let started = Instant::now();
        let mut tx = crate::db::begin(&self.pool).await?;
        store::prepare(&mut tx).await?;
        let scored = store::score(&mut tx, &run).await?;
        let changed: Vec<(Uuid, String)> = store::apply(&mut tx, &rules::grid()).await?;
        let ids: Vec<Uuid> = changed.iter().map(|(id, _)| *id).collect();
        crate::audit::record_writes(&mut tx, ids.iter().map(|&id| id.into())).await?;
        let events: Vec<crate::feed::Event> = changed
            .iter()
            .map(|(id, segment)| {
                crate::feed::Event::new("customer.updated", id)
                    .customer(Some((*id).into()))
                    .data(serde_json::json!({"change": "segment", "segment": segment}))
            })
            .collect();
        crate::feed::record_all(&mut tx, &events).await?;
        let pending = self.pops.record_for_customers(&mut tx, &ids).await?;
        let segments = store::distribution(&mut tx).await?;
        tx.commit().await?;
        self.pops.apply(pending).await;
        Ok(Outcome {
            scored,
            changed: ids.len() as i64,
            segments,
            took_ms: started.elapsed().as_millis() as i64,
        })
    }
}

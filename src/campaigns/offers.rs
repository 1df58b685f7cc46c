//! Which active campaign a dialed number belongs to, held in memory for the screen pop's hot path.
//!
//! The directory is a snapshot of the running campaigns' dialed numbers and offers, reloaded from
//! PostgreSQL every [`REFRESH_EVERY`] and at once after a campaign write on this instance. Another
//! instance's write is seen within one refresh interval; a lookup never waits on the database.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::store;

pub const REFRESH_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub campaign_id: Uuid,
    pub name: String,
    pub offer_text: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

#[derive(Clone)]
pub struct OfferDirectory {
    pool: PgPool,
    by_number: Arc<RwLock<Arc<HashMap<String, Offer>>>>,
}

impl OfferDirectory {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            by_number: Arc::default(),
        }
    }

    /// Reloads every [`REFRESH_EVERY`] until `stop` fires.
    pub fn spawn_refresh(
        &self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let directory = self.clone();
        tokio::spawn(async move {
            loop {
                directory.refresh().await;
                tokio::select! {
                    () = tokio::time::sleep(REFRESH_EVERY) => {}
                    _ = stop.changed() => return,
                }
            }
        })
    }

    /// Reloads now; on a database error the previous snapshot stays.
    pub async fn refresh(&self) {
        match store::running_offers(&self.pool).await {
            Ok(offers) => {
                let snapshot = Arc::new(offers.into_iter().collect::<HashMap<_, _>>());
                if let Ok(mut current) = self.by_number.write() {
                    *current = snapshot;
                }
            }
            Err(error) => tracing::warn!(%error, "campaign offers not reloaded"),
        }
    }

    /// The offer of the running campaign that owns `dialed` (E.164), if any.
    pub fn offer_for(&self, dialed: &str, now: DateTime<Utc>) -> Option<Offer> {
        let snapshot = self.by_number.read().ok()?.clone();
        snapshot
            .get(dialed)
            .filter(|offer| offer.starts_at <= now && now < offer.ends_at)
            .cloned()
    }
}

impl crate::screenpop::DialedOffers for OfferDirectory {
    fn for_dialed(
        &self,
        dialed: &str,
        now: DateTime<Utc>,
    ) -> Option<crate::screenpop::DialedOffer> {
        self.offer_for(dialed, now)
            .map(|offer| crate::screenpop::DialedOffer {
                campaign_id: offer.campaign_id,
                name: offer.name,
                offer_text: offer.offer_text,
            })
    }
}

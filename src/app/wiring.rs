//! The composition root: every service Switchboard runs, built from the settings in one place.
//!
//! [`Core`] is what `Application::build` makes before serving (the pool, Redis, the pop cache and
//! its invalidator, customers, the offer directory, admission): tests read its pop statistics
//! before the server runs. [`Services`] is the rest, built once the background tasks have started
//! the parts they own (the audit writer, the feed sequencer, the live board).

use std::sync::Arc;

use sqlx::PgPool;

use crate::read_replicas::Reads;

use crate::activity::Activity;
use crate::admission::{AdaptiveLimit, Targets};
use crate::agents::{Agents, Watcher};
use crate::analytics::Analytics;
use crate::audit::{AuditLog, Auditor};
use crate::calls::{CallBook, CallEvents};
use crate::campaigns::{Campaigns, OfferDirectory};
use crate::cases::Cases;
use crate::config::Settings;
use crate::customer_rows::CustomerRows;
use crate::customers::Customers;
use crate::feed::{EventFeed, FeedHead};
use crate::feedback::FeedbackDesk;
use crate::import::Importer;
use crate::interactions::Interactions;
use crate::live::Live;
use crate::privacy::Privacy;
use crate::push::Fanout;
use crate::redis_link::RedisLink;
use crate::screenpop::cache::{CacheTtls, PopCache};
use crate::screenpop::{PopInvalidator, ScreenPops};
use crate::segments::Segmentation;

/// What exists from `build` on.
pub struct Core {
    pub pool: PgPool,
    /// Where reads that may use a replica go.
    pub reads: Reads,
    /// The Redis link shared by the pop cache, the fan-out and the live board (`None`: no Redis).
    pub redis: Option<RedisLink>,
    pub customers: Customers,
    pub pops: ScreenPops,
    pub invalidator: PopInvalidator,
    pub offers: OfferDirectory,
    pub fanout: Arc<Fanout>,
    /// Load shedding, shared with the pops (which skip their PostgreSQL fallback while shedding).
    pub admission: Arc<AdaptiveLimit>,
    /// Call events waiting for their commit (kept by the call events, read by delivery).
    pub ingest: crate::ingest_backlog::IngestBacklog,
}

impl Core {
    /// Builds the core on `pool`, and drains the pop invalidations a previous run left pending.
    pub async fn build(settings: &Settings, pool: PgPool, reads: Reads) -> Self {
        let redis = settings.redis.as_ref().map(RedisLink::new);
        if let Some(link) = &redis {
            link.warm(std::time::Duration::from_secs(1)).await;
        }
        let fanout = Fanout::new(redis.clone());
        let cache = redis.clone().map(|link| {
            PopCache::new(
                link,
                CacheTtls {
                    pop: settings.pop_ttl,
                    negative: settings.negative_ttl,
                    pin: settings.pin_ttl,
                },
            )
        });
        if cache.is_none() {
            tracing::warn!("no REDIS_URL: screen pops are served from PostgreSQL only");
        }
        let invalidator = PopInvalidator::new(pool.clone(), cache.clone());
        if let Err(error) = invalidator.drain_once().await {
            tracing::warn!(%error, "pending pop invalidations not drained yet; the relay will retry");
        }
        let offers = OfferDirectory::new(pool.clone());
        let admission = AdaptiveLimit::new(
            settings.limits.max_in_flight,
            Targets {
                lag: settings.limits.shed_lag,
                queue: settings.limits.shed_queue,
            },
        );
        let pops = ScreenPops::new(
            pool.clone(),
            reads.clone(),
            cache,
            invalidator.clone(),
            Arc::new(offers.clone()),
            Arc::clone(&admission),
        );
        let customers = Customers::new(
            pool.clone(),
            reads.clone(),
            invalidator.clone(),
            customer_rows(),
        );
        Self {
            pool,
            reads,
            redis,
            customers,
            pops,
            invalidator,
            offers,
            fanout,
            admission,
            ingest: Default::default(),
        }
    }
}

/// What the background tasks own and the services use.
pub struct Shared {
    pub auditor: Auditor,
    pub feed_head: FeedHead,
    pub live: Live,
}

/// Every domain service the server exposes.
pub struct Services {
    pub pool: PgPool,
    pub customers: Customers,
    pub pops: ScreenPops,
    pub call_events: CallEvents,
    pub agents: Agents,
    pub watcher: Watcher,
    pub interactions: Interactions,
    pub activity: Activity,
    pub cases: Cases,
    pub campaigns: Campaigns,
    pub feedback: FeedbackDesk,
    pub analytics: Analytics,
    pub scorecards: crate::scorecard::Scorecards,
    pub reconciler: crate::reconcile::Reconciler,
    pub live: Live,
    pub segmentation: Segmentation,
    pub privacy: Privacy,
    pub feed: EventFeed,
    pub audit: AuditLog,
    pub import: Importer,
    pub webhooks: crate::webhooks::Webhooks,
}

impl Services {
    pub fn build(core: Core, shared: &Shared, settings: &Settings) -> Self {
        let Core {
            pool,
            reads,
            customers,
            pops,
            invalidator,
            offers,
            fanout,
            ingest,
            ..
        } = core;
        let live = shared.live.clone();
        let agents = Agents::new(pool.clone(), live.clone());
        let watcher = Watcher {
            calls: Arc::new(CallBook::new(pool.clone())),
            agents: agents.clone(),
            fanout: fanout.clone(),
            pops: pops.clone(),
            phones: settings.phones,
            shown: crate::agents::PopsShown::spawn(pool.clone()),
        };
        let call_events = CallEvents::new(
            pool.clone(),
            pops.clone(),
            settings.phones,
            fanout,
            live.clone(),
            ingest,
        );
        Self {
            interactions: Interactions::new(pool.clone(), invalidator.clone()),
            activity: Activity::new(pool.clone(), invalidator.clone()),
            cases: Cases::new(pool.clone(), invalidator.clone(), settings.case_sla),
            campaigns: Campaigns::new(pool.clone(), invalidator.clone(), offers),
            feedback: FeedbackDesk::new(
                pool.clone(),
                invalidator.clone(),
                settings.case_sla,
                settings.feedback,
            ),
            analytics: Analytics::new(reads.clone()),
            reconciler: crate::reconcile::Reconciler::new(pool.clone()),
            scorecards: crate::scorecard::Scorecards::new(
                pool.clone(),
                Analytics::new(reads.clone()),
            ),
            segmentation: Segmentation::new(pool.clone(), invalidator.clone()),
            privacy: Privacy::new(pool.clone(), invalidator.clone()),
            feed: EventFeed::new(pool.clone(), shared.feed_head.clone()),
            audit: AuditLog::new(reads.clone()),
            import: Importer::new(pool.clone(), invalidator.clone(), settings.phones),
            webhooks: crate::webhooks::Webhooks::new(pool.clone(), settings.webhooks.clone()),
            customers,
            pops,
            call_events,
            agents,
            watcher,
            live,
            pool,
        }
    }
}

/// Every context's rows per customer, in the order a merge moves them: the customer record's own,
/// then each context that keeps rows per customer. A context that adds such a table lists it in
/// its store's `CUSTOMER_ROWS` (or in `customers::NOT_MOVED`); a test checks the schema against
/// this list.
pub fn customer_rows() -> Vec<CustomerRows> {
    [
        crate::customers::CUSTOMER_ROWS,
        crate::interactions::CUSTOMER_ROWS,
        crate::cases::CUSTOMER_ROWS,
        crate::activity::CUSTOMER_ROWS,
        crate::calls::CUSTOMER_ROWS,
        crate::feedback::CUSTOMER_ROWS,
        crate::campaigns::CUSTOMER_ROWS,
    ]
    .concat()
}

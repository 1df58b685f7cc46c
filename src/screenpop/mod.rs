//! Screen pops: who is calling, answered from Redis when hot and from PostgreSQL otherwise.
//!
//! The path of a lookup:
//! 1. One Redis round trip reads the cached pop, the number's generation and (with a call id) the
//!    pin. A current pin or a cached pop is decoded and returned.
//! 2. On a miss, concurrent lookups for the same number and generation share one PostgreSQL read
//!    of the stored cards ([`card`], [`SingleFlight`]); the leader stores the result only if no invalidation has moved the
//!    generation meanwhile (see [`cache`]).
//! 3. When Redis is down, slow or not trusted (pending invalidations), the pop comes straight from
//!    PostgreSQL; Redis is never needed for a correct answer. Except while the instance is
//!    shedding load ([`AdaptiveLimit::is_shedding`]): then a Redis failure is most likely the
//!    overload itself (Redis starved of CPU, or its answers queued behind ours), and a query costs
//!    many times a cache read, so falling back would shrink capacity just when it is short. The
//!    pop answers UNAVAILABLE instead, as a shed request does, and the softphone retries.
//!
//! The pop's cached form is its protobuf encoding, so this context works with the generated
//! `ScreenPop` message (a prost type, not a tonic one) as its model.

pub mod cache;
pub mod caller_id;
pub mod card;
pub mod grpc;
pub mod http;
mod invalidation;
mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message as _;

use crate::read_replicas::Reads;
use sqlx::PgPool;

use self::cache::{NumberKey, PopCache};
pub use self::invalidation::{Pending, PopInvalidator};
use crate::admission::AdaptiveLimit;
use crate::db::{self, Failure};
use crate::phone::PhoneNumber;
use crate::proto::v1;
use crate::single_flight::SingleFlight;
use crate::validation::Violations;

/// The running campaign that owns a dialed number, as the pop names it (inbound attribution).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialedOffer {
    pub campaign_id: uuid::Uuid,
    pub name: String,
    pub offer_text: String,
}

/// Where a pop asks which running campaign owns a dialed number. The campaigns context implements
/// it (`campaigns::OfferDirectory`), so screenpop never imports campaigns.
pub trait DialedOffers: Send + Sync {
    /// The offer of the campaign running at `now` that owns `dialed` (E.164), if any.
    fn for_dialed(&self, dialed: &str, now: chrono::DateTime<chrono::Utc>) -> Option<DialedOffer>;
}

/// A validated lookup.
#[derive(Debug, Clone)]
pub struct PopRequest {
    pub caller: PhoneNumber,
    pub dialed: Option<PhoneNumber>,
    pub call_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PopSource {
    Cache,
    Database,
    Shared,
    CallPin,
}

#[derive(Debug, thiserror::Error)]
pub enum PopError {
    #[error("{0}")]
    Invalid(Violations),
    #[error("database unavailable")]
    Unavailable(#[source] Arc<sqlx::Error>),
    #[error("database error")]
    Database(#[source] Arc<sqlx::Error>),
    /// The cache failed while the instance is shedding load: no fallback to PostgreSQL.
    #[error("overloaded: the cache is not answering and the instance is shedding load")]
    Overloaded,
}

impl From<Arc<sqlx::Error>> for PopError {
    fn from(error: Arc<sqlx::Error>) -> Self {
        match db::classify(&error) {
            Failure::Unavailable => PopError::Unavailable(error),
            _ => PopError::Database(error),
        }
    }
}

/// Counters of what lookups did; read by tests and the load generator.
#[derive(Debug, Default)]
pub struct PopStats {
    pub cache_hits: AtomicU64,
    pub pin_hits: AtomicU64,
    /// PostgreSQL queries made by lookups.
    pub database_queries: AtomicU64,
    /// Lookups answered by another lookup's query.
    pub shared: AtomicU64,
    /// Lookups that skipped Redis (down, backing off, or not trusted).
    pub cache_bypassed: AtomicU64,
    /// Of the queries, those a read replica answered.
    pub replica_queries: AtomicU64,
}

impl PopStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

type Loaded = Result<Arc<(v1::ScreenPop, Vec<u8>)>, Arc<sqlx::Error>>;

#[derive(Clone)]
pub struct ScreenPops {
    pool: PgPool,
    /// A miss reads a replica that has replayed past the number's fence, else the primary.
    reads: Reads,
    cache: Option<PopCache>,
    invalidator: PopInvalidator,
    flights: Arc<SingleFlight<(String, Option<i64>), Loaded>>,
    stats: Arc<PopStats>,
    offers: Arc<dyn DialedOffers>,
    admission: Arc<AdaptiveLimit>,
}

impl ScreenPops {
    pub fn new(
        pool: PgPool,
        reads: Reads,
        cache: Option<PopCache>,
        invalidator: PopInvalidator,
        offers: Arc<dyn DialedOffers>,
        admission: Arc<AdaptiveLimit>,
    ) -> Self {
        Self {
            pool,
            reads,
            cache,
            invalidator,
            flights: Arc::default(),
            stats: Arc::default(),
            offers,
            admission,
        }
    }

    pub fn stats(&self) -> Arc<PopStats> {
        Arc::clone(&self.stats)
    }

    /// The pop for a lookup, decoded, with the campaign that owns the dialed number on it.
    pub async fn lookup(
        &self,
        request: &PopRequest,
    ) -> Result<(v1::ScreenPop, PopSource), PopError> {
        let answer = self.answer(request).await?;
        self.decoded(request, answer).await
    }

    /// An answer as a decoded pop, with the dialed campaign on it. Cached bytes that pass the
    /// check of [`Self::answer`] but do not decode as a whole are read again from PostgreSQL.
    pub async fn decoded(
        &self,
        request: &PopRequest,
        answer: PopAnswer,
    ) -> Result<(v1::ScreenPop, PopSource), PopError> {
        let (mut pop, source) = match answer.body {
            PopBody::Decoded(pop) => (*pop, answer.source),
            PopBody::Encoded { bytes, .. } => match v1::ScreenPop::decode(bytes.as_slice()) {
                Ok(pop) => (pop, answer.source),
                Err(_) => (
                    self.load_uncached(request.caller.e164()).await?,
                    PopSource::Database,
                ),
            },
        };
        pop.dialed_campaign = answer.dialed_campaign;
        Ok((pop, source))
    }

    /// The pop for a lookup, as the cache holds it when it came from the cache: a hot pop is never
    /// decoded (the gRPC adapter sends its bytes as they are, `proto::lookup`).
    #[tracing::instrument(skip_all, fields(call_id = request.call_id.as_deref(), source))]
    pub async fn answer(&self, request: &PopRequest) -> Result<PopAnswer, PopError> {
        let number = request.caller.e164();
        let call_id = request.call_id.as_deref();
        let (body, source) = match &self.cache {
            Some(cache) if self.invalidator.cache_trusted() => {
                let key = NumberKey::of(number);
                match cache.read(&key, call_id).await {
                    Ok(read) => {
                        self.answer_from_cache_or_load(cache, number, &key, call_id, read)
                            .await?
                    }
                    Err(_) => self.fall_back(number).await?,
                }
            }
            Some(_) => self.fall_back(number).await?,
            None => (
                PopBody::Decoded(Box::new(self.load_uncached(number).await?)),
                PopSource::Database,
            ),
        };
        tracing::Span::current().record("source", tracing::field::debug(source));
        // Inbound attribution: not part of the cached card, which is the same whatever was dialed.
        let dialed_campaign = request
            .dialed
            .as_ref()
            .and_then(|dialed| self.offers.for_dialed(dialed.e164(), chrono::Utc::now()))
            .map(|offer| v1::CardOffer {
                campaign_id: offer.campaign_id.to_string(),
                campaign_name: offer.name,
                offer_text: offer.offer_text,
            });
        Ok(PopAnswer {
            body,
            source,
            dialed_campaign,
        })
    }

    async fn answer_from_cache_or_load(
        &self,
        cache: &PopCache,
        number: &str,
        key: &NumberKey,
        call_id: Option<&str>,
        mut read: cache::CachedRead,
    ) -> Result<(PopBody, PopSource), PopError> {
        if let Some(pin) = read.current_pin()
            && let Some(shown) = shown_in(pin)
        {
            PopStats::bump(&self.stats.pin_hits);
            let bytes = pin.to_vec();
            return Ok((PopBody::Encoded { bytes, shown }, PopSource::CallPin));
        }
        if let Some(shown) = read.pop.as_deref().and_then(shown_in)
            && let Some(bytes) = read.pop.take()
        {
            PopStats::bump(&self.stats.cache_hits);
            if let Some(call_id) = call_id {
                cache.pin(key, call_id, read.generation, &bytes).await.ok();
            }
            return Ok((PopBody::Encoded { bytes, shown }, PopSource::Cache));
        }
        let (generation, fence) = (read.generation, read.fence);
        let (loaded, ran) = self
            .flights
            .run((number.to_owned(), generation), || {
                self.load_and_fill(cache, number, key, generation, fence)
            })
            .await;
        let loaded = loaded?;
        if let Some(call_id) = call_id {
            cache.pin(key, call_id, generation, &loaded.1).await.ok();
        }
        let source = if ran {
            PopSource::Database
        } else {
            PopSource::Shared
        };
        if !ran {
            PopStats::bump(&self.stats.shared);
        }
        Ok((PopBody::Decoded(Box::new(loaded.0.clone())), source))
    }

    async fn load_and_fill(
        &self,
        cache: &PopCache,
        number: &str,
        key: &NumberKey,
        generation: Option<i64>,
        fence: Option<i64>,
    ) -> Loaded {
        PopStats::bump(&self.stats.database_queries);
        let pop = match self.load_from_replica(number, fence).await {
            Some(pop) => pop,
            None => card::resolve(&self.pool, number).await.map_err(Arc::new)?,
        };
        let bytes = pop.encode_to_vec();
        // Filling is best effort, and skipped if an invalidation happened since the read.
        if self.invalidator.cache_trusted() {
            let known = pop.r#match() != v1::MatchKind::None;
            cache
                .store_if_current(key, generation, &bytes, known)
                .await
                .ok();
        }
        Ok(Arc::new((pop, bytes)))
    }

    /// The pop from a read replica that has replayed past the number's fence (no fence: no
    /// invalidation in the last minute, which a replica within the lag bound has replayed), if
    /// one has and its cards are all current; `None`: read the primary. A replica slower than
    /// `--database-replica-timeout-ms` (a hung standby) is given up on, so a pop never waits on one.
    async fn load_from_replica(&self, number: &str, fence: Option<i64>) -> Option<v1::ScreenPop> {
        let (_, replica) = self.reads.replayed_past(fence.unwrap_or(0)).await?;
        let read = card::resolve_stored(&replica, number);
        match tokio::time::timeout(self.reads.timeout(), read).await {
            Ok(Ok(Some(pop))) => {
                PopStats::bump(&self.stats.replica_queries);
                Some(pop)
            }
            Ok(Ok(None)) => None,
            Ok(Err(error)) => {
                tracing::debug!(%error, "a replica could not answer a pop; reading the primary");
                None
            }
            Err(_) => {
                tracing::debug!("a replica was too slow for a pop; reading the primary");
                None
            }
        }
    }

    /// The cache is configured but failed or is not trusted: PostgreSQL, unless shedding.
    async fn fall_back(&self, number: &str) -> Result<(PopBody, PopSource), PopError> {
        if self.admission.is_shedding() {
            return Err(PopError::Overloaded);
        }
        let pop = self.load_uncached(number).await?;
        Ok((PopBody::Decoded(Box::new(pop)), PopSource::Database))
    }

    async fn load_uncached(&self, number: &str) -> Result<v1::ScreenPop, PopError> {
        PopStats::bump(&self.stats.cache_bypassed);
        PopStats::bump(&self.stats.database_queries);
        Ok(card::resolve(&self.pool, number).await.map_err(Arc::new)?)
    }
}

/// The customers cached bytes show, read once for the audit; `None` unless they are a `ScreenPop`
/// whose cards can be named, so they may be served as they are (anything else is treated as a
/// miss, as a failed decode always was).
fn shown_in(bytes: &[u8]) -> Option<Vec<uuid::Uuid>> {
    let ids = v1::LookupResponse::customer_ids(bytes)?;
    Some(
        ids.iter()
            .filter_map(|id| uuid::Uuid::parse_str(id).ok())
            .collect(),
    )
}

/// A pop as a lookup found it.
#[derive(Debug)]
pub enum PopBody {
    /// Read from PostgreSQL.
    Decoded(Box<v1::ScreenPop>),
    /// Cached bytes of a `ScreenPop` (without `dialed_campaign` and `caller_kind`), and the
    /// customers they show.
    Encoded {
        bytes: Vec<u8>,
        shown: Vec<uuid::Uuid>,
    },
}

/// What a lookup answers: the pop, where it came from, and the campaign that owns the dialed
/// number (not part of the cached pop, which is the same whatever was dialed).
#[derive(Debug)]
pub struct PopAnswer {
    pub body: PopBody,
    pub source: PopSource,
    pub dialed_campaign: Option<v1::CardOffer>,
}

impl PopAnswer {
    /// The customers the pop shows, for the read audit.
    pub fn customer_ids(&self) -> Vec<uuid::Uuid> {
        match &self.body {
            PopBody::Decoded(pop) => pop
                .card
                .iter()
                .chain(&pop.candidates)
                .filter_map(|card| uuid::Uuid::parse_str(&card.customer_id).ok())
                .collect(),
            PopBody::Encoded { shown, .. } => shown.clone(),
        }
    }
}

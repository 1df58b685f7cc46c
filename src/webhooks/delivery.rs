//! The delivery worker every instance runs: it leases due sinks, sends each one's events in feed
//! order, and records how far it got.
//!
//! A pass: read the feed's head, lease up to [`CLAIM`] active sinks that are due and behind it
//! (`FOR UPDATE SKIP LOCKED`, so two instances never lease one sink), and deliver each one's
//! events after its cursor, a page at a time. After each page the cursor and the attempts go to
//! PostgreSQL and the lease is renewed (a checkpoint); a sink is let go when it has caught up,
//! when its pass has run [`PASS`], or on a failure (with the attempt counted and the next one
//! scheduled). Every write is fenced by the lease, so a worker that stalled past its lease and
//! lost the sink to another writes nothing.
//!
//! Exactly what a receiver sees: each event at least once, in feed order, never two at once.
//! An event is sent again only if its answer was not recorded: a timeout, or an instance killed
//! between the answer and its checkpoint (then up to a page, [`PAGE`] events, is sent again, with
//! the same `webhook-id`s).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::signing::{Secret, signature_header};
use super::store::{self, Attempt, Claimed};
use super::{DeliverySettings, Kind, address};
use crate::feed::{FeedHead, StoredEvent};
use crate::ingest_backlog::IngestBacklog;

/// Sinks one pass leases at most (delivered concurrently).
const CLAIM: i64 = 16;
/// Events read (and checkpointed) at a time.
const PAGE: i64 = 50;
/// How long one pass keeps a sink before letting others have a turn.
const PASS: Duration = Duration::from_secs(5);
/// How often a worker looks for due sinks when the feed is quiet (retries fall due).
const TICK: Duration = Duration::from_millis(250);
/// Call events waiting for their commit above which delivery gives way to them: above what a
/// steady load keeps waiting (1,000 events a second keep 12 at the median and 60 at the 99th
/// percentile of their commit time on the bench machine), reached when gateways send faster
/// than the database commits.
const BUSY: usize = 256;
/// The longest a page waits for ingest, and how often it looks again.
const GIVE_WAY: Duration = Duration::from_millis(250);
const GIVE_WAY_STEP: Duration = Duration::from_millis(10);
/// The NATS sink's row id: one per deployment.
pub const NATS_SINK: Uuid = Uuid::from_u128(0x5b_0000_0000_0000_0000_0000_0000_0001);

/// What the workers did, for the metrics (this instance's counts).
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Events accepted, by webhooks and by NATS.
    pub webhook_delivered: AtomicU64,
    pub nats_delivered: AtomicU64,
    /// Attempts that failed.
    pub webhook_failed_attempts: AtomicU64,
    pub nats_failed_attempts: AtomicU64,
    /// Subscriptions FAILING, as the last count saw them (all instances).
    pub failing: AtomicI64,
}

/// Where a sink's events go.
enum Target {
    Http {
        client: reqwest::Client,
        allow: address::AllowList,
        /// `None`: the stored URL does not parse (every attempt fails "bad_url").
        url: Option<reqwest::Url>,
        secrets: Vec<Secret>,
    },
    Nats(async_nats::jetstream::Context),
}

/// Why an attempt failed: a short code for the log, the sink's status and the metrics (never
/// the receiver's words: they could carry anything).
type Failure = &'static str;

/// The answer to one attempt.
struct Outcome {
    status_code: i32,
    result: Result<(), Failure>,
}

/// The body of a webhook: Standard Webhooks' `type`, `timestamp` and `data`, where `data` is the
/// feed event (ids, states and codes only). The event's details go out as stored (JSON the
/// feed wrote), not parsed and written again.
fn payload(event: &StoredEvent) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        r#type: &'a str,
        timestamp: String,
        data: Data<'a>,
    }
    #[derive(serde::Serialize)]
    struct Data<'a> {
        cursor: String,
        topic: &'a str,
        subject_id: &'a str,
        customer_id: Option<String>,
        details: Option<&'a serde_json::value::RawValue>,
    }
    let body = Body {
        r#type: &event.kind,
        timestamp: event
            .occurred_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        data: Data {
            cursor: event.position.to_string(),
            topic: &event.topic,
            subject_id: &event.subject_id,
            customer_id: event.customer_id.map(|id| id.to_string()),
            details: serde_json::from_str(&event.data_json).ok(),
        },
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Adds an attempt to the log: a first-attempt success with the same status as the run before
/// it extends that run; anything else is an entry of its own.
fn record(log: &mut Vec<Attempt>, next: Attempt) {
    let clean = |a: &Attempt| a.attempt == 1 && a.error.is_empty();
    match log.last_mut() {
        Some(run) if clean(run) && clean(&next) && run.status_code == next.status_code => {
            run.through = next.through;
            run.events += 1;
            run.duration_ms = run.duration_ms.max(next.duration_ms);
        }
        _ => log.push(next),
    }
}

/// The id a receiver dedupes on: the same for every attempt, from every instance.
pub fn webhook_id(position: i64) -> String {
    format!("sb_{position}")
}

impl Target {
    /// Sends `page` in order and returns the outcome of each event sent, with how long it took,
    /// ending at the first failure (nothing after it is sent, or counts). A webhook sends one
    /// event at a time, each after the previous was answered; NATS publishes the whole page on
    /// its connection (which keeps the order) and then awaits the acks in order.
    async fn send_page(&self, page: &[StoredEvent], body_cap: usize) -> Vec<(Outcome, Duration)> {
        let mut outcomes = Vec::with_capacity(page.len());
        match self {
            Target::Http {
                client,
                allow,
                url,
                secrets,
            } => {
                for event in page {
                    let began = Instant::now();
                    let outcome =
                        send_http(client, allow, url.as_ref(), secrets, event, body_cap).await;
                    let failed = outcome.result.is_err();
                    outcomes.push((outcome, began.elapsed()));
                    if failed {
                        break;
                    }
                }
            }
            Target::Nats(jetstream) => {
                let began = Instant::now();
                let mut pending = Vec::with_capacity(page.len());
                for event in page {
                    match publish_nats(jetstream, event).await {
                        Ok(ack) => pending.push(ack),
                        Err(failure) => {
                            pending.clear();
                            outcomes.push((
                                Outcome {
                                    status_code: 0,
                                    result: Err(failure),
                                },
                                began.elapsed(),
                            ));
                            break;
                        }
                    }
                }
                for ack in pending {
                    let result = ack.await.map(drop).map_err(|_| "no_ack");
                    let failed = result.is_err();
                    outcomes.push((
                        Outcome {
                            status_code: 0,
                            result,
                        },
                        began.elapsed(),
                    ));
                    if failed {
                        break;
                    }
                }
                if outcomes.last().is_some_and(|(o, _)| o.result.is_err()) {
                    // No stream for the subject yet (NATS was down at start, or it lost its
                    // store): make it before the next attempt.
                    ensure_stream(jetstream).await;
                }
            }
        }
        outcomes
    }
}

async fn send_http(
    client: &reqwest::Client,
    allow: &address::AllowList,
    url: Option<&reqwest::Url>,
    secrets: &[Secret],
    event: &StoredEvent,
    body_cap: usize,
) -> Outcome {
    let failed = |status_code, failure| Outcome {
        status_code,
        result: Err(failure),
    };
    let Some(parsed) = url else {
        return failed(0, "bad_url");
    };
    // reqwest resolves names through `address::Resolver`; an address in the URL it connects to
    // directly, so that one is checked here.
    if let Some(host) = parsed.host_str()
        && let Ok(ip) = host.trim_matches(['[', ']']).parse::<std::net::IpAddr>()
        && !allow.permits(ip)
    {
        return failed(0, "refused_address");
    }
    let body = payload(event);
    let id = webhook_id(event.position);
    let timestamp = Utc::now().timestamp();
    let keys: Vec<&Secret> = secrets.iter().collect();
    let signature = signature_header(&keys, &id, timestamp, &body);
    let sent = client
        .post(parsed.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    let mut response = match sent {
        Ok(response) => response,
        Err(error) if error.is_timeout() => return failed(0, "timeout"),
        Err(error) if is_refused_address(&error) => return failed(0, "refused_address"),
        Err(error) if error.is_connect() => return failed(0, "connect"),
        Err(_) => return failed(0, "request"),
    };
    let status = response.status();
    // Read (and drop) at most `body_cap` of the answer, so a receiver that streams without end
    // cannot hold the worker; the connection goes with the rest.
    let mut read = 0;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                read += chunk.len();
                if read > body_cap {
                    break;
                }
            }
            Ok(None) => break,
            Err(error) if error.is_timeout() => {
                return failed(i32::from(status.as_u16()), "timeout");
            }
            Err(_) => break,
        }
    }
    let status_code = i32::from(status.as_u16());
    if status.is_success() {
        Outcome {
            status_code,
            result: Ok(()),
        }
    } else if status.is_redirection() {
        failed(status_code, "redirect")
    } else {
        failed(status_code, "status")
    }
}

/// Whether reqwest failed because `address::Resolver` refused every address.
fn is_refused_address(error: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(address) = cause.downcast_ref::<address::AddressError>() {
            return *address == address::AddressError::Refused;
        }
        source = cause.source();
    }
    false
}

/// The subject an event goes to: `switchboard.v1.<topic>`.
pub fn nats_subject(topic: &str) -> String {
    format!("switchboard.v1.{topic}")
}

/// Publishes one event; the future resolves with JetStream's ack.
async fn publish_nats(
    jetstream: &async_nats::jetstream::Context,
    event: &StoredEvent,
) -> Result<async_nats::jetstream::context::PublishAckFuture, Failure> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", webhook_id(event.position).as_str());
    headers.insert("Switchboard-Type", event.kind.as_str());
    jetstream
        .publish_with_headers(nats_subject(&event.topic), headers, payload(event).into())
        .await
        .map_err(|_| "publish")
}

/// The stream Switchboard makes when none holds its subjects yet.
pub const NATS_STREAM: &str = "SWITCHBOARD";

/// Makes the `SWITCHBOARD` stream (subjects `switchboard.v1.>`, file storage, a two-minute
/// duplicate window) unless it exists. An operator may make their own stream for the subjects
/// instead; then this one cannot be made, which is logged and harmless. With NATS down, the
/// publishes fail and are retried, and the stream is made by the next start.
async fn ensure_stream(jetstream: &async_nats::jetstream::Context) {
    if jetstream.get_stream(NATS_STREAM).await.is_ok() {
        return;
    }
    let config = async_nats::jetstream::stream::Config {
        name: NATS_STREAM.to_owned(),
        subjects: vec!["switchboard.v1.>".to_owned()],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    if let Err(error) = jetstream.create_stream(config).await {
        tracing::warn!(%error, "the NATS stream SWITCHBOARD could not be made (another stream may hold the subjects)");
    }
}

/// Starts this instance's worker; it stops when `stop` turns true.
pub fn spawn_workers(
    pool: PgPool,
    settings: Arc<DeliverySettings>,
    head: FeedHead,
    stats: Arc<SinkStats>,
    ingest: IngestBacklog,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let worker = match Worker::new(pool, settings, stats, head.clone(), ingest).await {
            Ok(worker) => worker,
            Err(error) => {
                tracing::error!(%error, "webhook delivery cannot start");
                return;
            }
        };
        let mut changes = head.watch();
        let mut last_prune = Instant::now();
        let mut last_count = Instant::now();
        let mut streak = crate::failure_streak::FailureStreak::default();
        loop {
            tokio::select! {
                _ = changes.changed() => {}
                () = tokio::time::sleep(TICK) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            let head = changes.borrow_and_update().position;
            streak.record("webhook delivery", worker.pass(head).await);
            if last_count.elapsed() > Duration::from_secs(10)
                || worker.turned_failing.swap(false, Ordering::Relaxed)
            {
                last_count = Instant::now();
                worker.count_failing().await;
            }
            if last_prune.elapsed() > Duration::from_secs(60) {
                last_prune = Instant::now();
                worker.prune().await;
            }
        }
    })
}

struct Worker {
    pool: PgPool,
    settings: Arc<DeliverySettings>,
    stats: Arc<SinkStats>,
    /// The feed's head as this instance's sequencer last published it (no query per page).
    head: FeedHead,
    /// This worker's lease name (a new one each start).
    owner: Uuid,
    client: reqwest::Client,
    nats: Option<async_nats::jetstream::Context>,
    /// A sink turned FAILING in this worker's last pass: count again now.
    turned_failing: std::sync::atomic::AtomicBool,
    /// Call events waiting for their commit on this instance: delivery gives way to them.
    ingest: IngestBacklog,
}

impl Worker {
    async fn new(
        pool: PgPool,
        settings: Arc<DeliverySettings>,
        stats: Arc<SinkStats>,
        head: FeedHead,
        ingest: IngestBacklog,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .dns_resolver(Arc::new(address::Resolver(settings.allow.clone())))
            .user_agent(concat!("switchboard-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let nats = match &settings.nats_url {
            Some(url) => {
                let connection = async_nats::ConnectOptions::new()
                    .retry_on_initial_connect()
                    .connect(url.as_str())
                    .await?;
                let head = crate::feed::head(&pool).await?;
                store::ensure_nats(&pool, NATS_SINK, head.position).await?;
                let jetstream = async_nats::jetstream::new(connection);
                // Not waited for: NATS may be down now, and webhooks must not wait for it.
                tokio::spawn({
                    let jetstream = jetstream.clone();
                    async move { ensure_stream(&jetstream).await }
                });
                Some(jetstream)
            }
            None => None,
        };
        Ok(Self {
            pool,
            settings,
            stats,
            head,
            owner: Uuid::new_v4(),
            client,
            nats,
            turned_failing: Default::default(),
            ingest,
        })
    }

    async fn pass(&self, head: i64) -> sqlx::Result<()> {
        let claimed = store::claim(
            &self.pool,
            self.owner,
            self.settings.lease,
            head,
            self.nats.is_some(),
            CLAIM,
        )
        .await?;
        let runs = claimed.into_iter().map(|sink| self.run(sink));
        for result in futures::future::join_all(runs).await {
            result?;
        }
        Ok(())
    }

    fn target(&self, claimed: &Claimed) -> Option<Target> {
        match claimed.sink.kind {
            Kind::Webhook => Some(Target::Http {
                client: self.client.clone(),
                allow: self.settings.allow.clone(),
                url: reqwest::Url::parse(&claimed.sink.url).ok(),
                secrets: claimed
                    .secrets
                    .iter()
                    .filter_map(|s| Secret::parse(s))
                    .collect(),
            }),
            Kind::Nats => self.nats.clone().map(Target::Nats),
        }
    }

    /// Delivers one leased sink's events until it has caught up, its pass is over, or one fails.
    async fn run(&self, claimed: Claimed) -> sqlx::Result<()> {
        let sink = &claimed.sink;
        let Some(target) = self.target(&claimed) else {
            return Ok(());
        };
        let started = Instant::now();
        let mut cursor = sink.cursor;
        let mut attempts = sink.attempts;
        let feed = *self.head.watch().borrow();
        if cursor < feed.pruned_through {
            // Retention removed events this sink never delivered: it stops, and says so.
            tracing::warn!(sink = %sink.id, cursor, oldest = feed.pruned_through,
                "a push sink fell behind the feed's retention; it stops until replayed");
            store::failed(
                &self.pool,
                sink.id,
                self.owner,
                cursor,
                attempts,
                Utc::now(),
                "expired",
                true,
                &[],
            )
            .await?;
            return Ok(());
        }
        loop {
            self.give_way().await;
            // The head before the page: when nothing up to it matches, the cursor may move there.
            // (The sequencer publishes it after its commit: every position up to it is readable.)
            let seen = self.head.watch().borrow().position;
            let page = crate::feed::read_after(&self.pool, cursor, &sink.topics, PAGE).await?;
            let full = page.len() as i64 == PAGE;
            let mut log = Vec::with_capacity(page.len());
            let outcomes = target.send_page(&page, self.settings.body_cap).await;
            let (delivered, failed_attempts) = match sink.kind {
                Kind::Webhook => (
                    &self.stats.webhook_delivered,
                    &self.stats.webhook_failed_attempts,
                ),
                Kind::Nats => (&self.stats.nats_delivered, &self.stats.nats_failed_attempts),
            };
            for (event, (outcome, took)) in page.iter().zip(outcomes) {
                attempts += 1;
                record(
                    &mut log,
                    Attempt {
                        position: event.position,
                        through: event.position,
                        events: 1,
                        attempt: attempts,
                        status_code: outcome.status_code,
                        error: outcome.result.err().unwrap_or(""),
                        duration_ms: i32::try_from(took.as_millis()).unwrap_or(i32::MAX),
                    },
                );
                match outcome.result {
                    Ok(()) => {
                        delivered.fetch_add(1, Ordering::Relaxed);
                        cursor = event.position;
                        attempts = 0;
                    }
                    Err(failure) => {
                        failed_attempts.fetch_add(1, Ordering::Relaxed);
                        return self
                            .fail(
                                sink.kind,
                                sink.id,
                                cursor,
                                attempts,
                                event,
                                failure,
                                outcome.status_code,
                                &log,
                            )
                            .await;
                    }
                }
            }
            if !full {
                cursor = cursor.max(seen);
            }
            let done = !full || started.elapsed() >= PASS;
            let keep = (!done).then_some(self.settings.lease);
            if !store::checkpoint(&self.pool, sink.id, self.owner, cursor, keep, &log).await? {
                tracing::warn!(sink = %sink.id, "a push sink's lease was taken over; letting it go");
                return Ok(());
            }
            if done {
                tracing::debug!(sink = %sink.id, cursor, took_us = started.elapsed().as_micros() as u64, "push pass done");
                return Ok(());
            }
        }
    }

    /// Ingest first: while more than [`BUSY`] call events wait for their commit on this instance
    /// (the database is the bottleneck), a page waits for them to drain, up to [`GIVE_WAY`]. A
    /// sink still gets a page every [`GIVE_WAY`] (200 events a second at least), so delivery falls
    /// behind while call events saturate the database and catches up once they let go.
    async fn give_way(&self) {
        let until = Instant::now() + GIVE_WAY;
        while self.ingest.waiting() > BUSY && Instant::now() < until {
            tokio::time::sleep(GIVE_WAY_STEP).await;
        }
    }

    /// An attempt failed: the next is scheduled, or the sink turns FAILING (attempts or age ran
    /// out), with a warning naming the sink, the event and why (never the URL or the answer).
    #[allow(clippy::too_many_arguments)]
    async fn fail(
        &self,
        kind: Kind,
        sink: Uuid,
        cursor: i64,
        attempts: i32,
        event: &StoredEvent,
        failure: Failure,
        status_code: i32,
        log: &[Attempt],
    ) -> sqlx::Result<()> {
        let settings = &self.settings;
        let waited = (Utc::now() - event.occurred_at)
            .to_std()
            .unwrap_or_default();
        // A webhook gives up (its receiver may be gone for good); the NATS sink waits out a
        // broker outage, retrying at the longest back-off.
        let give_up = kind == Kind::Webhook
            && (attempts >= i32::try_from(settings.max_attempts).unwrap_or(i32::MAX)
                || waited >= settings.max_age);
        let jitter = rand::random_range(0.5..=1.0);
        let delay = settings.backoff(u32::try_from(attempts).unwrap_or(u32::MAX), jitter);
        let next = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        let error = if failure == "status" {
            format!("status {status_code}")
        } else {
            failure.to_owned()
        };
        if give_up {
            self.turned_failing.store(true, Ordering::Relaxed);
            tracing::warn!(%sink, cursor = event.position, attempts, error,
                "a push sink is FAILING and stopped; ReplayWebhook resumes it");
        } else {
            tracing::debug!(%sink, cursor = event.position, attempts, error, ?delay,
                "a push attempt failed; retrying");
        }
        store::failed(
            &self.pool, sink, self.owner, cursor, attempts, next, &error, give_up, log,
        )
        .await?;
        Ok(())
    }

    /// Attempts older than a week go.
    async fn prune(&self) {
        let cutoff = Utc::now() - chrono::Duration::days(7);
        while let Ok(10_000) = store::prune_deliveries(&self.pool, cutoff, 10_000).await {}
    }

    /// The FAILING count, for the metrics.
    async fn count_failing(&self) {
        if let Ok(failing) = store::count_failing(&self.pool).await {
            self.stats.failing.store(failing, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_is_the_feed_event_and_the_id_its_cursor() {
        let event = StoredEvent {
            position: 42,
            topic: "case".into(),
            kind: "case.updated".into(),
            subject_id: "c-1".into(),
            customer_id: None,
            data_json: r#"{"status":"open"}"#.into(),
            occurred_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("time"),
        };
        let body: serde_json::Value = serde_json::from_slice(&payload(&event)).expect("JSON");
        assert_eq!(body["type"], "case.updated");
        assert_eq!(body["timestamp"], "2023-11-14T22:13:20.000000Z");
        assert_eq!(body["data"]["cursor"], "42");
        assert_eq!(body["data"]["details"]["status"], "open");
        assert_eq!(webhook_id(42), "sb_42");
        assert_eq!(nats_subject("case"), "switchboard.v1.case");
    }

    fn attempt(position: i64, attempt: i32, status_code: i32, error: &'static str) -> Attempt {
        Attempt {
            position,
            through: position,
            events: 1,
            attempt,
            status_code,
            error,
            duration_ms: i32::try_from(position).expect("small"),
        }
    }

    #[test]
    fn first_attempt_successes_with_one_status_log_as_one_run_and_the_rest_alone() {
        let mut log = Vec::new();
        for next in [
            attempt(3, 1, 204, ""),
            attempt(5, 1, 204, ""),
            attempt(9, 1, 204, ""),
            attempt(10, 1, 200, ""),
            attempt(11, 1, 500, "status"),
            attempt(11, 2, 204, ""),
            attempt(12, 1, 204, ""),
            attempt(13, 1, 204, ""),
        ] {
            record(&mut log, next);
        }
        let run = |position, through, events, status_code, duration_ms| Attempt {
            position,
            through,
            events,
            attempt: 1,
            status_code,
            error: "",
            duration_ms,
        };
        assert_eq!(
            log,
            vec![
                run(3, 9, 3, 204, 9),
                run(10, 10, 1, 200, 10),
                attempt(11, 1, 500, "status"),
                attempt(11, 2, 204, ""),
                run(12, 13, 2, 204, 13),
            ]
        );
    }
}

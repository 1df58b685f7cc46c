//! `switchboard-gateway`: the adapter between a Kamailio SIP server and Switchboard.
//!
//! It reads the SIP dialog events the shipped Kamailio configuration relays over `evapi`
//! (`integrations/kamailio/`), turns them into call events (`sip.rs` has the table), writes them to
//! a durable spool (`spool.rs`), and streams them to `CallEventService.StreamCallEvents`. An event
//! leaves the spool only when Switchboard acked it, so neither an adapter restart nor a Switchboard
//! outage loses one; the event ids make every resend harmless. One adapter per Kamailio; its only
//! state is the spool.
//!
//! Metrics (`--metrics-listen`, Prometheus text): `switchboard_gateway_spool_pending`,
//! `switchboard_gateway_spool_full` (1 while the spool is at capacity and Kamailio's events wait),
//! `switchboard_gateway_events_total{outcome}`, `switchboard_gateway_uplink_connected`.

mod evapi;
mod sip;
mod spool;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures::FutureExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use switchboard::client::BearerToken;
use switchboard::proto::v1;
use switchboard::proto::v1::call_event_service_client::CallEventServiceClient;

use crate::sip::{Mapping, SipEvent};
use crate::spool::Spool;

#[derive(Debug, Parser)]
#[command(about = "Kamailio (evapi) to Switchboard call events, through a durable spool")]
struct Args {
    /// Kamailio's evapi socket.
    #[arg(long, env = "GATEWAY_EVAPI", default_value = "127.0.0.1:8448")]
    evapi: String,
    /// The Switchboard server.
    #[arg(
        long,
        env = "SWITCHBOARD_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
    /// A GATEWAY credential for `--gateway-id` (an API key or a JWT).
    #[arg(long, env = "SWITCHBOARD_TOKEN", hide_env_values = true)]
    token: String,
    /// The gateway id the events are reported as.
    #[arg(long, env = "GATEWAY_ID")]
    gateway_id: String,
    /// JSON: `{"agents": {"<sip user>": "<agent id>"}, "queues": {"<dialed number>": "<queue>"}}`.
    #[arg(long, env = "GATEWAY_MAPPING")]
    mapping: Option<PathBuf>,
    /// The spool directory (create it on a disk that survives restarts).
    #[arg(long, env = "GATEWAY_SPOOL", default_value = "gateway-spool")]
    spool: PathBuf,
    /// Events the spool holds before Kamailio's events wait (back-pressure).
    #[arg(long, env = "GATEWAY_SPOOL_CAPACITY", default_value_t = 100_000)]
    spool_capacity: usize,
    /// Prometheus metrics (`GET /metrics`); empty: none.
    #[arg(long, env = "GATEWAY_METRICS_LISTEN", default_value = "")]
    metrics_listen: String,
}

#[derive(Default)]
struct Metrics {
    pending: AtomicI64,
    full: AtomicI64,
    connected: AtomicI64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    invalid: AtomicU64,
    duplicate_id: AtomicU64,
}

impl Metrics {
    /// The spool gauges, after anything that changed the spool.
    fn observe(&self, spool: &Spool) {
        self.pending.store(spool.len() as i64, Ordering::Relaxed);
        self.full
            .store(i64::from(spool.is_full()), Ordering::Relaxed);
    }

    fn text(&self) -> String {
        let g = |a: &AtomicI64| a.load(Ordering::Relaxed);
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "# TYPE switchboard_gateway_spool_pending gauge\nswitchboard_gateway_spool_pending {}\n\
             # TYPE switchboard_gateway_spool_full gauge\nswitchboard_gateway_spool_full {}\n\
             # TYPE switchboard_gateway_uplink_connected gauge\nswitchboard_gateway_uplink_connected {}\n\
             # TYPE switchboard_gateway_events_total counter\n\
             switchboard_gateway_events_total{{outcome=\"accepted\"}} {}\n\
             switchboard_gateway_events_total{{outcome=\"rejected\"}} {}\n\
             switchboard_gateway_events_total{{outcome=\"invalid\"}} {}\n\
             switchboard_gateway_events_total{{outcome=\"duplicate_id\"}} {}\n",
            g(&self.pending),
            g(&self.full),
            g(&self.connected),
            c(&self.accepted),
            c(&self.rejected),
            c(&self.invalid),
            c(&self.duplicate_id),
        )
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mapping: Mapping = match &args.mapping {
        Some(path) => serde_json::from_slice(
            &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("{} is not a mapping", path.display()))?,
        None => Mapping::default(),
    };
    let spool = Spool::open(&args.spool, args.spool_capacity)
        .with_context(|| format!("opening the spool in {}", args.spool.display()))?;
    tracing::info!(pending = spool.len(), "spool opened");
    let metrics = Arc::new(Metrics::default());
    if !args.metrics_listen.is_empty() {
        let listener = tokio::net::TcpListener::bind(&args.metrics_listen)
            .await
            .with_context(|| format!("metrics on {}", args.metrics_listen))?;
        tokio::spawn(serve_metrics(listener, Arc::clone(&metrics)));
    }
    let (events, incoming) = mpsc::channel(256);
    tokio::spawn(read_kamailio(
        args.evapi.clone(),
        args.gateway_id.clone(),
        mapping,
        events,
    ));
    uplink(&args, spool, incoming, &metrics).await
}

/// Reads Kamailio's evapi stream for ever (reconnecting), sending each message's call events on.
/// A full spool stops the reading: Kamailio's events wait in the socket.
async fn read_kamailio(
    address: String,
    gateway_id: String,
    mapping: Mapping,
    events: mpsc::Sender<Vec<v1::CallEvent>>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match tokio::net::TcpStream::connect(&address).await {
            Ok(mut socket) => {
                tracing::info!(%address, "reading Kamailio's evapi events");
                backoff = Duration::from_millis(200);
                let mut buffer = Vec::new();
                let mut chunk = vec![0_u8; 64 * 1024];
                loop {
                    let n = match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    buffer.extend_from_slice(&chunk[..n]);
                    let messages = match evapi::take_netstrings(&mut buffer) {
                        Ok(messages) => messages,
                        Err(error) => {
                            tracing::warn!(%error, "evapi stream out of step; reconnecting");
                            break;
                        }
                    };
                    for message in messages {
                        let event: SipEvent = match serde_json::from_slice(&message) {
                            Ok(event) => event,
                            Err(error) => {
                                tracing::warn!(%error, "an evapi message that is not a SIP event");
                                continue;
                            }
                        };
                        let calls = sip::call_events(&gateway_id, &event, &mapping);
                        if !calls.is_empty() && events.send(calls).await.is_err() {
                            return;
                        }
                    }
                }
                tracing::warn!(%address, "evapi connection closed; reconnecting");
            }
            Err(error) => tracing::warn!(%address, %error, "cannot reach Kamailio's evapi"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn request(event: &v1::CallEvent) -> v1::StreamCallEventsRequest {
    v1::StreamCallEventsRequest {
        event: Some(event.clone()),
    }
}

/// Streams the spool to Switchboard for ever: every pending event on (re)connect, then each new
/// one as it is spooled; an ack takes its event out of the spool. While Switchboard is away,
/// events keep being spooled.
async fn uplink(
    args: &Args,
    mut spool: Spool,
    mut incoming: mpsc::Receiver<Vec<v1::CallEvent>>,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let token = BearerToken::new(Some(&args.token))?;
    let endpoint = tonic::transport::Endpoint::from_shared(args.server.clone())
        .context("invalid --server")?
        .connect_timeout(Duration::from_secs(2));
    let mut backoff = Duration::from_millis(200);
    loop {
        metrics.observe(&spool);
        let connected = match endpoint.connect().await {
            Ok(channel) => {
                let mut client = CallEventServiceClient::with_interceptor(channel, token.clone());
                let (sender, outgoing) = mpsc::channel(1024);
                match client
                    .stream_call_events(ReceiverStream::new(outgoing))
                    .await
                {
                    Ok(response) => Some((sender, response.into_inner())),
                    Err(status) => {
                        tracing::warn!(code = ?status.code(), message = status.message(), "Switchboard refused the stream");
                        None
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, server = %args.server, "cannot reach Switchboard; spooling");
                None
            }
        };
        let Some((sender, mut acks)) = connected else {
            // Keep spooling while Switchboard is away, then try again.
            let retry = tokio::time::sleep(backoff);
            tokio::pin!(retry);
            loop {
                tokio::select! {
                    () = &mut retry => break,
                    Some(events) = incoming.recv(), if !spool.is_full() => {
                        let events = with_ready(events, &mut incoming);
                        spool_events(&mut spool, events, metrics)?;
                    }
                }
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            continue;
        };
        metrics.connected.store(1, Ordering::Relaxed);
        backoff = Duration::from_millis(200);
        // The spool position after the last event sent on this stream: everything before it went
        // out; the backlog goes as acks come back, at most STREAM_WINDOW unanswered at a time.
        let mut sent_upto = 0;
        let mut in_flight = 0;
        top_up(&spool, &sender, &mut sent_upto, &mut in_flight);
        tracing::info!(pending = spool.len(), "streaming to Switchboard");
        loop {
            tokio::select! {
                Some(events) = incoming.recv(), if !spool.is_full() => {
                    let events = with_ready(events, &mut incoming);
                    spool_events(&mut spool, events, metrics)?;
                    top_up(&spool, &sender, &mut sent_upto, &mut in_flight);
                }
                ack = acks.message() => match ack {
                    Ok(Some(first)) => {
                        // Every ack already here goes in one write.
                        let mut ready = vec![first];
                        while let Some(Ok(Some(next))) = acks.message().now_or_never() {
                            ready.push(next);
                        }
                        settle(
                            &mut spool,
                            ready.into_iter().filter_map(|r| r.ack).collect(),
                            (&mut sent_upto, &mut in_flight),
                            metrics,
                        )?;
                        top_up(&spool, &sender, &mut sent_upto, &mut in_flight);
                    }
                    Ok(None) => {
                        tracing::warn!("Switchboard ended the stream; reconnecting");
                        break;
                    }
                    Err(status) => {
                        tracing::warn!(code = ?status.code(), message = status.message(), "the stream failed; reconnecting");
                        break;
                    }
                },
            }
        }
        metrics.connected.store(0, Ordering::Relaxed);
    }
}

/// `first` and every batch already waiting behind it (at most 64 batches): one fsync for all of
/// them, which is what lets the adapter keep up with Kamailio at hundreds of calls a second.
fn with_ready(
    mut first: Vec<v1::CallEvent>,
    incoming: &mut mpsc::Receiver<Vec<v1::CallEvent>>,
) -> Vec<v1::CallEvent> {
    for _ in 0..64 {
        match incoming.try_recv() {
            Ok(more) => first.extend(more),
            Err(_) => break,
        }
    }
    first
}

/// Spools events taken from Kamailio. The callers take events only while the spool is below
/// capacity, so it never refuses them; an I/O error stops the adapter (nothing may be acked to
/// Kamailio's side of the story that is not on disk).
fn spool_events(
    spool: &mut Spool,
    events: Vec<v1::CallEvent>,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    spool
        .push(events)
        .context("the spool cannot be written: stopping")?;
    metrics.observe(spool);
    Ok(())
}

/// Takes a stream's acks: an answered event leaves the spool, except one answered RESEND (not
/// stored), which is sent again from its place: `sent` (the position after the last event sent,
/// and how many are unanswered) goes back to it. An event sent twice has one effect and the
/// same ack, so the events after it that go again are harmless.
fn settle(
    spool: &mut Spool,
    acks: Vec<v1::CallEventAck>,
    sent: (&mut u64, &mut usize),
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let (sent_upto, in_flight) = sent;
    *in_flight = in_flight.saturating_sub(acks.len());
    let (resend, acked): (Vec<_>, Vec<_>) = acks
        .into_iter()
        .partition(|a| a.outcome() == v1::AckOutcome::Resend);
    for ack in &acked {
        count(metrics, ack);
    }
    spool.ack(acked.iter().map(|a| a.event_id.as_str()))?;
    if let Some(from) = resend
        .iter()
        .filter_map(|a| spool.position(&a.event_id))
        .min()
    {
        tracing::info!(events = resend.len(), "Switchboard asked for events again");
        *sent_upto = (*sent_upto).min(from);
    }
    metrics.observe(spool);
    Ok(())
}

/// Events unanswered on the stream at once: a quarter of what a Switchboard instance holds open
/// across its streams (1,024, `StreamCallEvents`), so that a few adapters on one instance are not
/// answered RESEND in the normal run of things, and an adapter's backlog after an outage goes as
/// fast as acks come back rather than all at once.
const STREAM_WINDOW: usize = 256;

/// Sends the pending events not sent on this stream yet (from `sent_upto` on), oldest first,
/// while fewer than [`STREAM_WINDOW`] are unanswered and the channel has room. Only the new ones
/// are looked at: no rescan of the backlog.
fn top_up(
    spool: &Spool,
    sender: &mpsc::Sender<v1::StreamCallEventsRequest>,
    sent_upto: &mut u64,
    in_flight: &mut usize,
) {
    for (position, event) in spool.pending_from(*sent_upto) {
        if *in_flight >= STREAM_WINDOW || sender.try_send(request(event)).is_err() {
            return;
        }
        *in_flight += 1;
        *sent_upto = position + 1;
    }
}

fn count(metrics: &Metrics, ack: &v1::CallEventAck) {
    let counter = match ack.outcome() {
        v1::AckOutcome::Accepted => &metrics.accepted,
        v1::AckOutcome::Rejected => &metrics.rejected,
        v1::AckOutcome::DuplicateId => &metrics.duplicate_id,
        _ => &metrics.invalid,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    if ack.outcome() != v1::AckOutcome::Accepted {
        tracing::warn!(event_id = %ack.event_id, outcome = ?ack.outcome(), reason = %ack.reason, "event not applied");
    }
}

async fn serve_metrics(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    while let Ok((mut socket, _)) = listener.accept().await {
        let body = metrics.text();
        let mut request = [0_u8; 1024];
        let _ = socket.read(&mut request).await;
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = socket.write_all(response.as_bytes()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::tests::event;

    fn ack(id: &str, outcome: v1::AckOutcome) -> v1::CallEventAck {
        v1::CallEventAck {
            event_id: id.into(),
            outcome: outcome.into(),
            ..Default::default()
        }
    }

    fn sent(outgoing: &mut mpsc::Receiver<v1::StreamCallEventsRequest>) -> Vec<String> {
        std::iter::from_fn(|| outgoing.try_recv().ok())
            .filter_map(|r| r.event.map(|e| e.event_id))
            .collect()
    }

    #[test]
    fn an_event_answered_resend_stays_spooled_and_goes_again() {
        let dir = tempfile::tempdir().expect("dir");
        let mut spool = Spool::open(dir.path(), 10).expect("open");
        spool
            .push(vec![event("a"), event("b"), event("c"), event("d")])
            .expect("push");
        let (sender, mut outgoing) = mpsc::channel(16);
        let (mut sent_upto, mut in_flight) = (0, 0);
        top_up(&spool, &sender, &mut sent_upto, &mut in_flight);
        assert_eq!(sent(&mut outgoing), ["a", "b", "c", "d"]);
        assert_eq!(in_flight, 4);

        let metrics = Metrics::default();
        let acks = vec![
            ack("a", v1::AckOutcome::Accepted),
            ack("b", v1::AckOutcome::Resend),
            ack("d", v1::AckOutcome::Rejected),
        ];
        settle(&mut spool, acks, (&mut sent_upto, &mut in_flight), &metrics).expect("settle");
        let pending: Vec<String> = spool
            .pending_from(0)
            .map(|(_, e)| e.event_id.clone())
            .collect();
        assert_eq!(pending, ["b", "c"], "answered events leave, RESEND stays");
        assert_eq!(in_flight, 1, "c is still unanswered");
        assert_eq!(metrics.accepted.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.rejected.load(Ordering::Relaxed), 1);

        top_up(&spool, &sender, &mut sent_upto, &mut in_flight);
        assert_eq!(sent(&mut outgoing), ["b", "c"], "b goes again, c after it");
        assert_eq!(in_flight, 3);
    }

    #[test]
    fn the_stream_never_has_more_than_its_window_unanswered() {
        let dir = tempfile::tempdir().expect("dir");
        let mut spool = Spool::open(dir.path(), STREAM_WINDOW + 10).expect("open");
        spool
            .push(
                (0..STREAM_WINDOW + 10)
                    .map(|i| event(&format!("e{i}")))
                    .collect(),
            )
            .expect("push");
        let (sender, mut outgoing) = mpsc::channel(2 * STREAM_WINDOW);
        let (mut sent_upto, mut in_flight) = (0, 0);
        top_up(&spool, &sender, &mut sent_upto, &mut in_flight);
        assert_eq!(sent(&mut outgoing).len(), STREAM_WINDOW);
        let metrics = Metrics::default();
        settle(
            &mut spool,
            vec![ack("e0", v1::AckOutcome::Accepted)],
            (&mut sent_upto, &mut in_flight),
            &metrics,
        )
        .expect("settle");
        top_up(&spool, &sender, &mut sent_upto, &mut in_flight);
        let next = format!("e{STREAM_WINDOW}");
        assert_eq!(sent(&mut outgoing), [next], "one answered, one more goes");
    }
}

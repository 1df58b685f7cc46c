//! The audit trail: who read or changed customer data, and every denied request.
//!
//! The auth layer runs each handler inside an [`AuditContext`] (a tokio task-local: actor, role,
//! RPC, request id), so domain code records without threading the caller through every signature:
//! - writes call [`record_write`] inside their own transaction, so the audit row commits (or rolls
//!   back) with the write it describes;
//! - reads of customer data and denials go to the [`Auditor`], which batches them into PostgreSQL
//!   every 200 ms through a bounded queue and flushes on shutdown. Reads are summarized
//!   ([`summary`]): the reads of one customer by one principal through one RPC in one minute are one
//!   row with a count and the first and last times. Denials and writes are one row each.
//!
//! Code running outside a request (seeding, migrations) records nothing.

pub mod grpc;
mod store;
pub mod summary;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use self::summary::{Added, Summaries};
use crate::ids::CustomerId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditContext {
    pub actor: String,
    pub role: String,
    pub rpc: String,
    pub request_id: String,
}

tokio::task_local! {
    static CONTEXT: Arc<AuditContext>;
}

/// Runs `future` (a request's handler) with `context` as its audit context.
pub async fn scope<F: Future>(context: impl Into<Arc<AuditContext>>, future: F) -> F::Output {
    CONTEXT.scope(context.into(), future).await
}

/// The current request's context, if any: shared, so each audited read costs no string copies.
pub fn current() -> Option<Arc<AuditContext>> {
    CONTEXT.try_with(Arc::clone).ok()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// When it happened; for summarized reads, the first read.
    pub at: DateTime<Utc>,
    pub context: AuditContext,
    pub customer_id: Option<Uuid>,
    pub outcome: &'static str,
    /// How many reads the row stands for (1 for writes and denials).
    pub count: i32,
    /// The last read a summarized row counts, when it counts more than one.
    pub last_at: Option<DateTime<Utc>>,
}

/// Records, in the caller's transaction, that the current request wrote this customer's data.
pub async fn record_write(conn: &mut PgConnection, customer_id: CustomerId) -> sqlx::Result<()> {
    match current() {
        Some(context) => {
            store::insert(conn, &context, Some(customer_id.as_uuid()), "written").await
        }
        None => Ok(()),
    }
}

/// Records, in the caller's transaction, that the current request wrote these customers' data
/// (one statement for a bulk write such as an import).
pub async fn record_writes(
    conn: &mut PgConnection,
    customer_ids: impl IntoIterator<Item = CustomerId>,
) -> sqlx::Result<()> {
    let ids: Vec<Uuid> = customer_ids.into_iter().map(CustomerId::as_uuid).collect();
    match current() {
        Some(context) if !ids.is_empty() => {
            store::insert_many(conn, &context, &ids, "written").await
        }
        _ => Ok(()),
    }
}

/// Records a read in the caller's transaction rather than through the batching [`Auditor`], for
/// reads rare and weighty enough to be on the trail before their answer is (a privacy export).
pub async fn record_read(conn: &mut PgConnection, customer_id: Uuid) -> sqlx::Result<()> {
    match current() {
        Some(context) => store::insert(conn, &context, Some(customer_id), "read").await,
        None => Ok(()),
    }
}

/// Records, in the erasure's transaction, that the current request erased this customer.
pub async fn record_erasure(conn: &mut PgConnection, customer_id: Uuid) -> sqlx::Result<()> {
    match current() {
        Some(context) => store::insert(conn, &context, Some(customer_id), "erased").await,
        None => Ok(()),
    }
}

/// The whole trail of one customer, oldest first, for a privacy export.
pub async fn for_customer(
    conn: &mut PgConnection,
    customer_id: Uuid,
) -> sqlx::Result<Vec<AuditEvent>> {
    store::for_customer(conn, customer_id).await
}

enum Entry {
    Event(Row),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// An audit row to write as it is: a denial, or a read beyond the summaries' capacity.
pub(crate) struct Row {
    context: Arc<AuditContext>,
    customer: Option<Uuid>,
    outcome: &'static str,
    at: DateTime<Utc>,
}

/// Queues reads and denials for the batching writer.
///
/// The queue is bounded: while PostgreSQL is down, cached pops go on being served and audited,
/// and an unbounded queue would grow until the process ran out of memory (at 10,000 pops/s, about
/// 3 MB a second). Up to `max_pending` entries wait (about 330 bytes each, most of it the
/// request's context, which the entries of one request share); beyond that, new entries are
/// dropped, counted (`switchboard_audit_dropped_total`) and logged. A read counted in a summary
/// already open takes no room; a new summary holds its room until its row is written, and at most
/// `max_pending` summaries are open (beyond that a read is a row of its own).
#[derive(Clone)]
pub struct Auditor {
    tx: mpsc::UnboundedSender<Entry>,
    backlog: Arc<Backlog>,
    /// The open read summaries, shared with the writer.
    summaries: Arc<Mutex<Summaries>>,
}

/// The summaries' lock; a panic while holding it leaves counts that are still whole numbers.
fn lock(summaries: &Mutex<Summaries>) -> std::sync::MutexGuard<'_, Summaries> {
    summaries
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Entries queued or being written, and entries dropped for want of room.
#[derive(Debug)]
struct Backlog {
    pending: AtomicUsize,
    dropped: AtomicU64,
    max_pending: usize,
}

impl Backlog {
    /// Takes room for one entry, or counts it as dropped.
    fn admit(&self) -> bool {
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn written(&self, count: usize) {
        self.pending.fetch_sub(count, Ordering::AcqRel);
    }
}

impl Auditor {
    /// Starts the batching writer; it drains the queue and exits when `stop` fires. At most
    /// `max_pending` entries wait to be written.
    pub fn spawn(
        pool: PgPool,
        mut stop: watch::Receiver<bool>,
        max_pending: usize,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Entry>();
        let backlog = Arc::new(Backlog {
            pending: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            max_pending,
        });
        let writer_backlog = Arc::clone(&backlog);
        let summaries = Arc::new(Mutex::new(Summaries::new(max_pending.max(1))));
        let writer_summaries = Arc::clone(&summaries);
        let task = tokio::spawn(async move {
            let backlog = writer_backlog;
            let mut batch: Vec<Row> = Vec::new();
            let summaries = writer_summaries;
            let mut flushes = Vec::new();
            let mut stopping = false;
            let mut dropped_logged = 0;
            loop {
                let tick = tokio::time::sleep(Duration::from_millis(200));
                let mut received = Vec::new();
                tokio::select! {
                    entry = rx.recv() => match entry {
                        Some(entry) => received.push(entry),
                        None => stopping = true,
                    },
                    () = tick => {}
                    _ = stop.changed(), if !stopping => stopping = true,
                }
                while let Ok(entry) = rx.try_recv() {
                    received.push(entry);
                }
                for entry in received {
                    match entry {
                        Entry::Event(row) => batch.push(row),
                        Entry::Flush(done) => flushes.push(done),
                    }
                }
                let dropped = backlog.dropped.load(Ordering::Relaxed);
                if dropped != dropped_logged {
                    tracing::error!(
                        dropped_since_start = dropped,
                        max_pending = backlog.max_pending,
                        "audit entries dropped: the queue is full while PostgreSQL cannot take them"
                    );
                    dropped_logged = dropped;
                }
                // On failure (PostgreSQL down) everything is kept and retried at the next tick.
                // Counts are brought up to date once a minute is over, or now if someone waits.
                let all = stopping || !flushes.is_empty();
                let (fresh, moved) = {
                    let open = lock(&summaries);
                    (open.unwritten(), open.moved(Utc::now(), all))
                };
                if !batch.is_empty() || !fresh.is_empty() {
                    match store::insert_batch(&pool, &batch, &fresh).await {
                        Ok(ids) => {
                            backlog.written(batch.len() + fresh.len());
                            batch.clear();
                            lock(&summaries).inserted(&fresh, &ids);
                        }
                        Err(error) => {
                            tracing::warn!(%error, pending = batch.len() + fresh.len(), "audit batch not written yet")
                        }
                    }
                }
                if !moved.is_empty() {
                    match store::update_counts(&pool, &moved).await {
                        Ok(()) => lock(&summaries).updated(&moved),
                        Err(error) => {
                            tracing::warn!(%error, rows = moved.len(), "audit read counts not updated yet")
                        }
                    }
                }
                let settled = {
                    let mut open = lock(&summaries);
                    open.close(Utc::now());
                    open.settled()
                };
                if batch.is_empty() && settled {
                    for done in flushes.drain(..) {
                        done.send(()).ok();
                    }
                    if stopping {
                        return;
                    }
                }
            }
        });
        (
            Self {
                tx,
                backlog,
                summaries,
            },
            task,
        )
    }

    fn enqueue(&self, context: Arc<AuditContext>, customer: Option<Uuid>, outcome: &'static str) {
        let row = Row {
            context,
            customer,
            outcome,
            at: Utc::now(),
        };
        if self.backlog.admit() && self.tx.send(Entry::Event(row)).is_err() {
            self.backlog.written(1);
        }
    }

    /// Entries waiting to be written.
    pub fn pending(&self) -> usize {
        self.backlog.pending.load(Ordering::Acquire)
    }

    /// Gives up on every entry still waiting (shutdown's deadline has come while PostgreSQL
    /// cannot take them): counts them as dropped and returns how many there were, counting each
    /// read a summary holds that its row does not.
    pub fn abandon(&self) -> usize {
        let uncounted = lock(&self.summaries).uncounted();
        let lost = self.backlog.pending.swap(0, Ordering::AcqRel) + uncounted;
        self.backlog
            .dropped
            .fetch_add(lost as u64, Ordering::Relaxed);
        lost
    }

    /// Entries dropped since start because the queue was full, or abandoned at shutdown.
    pub fn dropped(&self) -> u64 {
        self.backlog.dropped.load(Ordering::Relaxed)
    }

    /// Records that the current request read these customers' data: counted in the summary of
    /// its principal, customer and minute, opened if need be (which takes room in the backlog).
    pub fn read(&self, customer_ids: impl IntoIterator<Item = Uuid>) {
        let Some(context) = current() else { return };
        let at = Utc::now();
        for id in customer_ids {
            let added = lock(&self.summaries).add(&context, id, at, || self.backlog.admit());
            if added == Added::Full {
                self.enqueue(Arc::clone(&context), Some(id), "read");
            }
        }
    }

    /// Records a denied request.
    pub fn denied(&self, context: AuditContext) {
        self.enqueue(Arc::new(context), None, "denied");
    }

    /// Waits until everything queued so far is written.
    pub async fn flush(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.tx.send(Entry::Flush(done)).is_ok() {
            wait.await.ok();
        }
    }
}

/// Reads the trail for `ListAuditEvents`.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub customer_id: Option<Uuid>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// The audit trail as `AuditService` reads it.
#[derive(Clone)]
pub struct AuditLog {
    /// Lists read a replica within the lag bound.
    reads: crate::read_replicas::Reads,
}

impl AuditLog {
    pub fn new(reads: crate::read_replicas::Reads) -> Self {
        Self { reads }
    }

    /// Events matching `filter`, newest first, before the event `before_id`, at most `limit`.
    pub async fn list(
        &self,
        filter: &AuditFilter,
        before_id: Option<i64>,
        limit: i64,
    ) -> sqlx::Result<Vec<(i64, AuditEvent)>> {
        self.reads
            .run(self.reads.behind(), |pool| async move {
                store::list(&pool, filter, before_id, limit).await
            })
            .await
    }
}

//! Call events sent by gateways and not yet answered: the calls context counts them (its
//! batcher), and webhook and NATS delivery read the count to give way to ingest while the
//! database cannot keep up. A leaf: it depends on no context.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The count, shared by the calls context (which keeps it) and delivery (which reads it).
#[derive(Clone, Debug, Default)]
pub struct IngestBacklog(Arc<AtomicUsize>);

impl IngestBacklog {
    /// Counts one call event until the returned guard drops (its ack sent, or its request gone).
    pub fn enter(&self) -> Waiting {
        self.0.fetch_add(1, Ordering::Relaxed);
        Waiting(Arc::clone(&self.0))
    }

    /// Call events waiting for their commit now.
    pub fn waiting(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// One call event counted in an [`IngestBacklog`].
#[derive(Debug)]
pub struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_counts_until_its_guard_drops() {
        let backlog = IngestBacklog::default();
        let first = backlog.enter();
        let second = backlog.clone().enter();
        assert_eq!(backlog.waiting(), 2);
        drop(first);
        assert_eq!(backlog.waiting(), 1);
        drop(second);
        assert_eq!(backlog.waiting(), 0);
    }
}

//! Read audits summarized: the reads of one customer by one principal (actor, role) through one
//! RPC in one calendar minute (UTC) become one row, with a count and the first and last times.
//!
//! The row is written at the first flush after its first read, so "who looked at this customer"
//! shows at once. Its count and last time are brought up to date once its minute is over (one
//! `UPDATE` for all the rows that moved), or at once when someone waits for a flush (or the
//! writer stops): a row is updated at most once, not at every flush, so a customer read many times
//! a minute costs one insert and one update. A summary is forgotten once its minute is over and its
//! row is current. So the trail stays complete and exact: every read is counted in exactly one row.
//! Denials and writes are never summarized.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::AuditContext;

/// Who read, for summarizing: the request's context compared without its request id.
#[derive(Clone, Debug)]
struct Principal(Arc<AuditContext>);

impl PartialEq for Principal {
    fn eq(&self, other: &Self) -> bool {
        self.0.actor == other.0.actor && self.0.role == other.0.role && self.0.rpc == other.0.rpc
    }
}

impl Eq for Principal {}

impl Hash for Principal {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.actor.hash(state);
        self.0.role.hash(state);
        self.0.rpc.hash(state);
    }
}

type Key = (Principal, Uuid, i64);

/// One summary row: the first read's context (and request id), the times, and the count.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub context: Arc<AuditContext>,
    pub customer: Uuid,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    pub count: i32,
    /// Its row, once written.
    pub row: Option<i64>,
    /// The count its row holds.
    pub written: i32,
}

/// A written summary row whose count must be brought up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub row: i64,
    /// Its first read: the row's `at`, which names its partition.
    pub first: DateTime<Utc>,
    pub count: i32,
    pub last: DateTime<Utc>,
}

/// What happened to a read handed to [`Summaries::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Counted in an open summary: nothing more to write for it.
    Merged,
    /// The first read of a new summary, whose row is still to be written.
    Opened,
    /// A new summary was needed and there was no room in the backlog: the read is dropped
    /// (and counted by whoever refused the room).
    Dropped,
    /// No room for another open summary: write the read as a row of its own.
    Full,
}

/// The open summaries, at most `capacity` of them.
#[derive(Debug)]
pub struct Summaries {
    open: HashMap<Key, Summary>,
    capacity: usize,
}

fn minute(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(60)
}

impl Summaries {
    pub fn new(capacity: usize) -> Self {
        Self {
            open: HashMap::new(),
            capacity,
        }
    }

    /// Counts a read. A new summary is opened only if `room` grants it a place in the backlog.
    pub fn add(
        &mut self,
        context: &Arc<AuditContext>,
        customer: Uuid,
        at: DateTime<Utc>,
        room: impl FnOnce() -> bool,
    ) -> Added {
        let key = (Principal(Arc::clone(context)), customer, minute(at));
        if let Some(summary) = self.open.get_mut(&key) {
            summary.count = summary.count.saturating_add(1);
            summary.last = summary.last.max(at);
            summary.first = summary.first.min(at);
            return Added::Merged;
        }
        if self.open.len() >= self.capacity {
            return Added::Full;
        }
        if !room() {
            return Added::Dropped;
        }
        self.open.insert(
            key,
            Summary {
                context: Arc::clone(context),
                customer,
                first: at,
                last: at,
                count: 1,
                row: None,
                written: 0,
            },
        );
        Added::Opened
    }

    /// Summaries without a row yet, oldest first (so rows are numbered in the order of reads).
    pub fn unwritten(&self) -> Vec<Summary> {
        let mut fresh: Vec<Summary> = self
            .open
            .values()
            .filter(|s| s.row.is_none())
            .cloned()
            .collect();
        fresh.sort_by_key(|s| s.first);
        fresh
    }

    /// Rows whose count has moved since they were written. Only those of minutes before `now`'s,
    /// unless `all`.
    pub fn moved(&self, now: DateTime<Utc>, all: bool) -> Vec<Moved> {
        let current = minute(now);
        self.open
            .iter()
            .filter(|((_, _, m), _)| all || *m < current)
            .filter(|(_, s)| s.count != s.written)
            .filter_map(|(_, s)| {
                Some(Moved {
                    row: s.row?,
                    first: s.first,
                    count: s.count,
                    last: s.last,
                })
            })
            .collect()
    }

    /// Notes that these summaries' rows were written with these ids (in [`Self::unwritten`]'s order).
    pub fn inserted(&mut self, written: &[Summary], ids: &[i64]) {
        for (summary, id) in written.iter().zip(ids) {
            let key = (
                Principal(Arc::clone(&summary.context)),
                summary.customer,
                minute(summary.first),
            );
            if let Some(open) = self.open.get_mut(&key) {
                open.row = Some(*id);
                open.written = summary.count;
            }
        }
    }

    /// Notes that these rows now hold these counts.
    pub fn updated(&mut self, rows: &[Moved]) {
        let counts: HashMap<i64, i32> = rows.iter().map(|m| (m.row, m.count)).collect();
        for summary in self.open.values_mut() {
            if let Some(count) = summary.row.and_then(|id| counts.get(&id)) {
                summary.written = *count;
            }
        }
    }

    /// Forgets the summaries of minutes before `now`'s whose rows are current.
    pub fn close(&mut self, now: DateTime<Utc>) {
        let current = minute(now);
        self.open
            .retain(|(_, _, m), s| *m >= current || s.row.is_none() || s.written != s.count);
    }

    /// Whether every read so far is in a written, current row.
    pub fn settled(&self) -> bool {
        self.open
            .values()
            .all(|s| s.row.is_some() && s.written == s.count)
    }

    /// Reads held here beyond one per summary still to be written: the reads that would be lost
    /// with the summaries (each unwritten summary's first read is counted by the backlog).
    pub fn uncounted(&self) -> usize {
        self.open
            .values()
            .map(|s| match s.row {
                None => s.count - 1,
                Some(_) => s.count - s.written,
            })
            .map(|n| usize::try_from(n).unwrap_or(0))
            .sum()
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(actor: &str, rpc: &str, request: &str) -> Arc<AuditContext> {
        Arc::new(AuditContext {
            actor: actor.into(),
            role: "agent".into(),
            rpc: rpc.into(),
            request_id: request.into(),
        })
    }

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("time")
    }

    #[test]
    fn reads_of_one_customer_by_one_principal_in_one_minute_make_one_row() {
        let mut s = Summaries::new(10);
        let ada = Uuid::from_u128(1);
        let bob = Uuid::from_u128(2);
        let a1 = context("a-1", "/Lookup", "r1");
        let a1_again = context("a-1", "/Lookup", "r2");
        let a2 = context("a-2", "/Lookup", "r3");
        let a1_get = context("a-1", "/GetCustomer", "r4");
        assert_eq!(
            s.add(&a1, ada, at("2026-12-07T10:00:05Z"), || true),
            Added::Opened
        );
        assert_eq!(
            s.add(&a1_again, ada, at("2026-12-07T10:00:50Z"), || true),
            Added::Merged
        );
        assert_eq!(
            s.add(&a1, bob, at("2026-12-07T10:00:51Z"), || true),
            Added::Opened
        );
        assert_eq!(
            s.add(&a2, ada, at("2026-12-07T10:00:52Z"), || true),
            Added::Opened
        );
        assert_eq!(
            s.add(&a1_get, ada, at("2026-12-07T10:00:53Z"), || true),
            Added::Opened
        );
        assert_eq!(
            s.add(&a1, ada, at("2026-12-07T10:01:00Z"), || true),
            Added::Opened
        );
        assert_eq!(s.len(), 5);

        let rows = s.unwritten();
        let first = rows
            .iter()
            .find(|r| r.customer == ada && r.context.actor == "a-1" && r.context.rpc == "/Lookup")
            .filter(|r| r.first == at("2026-12-07T10:00:05Z"))
            .expect("the 10:00 summary");
        assert_eq!(
            (first.count, first.last, first.context.request_id.as_str()),
            (2, at("2026-12-07T10:00:50Z"), "r1")
        );

        let ids: Vec<i64> = (1..=5).collect();
        s.inserted(&rows, &ids);
        assert!(s.settled());
        assert!(s.moved(at("2026-12-07T10:01:30Z"), true).is_empty());

        // A read after the row was written moves its count; the row is updated once the minute
        // is over (or when asked to), then current.
        assert_eq!(
            s.add(&a1, ada, at("2026-12-07T10:00:59Z"), || true),
            Added::Merged
        );
        assert!(s.moved(at("2026-12-07T10:00:59Z"), false).is_empty());
        assert_eq!(s.moved(at("2026-12-07T10:00:59Z"), true).len(), 1);
        assert_eq!(
            s.uncounted(),
            1,
            "the read the written row does not count yet"
        );
        let moved = s.moved(at("2026-12-07T10:01:00Z"), false);
        assert_eq!(moved.len(), 1);
        assert_eq!(
            (moved[0].count, moved[0].last),
            (3, at("2026-12-07T10:00:59Z"))
        );
        assert!(!s.settled());
        // Once the minute is over, current rows are forgotten, but not one whose row is behind.
        s.close(at("2026-12-07T10:01:30Z"));
        assert_eq!(s.len(), 2, "the one behind and the 10:01 summary");
        s.updated(&moved);
        assert!(s.settled());
        s.close(at("2026-12-07T10:01:30Z"));
        assert_eq!(s.len(), 1, "only the 10:01 summary stays open");
    }

    #[test]
    fn beyond_capacity_a_read_is_a_row_of_its_own() {
        let mut s = Summaries::new(1);
        let a1 = context("a-1", "/Lookup", "r1");
        let now = at("2026-12-07T10:00:05Z");
        assert_eq!(s.add(&a1, Uuid::from_u128(1), now, || true), Added::Opened);
        assert_eq!(s.add(&a1, Uuid::from_u128(2), now, || true), Added::Full);
        assert_eq!(s.add(&a1, Uuid::from_u128(1), now, || true), Added::Merged);
        // A summary to open with no room in the backlog: the read is dropped.
        let mut s = Summaries::new(5);
        assert_eq!(
            s.add(&a1, Uuid::from_u128(3), now, || false),
            Added::Dropped
        );
        assert!(s.is_empty());
    }
}

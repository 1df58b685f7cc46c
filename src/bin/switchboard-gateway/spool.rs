//! The adapter's durable spool: every call event is written here, and fsynced, before it is sent;
//! it leaves only when Switchboard acked it. An adapter killed at any point, or a Switchboard that
//! is down for a while, loses nothing: on start the spool hands back every event not acked yet,
//! which is resent (event ids make the resend harmless).
//!
//! Two append-only files in the spool directory:
//! - `events.log`: one line per event, `base64(protobuf CallEvent)`
//! - `acked.log`: one line per acked event id (not fsynced: a lost ack only resends its event)
//!
//! A line cut short by a crash is ignored (its event was never acked, and the writer had not
//! returned, so nobody was told it was safe). When nothing is pending at start, both files are
//! emptied. The spool is bounded: at `capacity` pending events it refuses more, and the caller
//! stops reading from Kamailio until acks make room (back-pressure).

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use prost::Message as _;
use switchboard::proto::v1;

pub struct Spool {
    events: File,
    acked: File,
    /// Pending events in the order they were spooled.
    pending: BTreeMap<u64, v1::CallEvent>,
    by_id: HashMap<String, u64>,
    next: u64,
    capacity: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool holds {0} events not acked yet, its capacity")]
    Full(usize),
    #[error("spool I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Cuts a line a crash left unfinished off the end of `path`, so that the next append starts on
/// a line of its own.
fn drop_torn_tail(path: &Path) -> std::io::Result<()> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if bytes.last().is_some_and(|b| *b != b'\n') {
        let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(keep as u64)?;
        file.sync_all()?;
    }
    Ok(())
}

fn lines(path: &Path) -> std::io::Result<Vec<String>> {
    match File::open(path) {
        Ok(file) => BufReader::new(file).lines().collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, with what was pending when it last stopped.
    pub fn open(dir: &Path, capacity: usize) -> Result<Self, SpoolError> {
        std::fs::create_dir_all(dir)?;
        // The events carry callers' numbers: the spool is its owner's alone.
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let events_path = dir.join("events.log");
        let acked_path = dir.join("acked.log");
        drop_torn_tail(&events_path)?;
        drop_torn_tail(&acked_path)?;
        let acked: std::collections::HashSet<String> = lines(&acked_path)?.into_iter().collect();
        let mut pending = BTreeMap::new();
        let mut by_id = HashMap::new();
        let mut next = 0;
        for line in lines(&events_path)? {
            let Some(event) = STANDARD_NO_PAD
                .decode(line.trim())
                .ok()
                .and_then(|bytes| v1::CallEvent::decode(bytes.as_slice()).ok())
            else {
                continue;
            };
            if acked.contains(&event.event_id) || by_id.contains_key(&event.event_id) {
                continue;
            }
            by_id.insert(event.event_id.clone(), next);
            pending.insert(next, event);
            next += 1;
        }
        let open = |path: &PathBuf, truncate: bool| {
            OpenOptions::new()
                .create(true)
                .append(!truncate)
                .write(true)
                .truncate(truncate)
                .open(path)
        };
        // Nothing pending: start both files afresh. Otherwise keep appending; a restart with
        // nothing pending compacts them.
        let fresh = pending.is_empty();
        let spool = Self {
            events: open(&events_path, fresh)?,
            acked: open(&acked_path, fresh)?,
            pending,
            by_id,
            next,
            capacity,
        };
        if fresh {
            spool.events.sync_all()?;
            spool.acked.sync_all()?;
        }
        Ok(spool)
    }

    /// Writes `events` durably (one fsync for all); an event already pending is not spooled twice.
    /// Refused when the spool is already at capacity; a batch taken below capacity is taken whole
    /// (one SIP message's events stay together).
    pub fn push(&mut self, events: Vec<v1::CallEvent>) -> Result<(), SpoolError> {
        if self.is_full() {
            return Err(SpoolError::Full(self.pending.len()));
        }
        let mut text = String::new();
        let mut added = Vec::new();
        for event in events {
            if self.by_id.contains_key(&event.event_id) {
                continue;
            }
            text.push_str(&STANDARD_NO_PAD.encode(event.encode_to_vec()));
            text.push('\n');
            added.push(event);
        }
        self.events.write_all(text.as_bytes())?;
        self.events.sync_data()?;
        for event in added {
            self.by_id.insert(event.event_id.clone(), self.next);
            self.pending.insert(self.next, event);
            self.next += 1;
        }
        Ok(())
    }

    /// Marks events acked: they will not be sent again. Written, not fsynced: an ack that a crash
    /// loses only means the event is sent once more after the restart, which has no effect (its
    /// id was acked already), so the ack path costs no disk flush.
    pub fn ack<'a>(
        &mut self,
        event_ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), SpoolError> {
        let mut text = String::new();
        for event_id in event_ids {
            if let Some(n) = self.by_id.remove(event_id) {
                self.pending.remove(&n);
                text.push_str(event_id);
                text.push('\n');
            }
        }
        self.acked.write_all(text.as_bytes())?;
        Ok(())
    }

    /// Where a pending event is in the spool (None once acked, or never spooled).
    pub fn position(&self, event_id: &str) -> Option<u64> {
        self.by_id.get(event_id).copied()
    }

    /// Every pending event, oldest first.
    #[cfg(test)]
    pub fn pending(&self) -> impl Iterator<Item = &v1::CallEvent> {
        self.pending.values()
    }

    /// The pending events spooled at or after position `from`, oldest first, with their
    /// positions (a sender keeps the position after the last one it sent).
    pub fn pending_from(&self, from: u64) -> impl Iterator<Item = (u64, &v1::CallEvent)> {
        self.pending.range(from..).map(|(n, event)| (*n, event))
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_full(&self) -> bool {
        self.pending.len() >= self.capacity
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An event with only its identity: what the spool keys on.
    pub(crate) fn event(id: &str) -> v1::CallEvent {
        v1::CallEvent {
            gateway_id: "kam".into(),
            event_id: id.into(),
            call_id: "c".into(),
            ..Default::default()
        }
    }

    fn ids(spool: &Spool) -> Vec<String> {
        spool.pending().map(|e| e.event_id.clone()).collect()
    }

    #[test]
    fn what_was_not_acked_survives_a_restart_in_order_and_once() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let mut spool = Spool::open(dir.path(), 10).expect("open");
            spool
                .push(vec![event("a"), event("b"), event("c")])
                .expect("push");
            spool
                .push(vec![event("b")])
                .expect("a repeat is not spooled twice");
            spool.ack(["b"]).expect("ack");
        }
        let mut spool = Spool::open(dir.path(), 10).expect("reopen");
        assert_eq!(ids(&spool), ["a", "c"]);
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path())
                .expect("dir")
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o777,
                0o700,
                "callers' numbers are not for other users"
            );
        }
        spool.ack(["a"]).expect("ack");
        spool.ack(["c"]).expect("ack");
        drop(spool);
        let spool = Spool::open(dir.path(), 10).expect("reopen");
        assert!(ids(&spool).is_empty());
        // Nothing pending: the files start afresh.
        assert_eq!(
            std::fs::metadata(dir.path().join("events.log"))
                .expect("file")
                .len(),
            0
        );
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_a_full_spool_refuses_more() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let mut spool = Spool::open(dir.path(), 2).expect("open");
            spool.push(vec![event("a")]).expect("push");
        }
        let mut log = OpenOptions::new()
            .append(true)
            .open(dir.path().join("events.log"))
            .expect("log");
        log.write_all(b"Cg").expect("a line cut short by a crash");
        drop(log);
        let mut spool = Spool::open(dir.path(), 2).expect("reopen");
        assert_eq!(ids(&spool), ["a"]);
        spool.push(vec![event("b")]).expect("below capacity");
        drop(spool);
        // What was appended after the torn line is whole.
        let mut spool = Spool::open(dir.path(), 2).expect("reopen");
        assert_eq!(ids(&spool), ["a", "b"]);
        assert!(spool.is_full());
        assert!(matches!(
            spool.push(vec![event("c")]),
            Err(SpoolError::Full(2))
        ));
        spool.ack(["a"]).expect("ack");
        spool.push(vec![event("c")]).expect("room again");
        assert_eq!(ids(&spool), ["b", "c"]);
    }
}

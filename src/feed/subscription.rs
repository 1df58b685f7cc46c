//! One subscriber: replay from a cursor, then follow the head, with heartbeats while quiet.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::mpsc;

use super::store::{self, Head, StoredEvent};
use super::{FeedError, FeedHead, TOPICS};

/// While nothing matches for this long, a heartbeat carries the cursor forward.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// Events read per query while replaying.
const PAGE: i64 = 500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedItem {
    pub cursor: i64,
    /// `None`: a heartbeat.
    pub event: Option<StoredEvent>,
}

/// Where a subscription starts.
#[derive(Debug, Clone, Default)]
pub struct Start {
    pub after_cursor: String,
    pub topics: Vec<String>,
    pub from_latest: bool,
}

/// A cursor as a client sends it: a position, 0 or more.
pub fn parse_cursor(cursor: &str) -> Result<i64, FeedError> {
    cursor
        .parse::<i64>()
        .ok()
        .filter(|c| *c >= 0)
        .ok_or(FeedError::BadCursor)
}

/// Checks the request against the feed's head and starts the subscription's task. Items arrive
/// on the receiver until it is dropped, or an error (the last item) ends it.
pub async fn subscribe(
    pool: PgPool,
    head: FeedHead,
    start: Start,
) -> Result<mpsc::Receiver<Result<FeedItem, FeedError>>, FeedError> {
    if let Some(topic) = start.topics.iter().find(|t| !TOPICS.contains(&t.as_str())) {
        return Err(FeedError::UnknownTopic(topic.clone()));
    }
    let now = store::poll(&pool).await?.head;
    let cursor = match (start.after_cursor.as_str(), start.from_latest) {
        ("", true) => now.position,
        ("", false) => now.pruned_through,
        (cursor, _) => {
            let cursor = parse_cursor(cursor)?;
            check(cursor, now)?;
            cursor
        }
    };
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(follow(pool, head, start.topics, cursor, tx));
    Ok(rx)
}

fn check(cursor: i64, head: Head) -> Result<(), FeedError> {
    if cursor < head.pruned_through {
        return Err(FeedError::Expired {
            oldest: head.pruned_through,
        });
    }
    if cursor > head.position {
        return Err(FeedError::CursorAhead);
    }
    Ok(())
}

async fn follow(
    pool: PgPool,
    head: FeedHead,
    topics: Vec<String>,
    mut cursor: i64,
    tx: mpsc::Sender<Result<FeedItem, FeedError>>,
) {
    let mut changes = head.watch();
    let mut quiet_since = tokio::time::Instant::now();
    loop {
        // Read the head before the events: every position up to it was committed before the read.
        let seen = *changes.borrow_and_update();
        if cursor < seen.pruned_through {
            let oldest = seen.pruned_through;
            tx.send(Err(FeedError::Expired { oldest })).await.ok();
            return;
        }
        let page = match store::after(&pool, cursor, &topics, PAGE).await {
            Ok(page) => page,
            Err(error) => {
                tx.send(Err(error.into())).await.ok();
                return;
            }
        };
        let full = page.len() as i64 == PAGE;
        for event in page {
            cursor = event.position;
            let item = FeedItem {
                cursor,
                event: Some(event),
            };
            if tx.send(Ok(item)).await.is_err() {
                return;
            }
            quiet_since = tokio::time::Instant::now();
        }
        if full {
            continue;
        }
        // Nothing else up to `seen` matches the topics: the cursor may move up to it.
        cursor = cursor.max(seen.position);
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return; // the instance is stopping
                }
            }
            () = tokio::time::sleep_until(quiet_since + HEARTBEAT) => {
                if tx.send(Ok(FeedItem { cursor, event: None })).await.is_err() {
                    return;
                }
                quiet_since = tokio::time::Instant::now();
            }
            () = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_checked_against_retention_and_the_head() {
        let head = Head {
            position: 100,
            pruned_through: 40,
        };
        assert!(matches!(
            check(39, head),
            Err(FeedError::Expired { oldest: 40 })
        ));
        assert!(check(40, head).is_ok());
        assert!(check(100, head).is_ok());
        assert!(matches!(check(101, head), Err(FeedError::CursorAhead)));
        assert!(matches!(parse_cursor("-1"), Err(FeedError::BadCursor)));
        assert!(matches!(parse_cursor("12x"), Err(FeedError::BadCursor)));
        assert_eq!(parse_cursor("12").ok(), Some(12));
    }
}

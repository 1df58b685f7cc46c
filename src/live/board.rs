//! The hot copy of live calls and agents in Redis: a hash of calls per queue
//! (`live:calls:<queue>`, and `live:calls:` for calls in none), the set of those queues
//! (`live:queues`), and one hash of agents (`live:agents`; bounded by the staff, not the
//! traffic). Split per queue, no single key carries the whole board, and on a Redis Cluster the
//! queues spread over the shards.
//!
//! A call that moves to another queue is written to the new queue's hash; its entry in the old one
//! has a lower version, so readers keep the highest version of each call, and the next rebuild
//! removes the old entry. A queue is added to `live:queues` before its hash is first written, so a
//! reader never misses a hash that holds an entry (an instance remembers the queues it added;
//! every rebuild adds them all again, which repairs a set that Redis lost).
//!
//! An entry is `"<version> <state> <since ms> <rest>"` (rest: the queue of a call, the queues of
//! an agent separated by `\x1f`). Writes go through a script that keeps an entry only when its
//! version is higher than the stored one, so instances writing in any order converge on the
//! newest state. An ended call stays as a tombstone (state `ended` or `abandoned`) until the
//! rebuild removes it, so a late write of an older version cannot bring it back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::Script;

use super::{LiveAgent, LiveCall};
use crate::call_model::AgentState;
use crate::call_model::CallState;
use crate::redis_link::{RedisLink, RedisLinkError};

/// How long a tombstone outlives its call: longer than any write can be in flight.
const TOMBSTONE_TTL_MS: i64 = 60_000;
const QUEUE_SEPARATOR: char = '\u{1f}';
/// Entries per script call or `HSCAN` step.
const CHUNK: usize = 500;

/// A hash field to write through the versioned script: (field, version, entry).
type Entry<'a> = (&'a str, i64, String);

/// What Redis held before a rebuild read PostgreSQL.
pub struct Snapshot {
    pub calls: Vec<(String, String)>,
    pub agents: Vec<(String, String)>,
}

#[derive(Clone)]
pub struct Board {
    link: RedisLink,
    put_newer: Script,
    remove_unchanged: Script,
    /// Queues this instance has added to `live:queues`.
    registered: Arc<Mutex<HashSet<String>>>,
}

impl Board {
    pub fn new(link: RedisLink) -> Self {
        let put_newer = Script::new(
            r"
            local written = 0
            for i = 1, #ARGV, 3 do
                local old = redis.call('HGET', KEYS[1], ARGV[i])
                local old_version = old and tonumber(string.match(old, '^(%d+) '))
                if not old_version or old_version < tonumber(ARGV[i + 1]) then
                    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
                    written = written + 1
                end
            end
            return written
            ",
        );
        let remove_unchanged = Script::new(
            r"
            local removed = 0
            for i = 1, #ARGV, 2 do
                if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
                    removed = removed + redis.call('HDEL', KEYS[1], ARGV[i])
                end
            end
            return removed
            ",
        );
        Self {
            link,
            put_newer,
            remove_unchanged,
            registered: Arc::default(),
        }
    }

    fn calls_key(&self, queue: &str) -> String {
        self.link.key(&format!("live:calls:{queue}"))
    }

    fn queues_key(&self) -> String {
        self.link.key("live:queues")
    }

    fn agents_key(&self) -> String {
        self.link.key("live:agents")
    }

    /// Named apart from the single-hash board of earlier releases (`live:built`), so an instance
    /// of this release reads its board only once one of its own rebuilds filled it.
    fn built_key(&self) -> String {
        self.link.key("live:queues:built")
    }

    /// Writes `entries` of each key through the versioned script, a bounded chunk per call so
    /// Redis is never blocked for long, the keys' chunks all sent at once.
    async fn put(&self, entries: Vec<(String, Vec<Entry<'_>>)>) -> Result<(), RedisLinkError> {
        let invocations: Vec<_> = entries
            .iter()
            .flat_map(|(key, entries)| {
                entries.chunks(CHUNK).map(move |chunk| {
                    let mut invocation = self.put_newer.prepare_invoke();
                    invocation.key(key);
                    for (field, version, value) in chunk {
                        invocation.arg(*field).arg(*version).arg(value);
                    }
                    invocation
                })
            })
            .collect();
        self.run_all(invocations).await
    }

    /// Runs script invocations all at once (each on the shard of its key), under one timeout.
    async fn run_all(
        &self,
        invocations: Vec<redis::ScriptInvocation<'_>>,
    ) -> Result<(), RedisLinkError> {
        if invocations.is_empty() {
            return Ok(());
        }
        self.link
            .run(|conn| async move {
                let runs = invocations.into_iter().map(|invocation| {
                    let mut conn = conn.clone();
                    async move { invocation.invoke_async::<i64>(&mut conn).await }
                });
                futures::future::try_join_all(runs).await.map(|_| ())
            })
            .await
    }

    /// Adds `queues` to `live:queues`: those this instance has not added yet, or all when `forced`.
    pub async fn register_queues<'q>(
        &self,
        queues: impl IntoIterator<Item = &'q str>,
        forced: bool,
    ) -> Result<(), RedisLinkError> {
        let new: Vec<String> = {
            let registered = self.registered.lock().unwrap_or_else(|p| p.into_inner());
            queues
                .into_iter()
                .filter(|queue| forced || !registered.contains(*queue))
                .map(str::to_owned)
                .collect::<HashSet<_>>()
                .into_iter()
                .collect()
        };
        if new.is_empty() {
            return Ok(());
        }
        let key = self.queues_key();
        let members = new.clone();
        self.link
            .run(|mut conn| async move {
                redis::cmd("SADD")
                    .arg(&key)
                    .arg(&members)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await?;
        self.registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(new);
        Ok(())
    }

    pub async fn put_calls(&self, calls: &[LiveCall]) -> Result<(), RedisLinkError> {
        let mut by_queue: BTreeMap<&str, Vec<Entry<'_>>> = BTreeMap::new();
        for call in calls {
            by_queue
                .entry(call.queue.as_deref().unwrap_or(""))
                .or_default()
                .push((call.key.as_str(), call.version, call_entry(call)));
        }
        self.register_queues(by_queue.keys().copied(), false)
            .await?;
        let entries = by_queue
            .into_iter()
            .map(|(queue, entries)| (self.calls_key(queue), entries))
            .collect();
        self.put(entries).await
    }

    pub async fn put_agents(&self, agents: &[LiveAgent]) -> Result<(), RedisLinkError> {
        let entries = agents
            .iter()
            .map(|agent| (agent.agent_id.as_str(), agent.version, agent_entry(agent)))
            .collect();
        self.put(vec![(self.agents_key(), entries)]).await
    }

    /// Every field of a hash, by `HSCAN` in bounded steps (never one long `HGETALL`).
    async fn scan(&self, key: String) -> Result<Vec<(String, String)>, RedisLinkError> {
        let mut entries = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let key = key.clone();
            let (next, page): (u64, Vec<(String, String)>) = self
                .link
                .run(|mut conn| async move {
                    redis::cmd("HSCAN")
                        .arg(&key)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(CHUNK)
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            entries.extend(page);
            if next == 0 {
                return Ok(entries);
            }
            cursor = next;
        }
    }

    /// The board, or `None` when no rebuild has filled it since Redis last lost its data. A call
    /// found in several queues' hashes (it moved) is read at its highest version.
    pub async fn read(&self) -> Result<Option<(Vec<LiveCall>, Vec<LiveAgent>)>, RedisLinkError> {
        if !self.is_built().await? {
            return Ok(None);
        }
        let snapshot = self.snapshot().await?;
        let mut newest: HashMap<String, LiveCall> = HashMap::new();
        for call in snapshot
            .calls
            .into_iter()
            .filter_map(|(key, value)| parse_call(key, &value))
        {
            match newest.get(&call.key) {
                Some(held) if held.version >= call.version => {}
                _ => {
                    newest.insert(call.key.clone(), call);
                }
            }
        }
        let calls = newest.into_values().collect();
        let agents = snapshot
            .agents
            .into_iter()
            .filter_map(|(id, value)| parse_agent(id, &value))
            .collect();
        Ok(Some((calls, agents)))
    }

    /// Whether a rebuild has filled the board since Redis last lost its data.
    pub async fn is_built(&self) -> Result<bool, RedisLinkError> {
        let built_key = self.built_key();
        self.link
            .run(|mut conn| async move {
                redis::cmd("EXISTS")
                    .arg(&built_key)
                    .query_async::<bool>(&mut conn)
                    .await
            })
            .await
    }

    /// Every entry of every queue's hash (a call that moved appears once per queue), and the agents.
    pub async fn snapshot(&self) -> Result<Snapshot, RedisLinkError> {
        let key = self.queues_key();
        let queues: Vec<String> = self
            .link
            .run(|mut conn| async move {
                redis::cmd("SMEMBERS")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let scans = queues.iter().map(|queue| self.scan(self.calls_key(queue)));
        let (calls, agents) = futures::try_join!(
            futures::future::try_join_all(scans),
            self.scan(self.agents_key())
        )?;
        Ok(Snapshot {
            calls: calls.into_iter().flatten().collect(),
            agents,
        })
    }

    /// Removes each `(call, entry)` from the hash of the entry's queue, if it still holds that entry.
    pub async fn remove_calls_if_unchanged(
        &self,
        gone: &[(String, String)],
    ) -> Result<(), RedisLinkError> {
        let mut by_queue: BTreeMap<String, Vec<&(String, String)>> = BTreeMap::new();
        for entry in gone {
            let queue = entry_queue(&entry.1).unwrap_or_default();
            by_queue.entry(queue).or_default().push(entry);
        }
        let invocations: Vec<_> = by_queue
            .iter()
            .flat_map(|(queue, entries)| {
                entries.chunks(CHUNK).map(move |chunk| {
                    let mut invocation = self.remove_unchanged.prepare_invoke();
                    invocation.key(self.calls_key(queue));
                    for (field, value) in chunk.iter().copied() {
                        invocation.arg(field).arg(value);
                    }
                    invocation
                })
            })
            .collect();
        self.run_all(invocations).await
    }

    /// Marks the copy as whole: reads may use it from now on.
    pub async fn mark_built(&self) -> Result<(), RedisLinkError> {
        let key = self.built_key();
        self.link
            .run(|mut conn| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(Utc::now().timestamp_millis())
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await
    }

    /// Gives up this instance's claim (after a failed rebuild), so the next attempt may go.
    pub async fn release_rebuild(&self) -> Result<(), RedisLinkError> {
        let key = self.link.key("live:rebuild");
        self.link
            .run(|mut conn| async move {
                redis::cmd("DEL")
                    .arg(&key)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await
    }

    /// Whether this instance should rebuild now: true for one instance per `period`, and always
    /// when `forced` (the claim is then taken over, so the others still skip their round).
    pub async fn claim_rebuild(
        &self,
        period: Duration,
        forced: bool,
    ) -> Result<bool, RedisLinkError> {
        let key = self.link.key("live:rebuild");
        let ttl = (period.as_millis() as u64).max(1);
        let claimed: Option<String> = self
            .link
            .run(|mut conn| async move {
                let mut set = redis::cmd("SET");
                set.arg(&key).arg(1);
                if !forced {
                    set.arg("NX");
                }
                set.arg("PX").arg(ttl).query_async(&mut conn).await
            })
            .await?;
        Ok(claimed.is_some())
    }
}

/// A call's entry as stored: `version state since last-event queue`.
pub fn call_entry(call: &LiveCall) -> String {
    format!(
        "{} {} {} {} {}",
        call.version,
        call.state.as_str(),
        call.since.timestamp_millis(),
        call.last_event_at.timestamp_millis(),
        call.queue.as_deref().unwrap_or("")
    )
}

/// An agent's entry as stored.
pub fn agent_entry(agent: &LiveAgent) -> String {
    let queues: Vec<&str> = agent.queues.iter().map(String::as_str).collect();
    format!(
        "{} {} {} {}",
        agent.version,
        agent.state.as_str(),
        agent.since.timestamp_millis(),
        queues.join(&QUEUE_SEPARATOR.to_string())
    )
}

/// Whether a rebuild may remove this entry of a call PostgreSQL no longer has as live: any live
/// entry (it ended while Redis was away), or a tombstone past its time.
pub fn removable(value: &str, now: DateTime<Utc>) -> bool {
    match parse_call(String::new(), value) {
        Some(call) if call.state.is_terminal() => {
            now.timestamp_millis() - call.since.timestamp_millis() > TOMBSTONE_TTL_MS
        }
        _ => true,
    }
}

/// The queue a call's entry names (`""`: none), or `None` for anything that is no entry.
pub fn entry_queue(value: &str) -> Option<String> {
    parse_call(String::new(), value).map(|call| call.queue.unwrap_or_default())
}

/// `version state since rest`, or `None` for anything else.
fn fields(value: &str) -> Option<(i64, &str, DateTime<Utc>, &str)> {
    let mut parts = value.splitn(4, ' ');
    let version = parts.next()?.parse().ok()?;
    let state = parts.next()?;
    let since = DateTime::from_timestamp_millis(parts.next()?.parse().ok()?)?;
    Some((version, state, since, parts.next().unwrap_or("")))
}

fn parse_call(key: String, value: &str) -> Option<LiveCall> {
    let (version, state, since, rest) = fields(value)?;
    // An entry written before the last event's time was stored has the queue right after
    // `since`; it reads as fresh until the next write or rebuild replaces it.
    let (last_event_at, queue) = match rest.split_once(' ') {
        Some((last, queue)) => match last.parse().ok().and_then(DateTime::from_timestamp_millis) {
            Some(last) => (last, queue),
            None => (Utc::now(), rest),
        },
        None => (Utc::now(), rest),
    };
    Some(LiveCall {
        key,
        version,
        state: CallState::parse(state)?,
        queue: (!queue.is_empty()).then(|| queue.to_owned()),
        since,
        last_event_at,
    })
}

fn parse_agent(agent_id: String, value: &str) -> Option<LiveAgent> {
    let (version, state, since, queues) = fields(value)?;
    Some(LiveAgent {
        agent_id,
        version,
        state: AgentState::parse(state)?,
        since,
        queues: queues
            .split(QUEUE_SEPARATOR)
            .filter(|q| !q.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_as_written() {
        let at = |ms| DateTime::from_timestamp_millis(ms).unwrap_or_default();
        let written = LiveCall {
            key: "g/1".into(),
            version: 7,
            state: CallState::Queued,
            queue: Some("sales east".into()),
            since: at(1_800_000_000_000),
            last_event_at: at(1_800_000_005_000),
        };
        assert_eq!(
            parse_call("g/1".into(), &call_entry(&written)),
            Some(written.clone())
        );
        let no_queue = LiveCall {
            queue: None,
            ..written.clone()
        };
        assert_eq!(
            parse_call("g/1".into(), &call_entry(&no_queue)),
            Some(no_queue)
        );
        // The entry before the last event's time was stored: the queue follows `since`.
        let call = parse_call("g/1".into(), "7 queued 1800000000000 sales east");
        assert_eq!(
            call.map(|c| (c.version, c.state, c.queue)),
            Some((7, CallState::Queued, Some("sales east".to_owned())))
        );
        let agent = parse_agent("a".into(), "3 busy 1800000000000 sales\u{1f}support");
        assert_eq!(
            agent.map(|a| a.queues),
            Some(vec!["sales".to_owned(), "support".to_owned()])
        );
        assert!(parse_call("g/1".into(), "x queued 1 q").is_none());
        assert!(parse_call("g/1".into(), "1 sleeping 1 q").is_none());
    }

    #[test]
    fn tombstones_stay_a_minute_and_live_entries_go_at_once() {
        let now = DateTime::from_timestamp_millis(1_800_000_100_000).unwrap_or_default();
        assert!(!removable("4 ended 1800000050000 sales", now));
        assert!(removable("4 ended 1800000000000 sales", now));
        assert!(removable("2 queued 1800000099000 sales", now));
    }
}

//! Live queue statistics: calls waiting, the longest wait and agents by state, per queue, for
//! wallboards and supervisors.
//!
//! The hot copy lives in Redis ([`board`]): every instance writes each call's and agent's state
//! there right after committing it, each entry tagged with a version (the call's accepted event
//! count, the agent's change counter) so a late or reordered write never overwrites a newer
//! one. PostgreSQL stays the truth: every few seconds one instance rebuilds the copy from it
//! ([`Live::reconcile`]), which repairs whatever a Redis outage or restart lost. Reads go to
//! Redis when the copy is known good, and to PostgreSQL otherwise (Redis down, or emptied and not
//! yet rebuilt): slower, never wrong.

mod board;
pub mod grpc;
mod store;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use self::board::Board;
use crate::call_model::AgentState;
use crate::call_model::CallState;
use crate::redis_link::RedisLink;

/// A call as the live statistics see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveCall {
    /// `gateway_id/call_id`.
    pub key: String,
    /// The call's accepted event count: higher is newer.
    pub version: i64,
    pub state: CallState,
    pub queue: Option<String>,
    /// Since when the caller waits (queue entry, or the offer); the end for an ended call.
    pub since: DateTime<Utc>,
    /// When its latest event occurred: a call with none for longer than the staleness bound is
    /// stale (a gateway that never sent its end), counted apart.
    pub last_event_at: DateTime<Utc>,
}

/// An agent as the live statistics see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveAgent {
    pub agent_id: String,
    /// The agent's change counter: higher is newer.
    pub version: i64,
    pub state: AgentState,
    pub since: DateTime<Utc>,
    pub queues: Vec<String>,
}

/// Agents per state, in the order of [`AgentState`]'s variants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentCounts {
    pub available: i32,
    pub busy: i32,
    pub after_call_work: i32,
    pub away: i32,
    pub offline: i32,
}

impl AgentCounts {
    fn add(&mut self, state: AgentState) {
        let count = match state {
            AgentState::Available => &mut self.available,
            AgentState::Busy => &mut self.busy,
            AgentState::AfterCallWork => &mut self.after_call_work,
            AgentState::Away => &mut self.away,
            AgentState::Offline => &mut self.offline,
        };
        *count += 1;
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStats {
    pub queue: String,
    /// Offered, queued or ringing an agent: not answered yet.
    pub calls_waiting: i32,
    /// When the longest-waiting caller started waiting.
    pub oldest_waiting_since: Option<DateTime<Utc>>,
    /// Connected or on hold.
    pub calls_in_service: i32,
    /// Not ended, with no event for longer than the staleness bound: neither waiting nor in
    /// service.
    pub calls_stale: i32,
    /// The agents who take this queue's calls (`AgentService.SetAgentQueues`), by state.
    pub agents: AgentCounts,
}

#[derive(Debug, Clone, PartialEq, Eq, Copy)]
pub enum Source {
    Redis,
    Database,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LiveStats {
    pub queues: Vec<QueueStats>,
    /// Every known agent, by state.
    pub agents: AgentCounts,
    pub source: Source,
}

/// Per queue, sorted by name. Without `only`, every queue with a call going or an agent assigned;
/// with it, exactly those queues (zeros for a quiet one). Calls with no queue yet (still in the
/// IVR) are in none.
pub fn queue_stats(
    calls: &[LiveCall],
    agents: &[LiveAgent],
    only: &[String],
    stale_before: DateTime<Utc>,
) -> LiveStats {
    let mut queues: BTreeMap<String, QueueStats> = only
        .iter()
        .map(|queue| {
            let stats = QueueStats {
                queue: queue.clone(),
                ..QueueStats::default()
            };
            (queue.clone(), stats)
        })
        .collect();
    for call in calls {
        let Some(stats) = call
            .queue
            .as_deref()
            .and_then(|queue| slot(&mut queues, only, queue))
        else {
            continue;
        };
        if !call.state.is_terminal() && call.last_event_at < stale_before {
            stats.calls_stale += 1;
            continue;
        }
        match call.state {
            CallState::Offered | CallState::Queued | CallState::Ringing => {
                stats.calls_waiting += 1;
                stats.oldest_waiting_since = Some(match stats.oldest_waiting_since {
                    Some(oldest) => oldest.min(call.since),
                    None => call.since,
                });
            }
            CallState::Connected | CallState::Held => stats.calls_in_service += 1,
            CallState::Ended | CallState::Abandoned => {}
        }
    }
    let mut all = AgentCounts::default();
    for agent in agents {
        all.add(agent.state);
        for queue in &agent.queues {
            if let Some(stats) = slot(&mut queues, only, queue) {
                stats.agents.add(agent.state);
            }
        }
    }
    LiveStats {
        queues: queues.into_values().collect(),
        agents: all,
        source: Source::Redis,
    }
}

/// The queue's statistics: always there without a filter, only for the named queues with one.
fn slot<'m>(
    queues: &'m mut BTreeMap<String, QueueStats>,
    only: &[String],
    queue: &str,
) -> Option<&'m mut QueueStats> {
    if !only.is_empty() {
        return queues.get_mut(queue);
    }
    Some(
        queues
            .entry(queue.to_owned())
            .or_insert_with(|| QueueStats {
                queue: queue.to_owned(),
                ..QueueStats::default()
            }),
    )
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

crate::db::from_sqlx!(LiveError);

/// Settings for the hot copy.
#[derive(Debug, Clone, Copy)]
pub struct LiveSettings {
    /// How often the copy in Redis is rebuilt from PostgreSQL (by one instance at a time).
    pub reconcile_every: Duration,
    /// A call with no event for this long (by the events' own times) is stale: counted apart,
    /// never as waiting (a gateway that never sent its end must not keep a caller waiting on the
    /// wallboard forever).
    pub stale_after: Duration,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            reconcile_every: Duration::from_secs(5),
            stale_after: Duration::from_secs(4 * 3600),
        }
    }
}

/// How soon a failed rebuild is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// What a rebuild attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebuild {
    Done,
    /// Another instance rebuilt within the period, or there is no Redis.
    NotMine,
    /// Redis failed on the way; the copy is as it was.
    RedisFailed,
}

#[derive(Clone)]
pub struct Live {
    pool: PgPool,
    /// `None` without Redis: every read goes to PostgreSQL.
    board: Option<Board>,
    settings: LiveSettings,
    /// A write to the copy failed on this instance since its last rebuild: rebuild at once.
    missed: Arc<AtomicBool>,
}

impl Live {
    pub fn new(pool: PgPool, link: Option<RedisLink>, settings: LiveSettings) -> Self {
        Self {
            pool,
            board: link.map(Board::new),
            settings,
            missed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Copies committed call states to Redis; a failure is logged and left to the next rebuild.
    pub async fn record_calls(&self, calls: &[LiveCall]) {
        let Some(board) = &self.board else { return };
        if let Err(error) = board.put_calls(calls).await {
            tracing::debug!(%error, "live call state not copied to Redis; the rebuild will");
            self.missed.store(true, Ordering::Relaxed);
        }
    }

    /// Copies an agent's committed state to Redis (read back from PostgreSQL, so the copy is
    /// whole and versioned); failures are left to the next rebuild.
    pub async fn record_agent(&self, agent_id: &str) {
        let Some(board) = &self.board else { return };
        let agent = match crate::db::acquire(&self.pool).await {
            Ok(mut conn) => store::agent(&mut conn, agent_id).await,
            Err(error) => Err(error),
        };
        match agent {
            Ok(Some(agent)) => {
                if let Err(error) = board.put_agents(&[agent]).await {
                    tracing::debug!(%error, "live agent state not copied to Redis; the rebuild will");
                    self.missed.store(true, Ordering::Relaxed);
                }
            }
            Ok(None) => {}
            Err(error) => tracing::debug!(%error, "live agent state not read back"),
        }
    }

    /// The statistics, from Redis when its copy is good, else from PostgreSQL.
    #[tracing::instrument(skip(self))]
    pub async fn stats(&self, only: &[String]) -> Result<LiveStats, LiveError> {
        if let Some(board) = &self.board {
            match board.read().await {
                Ok(Some((calls, agents))) => {
                    return Ok(queue_stats(&calls, &agents, only, self.stale_before()));
                }
                Ok(None) => tracing::debug!("live copy in Redis not built yet; reading PostgreSQL"),
                Err(error) => {
                    tracing::debug!(%error, "live copy in Redis unreadable; reading PostgreSQL")
                }
            }
        }
        let (calls, agents) = self.read_database().await?;
        Ok(LiveStats {
            source: Source::Database,
            ..queue_stats(&calls, &agents, only, self.stale_before())
        })
    }

    /// A call whose latest event is older than this is stale.
    fn stale_before(&self) -> DateTime<Utc> {
        Utc::now() - chrono::Duration::from_std(self.settings.stale_after).unwrap_or_default()
    }

    async fn read_database(&self) -> Result<(Vec<LiveCall>, Vec<LiveAgent>), LiveError> {
        let mut conn = crate::db::acquire(&self.pool).await?;
        let calls = store::live_calls(&mut conn).await?;
        let agents = store::agents(&mut conn).await?;
        Ok((calls, agents))
    }

    /// Rebuilds the Redis copy from PostgreSQL, when no other instance did within the period
    /// (or regardless, when `forced`). Says whether this instance rebuilt it, left it to another,
    /// or met a Redis failure.
    pub async fn reconcile(&self, forced: bool) -> Result<Rebuild, LiveError> {
        let Some(board) = &self.board else {
            return Ok(Rebuild::NotMine);
        };
        match board
            .claim_rebuild(self.settings.reconcile_every, forced)
            .await
        {
            Ok(true) => {}
            Ok(false) => return Ok(Rebuild::NotMine),
            Err(_) => return Ok(Rebuild::RedisFailed),
        }
        let rebuilt = self.rebuild(board).await;
        if !matches!(rebuilt, Ok(Rebuild::Done)) {
            // Let the next attempt (here or elsewhere) go at once rather than a period later.
            board.release_rebuild().await.ok();
        }
        rebuilt
    }

    async fn rebuild(&self, board: &Board) -> Result<Rebuild, LiveError> {
        // What Redis held before PostgreSQL is read: an entry there that PostgreSQL no longer has
        // as live ended before the read, and is removed unless it changed in between.
        let Ok(before) = board.snapshot().await else {
            return Ok(Rebuild::RedisFailed);
        };
        let (calls, agents) = self.read_database().await?;
        // Each live call's queue: an entry in another queue's hash is one it moved away from.
        let live: HashMap<&str, &str> = calls
            .iter()
            .map(|c| (c.key.as_str(), c.queue.as_deref().unwrap_or("")))
            .collect();
        let now = Utc::now();
        let gone: Vec<(String, String)> = before
            .calls
            .iter()
            .filter(|(key, value)| {
                live.get(key.as_str()).copied() != board::entry_queue(value).as_deref()
                    && board::removable(value, now)
            })
            .cloned()
            .collect();
        let queues: std::collections::BTreeSet<String> =
            live.values().map(|queue| (*queue).to_owned()).collect();
        // Only what Redis lacks or holds differently is written: rebuilding a copy that is
        // right writes nothing.
        let held_calls: HashMap<&str, &str> = before
            .calls
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let held_agents: HashMap<&str, &str> = before
            .agents
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let calls: Vec<LiveCall> = calls
            .into_iter()
            .filter(|c| {
                held_calls.get(c.key.as_str()).copied() != Some(board::call_entry(c).as_str())
            })
            .collect();
        let agents: Vec<LiveAgent> = agents
            .into_iter()
            .filter(|a| {
                held_agents.get(a.agent_id.as_str()).copied()
                    != Some(board::agent_entry(a).as_str())
            })
            .collect();
        let result = async {
            // Every live queue again, whatever this instance remembers adding: Redis may have
            // lost the set.
            board
                .register_queues(queues.iter().map(String::as_str), true)
                .await?;
            board.put_calls(&calls).await?;
            board.put_agents(&agents).await?;
            board.remove_calls_if_unchanged(&gone).await?;
            board.mark_built().await
        }
        .await;
        if let Err(error) = result {
            tracing::debug!(%error, "live copy not rebuilt; Redis unavailable");
            return Ok(Rebuild::RedisFailed);
        }
        Ok(Rebuild::Done)
    }

    /// Rebuilds the copy every `reconcile_every` until `stop` changes, and sooner when it needs
    /// it: within half a second of a failed write on this instance, a failed rebuild, or Redis
    /// losing the copy (its `live:built` mark gone). The period is only the safety net for what
    /// nothing noticed, so it can be long: a rebuild reads every live call from both stores.
    pub fn spawn_reconciler(
        &self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let Some(board) = this.board.clone() else {
                return;
            };
            let period = this.settings.reconcile_every;
            let mut next_round = tokio::time::Instant::now();
            loop {
                let now = tokio::time::Instant::now();
                let lost = !matches!(board.is_built().await, Ok(true));
                let forced = this.missed.swap(false, Ordering::Relaxed) || lost;
                if forced || now >= next_round {
                    match this.reconcile(forced).await {
                        Ok(Rebuild::Done | Rebuild::NotMine) => next_round = now + period,
                        Ok(Rebuild::RedisFailed) => this.missed.store(true, Ordering::Relaxed),
                        // PostgreSQL failed: retrying sooner would only add to its trouble.
                        Err(error) => {
                            tracing::warn!(%error, "live queue state rebuild failed");
                            next_round = now + period;
                            tokio::select! {
                                _ = tokio::time::sleep(period) => {}
                                _ = stop.changed() => return,
                            }
                        }
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(RETRY_AFTER.min(period)) => {}
                    _ = stop.changed() => return,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap_or_default()
    }

    fn call(key: &str, state: CallState, queue: Option<&str>, since: i64) -> LiveCall {
        LiveCall {
            key: key.to_owned(),
            version: 1,
            state,
            queue: queue.map(str::to_owned),
            since: at(since),
            last_event_at: at(since + 1),
        }
    }

    fn agent(id: &str, state: AgentState, queues: &[&str]) -> LiveAgent {
        LiveAgent {
            agent_id: id.to_owned(),
            version: 1,
            state,
            since: at(0),
            queues: queues.iter().map(|q| (*q).to_owned()).collect(),
        }
    }

    #[test]
    fn waiting_calls_longest_wait_and_agents_per_queue() {
        let calls = [
            call("g/1", CallState::Queued, Some("sales"), 30),
            call("g/2", CallState::Ringing, Some("sales"), 10),
            call("g/3", CallState::Connected, Some("sales"), 5),
            call("g/4", CallState::Held, Some("support"), 5),
            call("g/5", CallState::Offered, None, 1),
            call("g/6", CallState::Ended, Some("support"), 1),
        ];
        let agents = [
            agent("a1", AgentState::Available, &["sales", "support"]),
            agent("a2", AgentState::Busy, &["sales"]),
            agent("a3", AgentState::Away, &[]),
        ];
        let stats = queue_stats(&calls, &agents, &[], at(0));
        assert_eq!(stats.queues.len(), 2);
        let sales = &stats.queues[0];
        assert_eq!(sales.queue, "sales");
        assert_eq!(sales.calls_waiting, 2);
        assert_eq!(sales.oldest_waiting_since, Some(at(10)));
        assert_eq!(sales.calls_in_service, 1);
        assert_eq!((sales.agents.available, sales.agents.busy), (1, 1));
        let support = &stats.queues[1];
        assert_eq!(support.calls_waiting, 0);
        assert_eq!(support.oldest_waiting_since, None);
        assert_eq!(support.calls_in_service, 1);
        assert_eq!((support.agents.available, support.agents.busy), (1, 0));
        assert_eq!(
            (stats.agents.available, stats.agents.busy, stats.agents.away),
            (1, 1, 1)
        );
    }

    #[test]
    fn a_call_with_no_event_for_too_long_is_stale_not_waiting() {
        let mut stuck = call("g/1", CallState::Queued, Some("sales"), 0);
        stuck.last_event_at = at(5);
        let mut talking = call("g/2", CallState::Connected, Some("sales"), 0);
        talking.last_event_at = at(5);
        let fresh = call("g/3", CallState::Queued, Some("sales"), 100);
        let stats = queue_stats(&[stuck, talking, fresh], &[], &[], at(50));
        let sales = &stats.queues[0];
        assert_eq!(sales.calls_stale, 2);
        assert_eq!(sales.calls_waiting, 1);
        assert_eq!(
            sales.oldest_waiting_since,
            Some(at(100)),
            "not the stale one's"
        );
        assert_eq!(sales.calls_in_service, 0);
    }

    #[test]
    fn a_filter_gives_exactly_the_named_queues_even_quiet_ones() {
        let calls = [call("g/1", CallState::Queued, Some("sales"), 30)];
        let agents = [agent("a1", AgentState::Available, &["billing"])];
        let only = ["billing".to_owned(), "claims".to_owned()];
        let stats = queue_stats(&calls, &agents, &only, at(0));
        assert_eq!(stats.queues.len(), 2);
        assert_eq!(stats.queues[1].queue, "claims");
        assert_eq!(stats.queues[1].agents, AgentCounts::default());
        assert_eq!(stats.queues[0].queue, "billing");
        assert_eq!(stats.queues[0].calls_waiting, 0);
        assert_eq!(stats.queues[0].agents.available, 1);
    }
}

//! Agents: their availability state (with history, for occupancy) and the live stream of their
//! calls with screen pops, fed across instances through Redis pub/sub ([`crate::push`]).

pub mod grpc;
mod pops_shown;
mod store;
mod watch;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

pub use self::pops_shown::PopsShown;
pub use self::watch::{ActiveCalls, Watcher};
use crate::call_model::{AgentState, parse_agent_id};
pub use crate::ids::AgentId;
use crate::live::Live;
use crate::text_enum::text_enum;
use crate::validation::Violations;

text_enum!(KnownFrom {
    Desktop => "desktop",
    Directory => "directory",
    Gateway => "gateway",
});

/// An agent's directory entry, as an operator provisions it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provision {
    pub agent_id: String,
    pub display_name: String,
    pub team: String,
    pub queues: Vec<String>,
    pub extension: String,
    pub sip_user: String,
}

/// An agent as the directory lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEntry {
    pub provision: Provision,
    pub known_from: KnownFrom,
    pub provisioned_at: Option<DateTime<Utc>>,
    pub desktop_seen_at: Option<DateTime<Utc>>,
    pub state: AgentState,
}

/// Which agents [`Agents::list`] returns, and where the page starts.
#[derive(Debug, Clone, Default)]
pub struct AgentFilter {
    /// Only agents never provisioned and never on a softphone: known from gateway events alone.
    pub gateway_only: bool,
    pub team: Option<String>,
    /// The last agent id of the previous page.
    pub after: Option<String>,
    pub limit: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    pub state: AgentState,
    pub reason: String,
    pub since: DateTime<Utc>,
}

/// The agents a gateway's accepted call event named are made known in the event's transaction,
/// marked as known only from the gateway when Switchboard had never seen them (see
/// [`Agents::list`]); an agent known already is left as it is. The insert is a CTE of the
/// call-event batch's write.
pub(crate) use store::learn_from_gateway_sql;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Invalid(Violations),
    #[error("agent not found")]
    NotFound,
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

crate::db::from_sqlx!(AgentError);

#[derive(Clone)]
pub struct Agents {
    pool: PgPool,
    live: Live,
}

impl Agents {
    /// `live` gets each committed change for the live queue statistics.
    pub fn new(pool: PgPool, live: Live) -> Self {
        Self { pool, live }
    }

    /// Makes the agent known (it may then be named in call events).
    pub async fn ensure_known(&self, agent_id: &str) -> Result<(), AgentError> {
        store::ensure_known(&mut *crate::db::acquire(&self.pool).await?, agent_id).await?;
        Ok(())
    }

    /// Sets the state; the same state and reason again changes nothing.
    #[tracing::instrument(skip(self, reason))]
    pub async fn set_state(
        &self,
        agent_id: &str,
        state: AgentState,
        reason: &str,
    ) -> Result<StateChange, AgentError> {
        let reason = &*crate::card_data::mask(reason);
        let mut tx = crate::db::begin(&self.pool).await?;
        store::ensure_known(&mut tx, agent_id).await?;
        let current = store::lock_current(&mut tx, agent_id)
            .await?
            .ok_or(AgentError::NotFound)?;
        if current.state == state && current.reason == reason {
            return Ok(current);
        }
        let change = store::change_state(&mut tx, agent_id, state, reason).await?;
        tx.commit().await?;
        self.live.record_agent(agent_id).await;
        Ok(change)
    }

    /// Puts the agent in `team` ("" for none); an unknown agent becomes known.
    pub async fn set_team(&self, agent_id: &str, team: &str) -> Result<(), AgentError> {
        store::set_team(&mut *crate::db::acquire(&self.pool).await?, agent_id, team).await?;
        Ok(())
    }

    /// Sets the queues the agent takes calls from (for live queue statistics); an unknown agent
    /// becomes known. Returns the queues as stored: sorted, without duplicates.
    pub async fn set_queues(
        &self,
        agent_id: &str,
        queues: &[String],
    ) -> Result<Vec<String>, AgentError> {
        let stored = store::set_queues(
            &mut *crate::db::acquire(&self.pool).await?,
            agent_id,
            queues,
        )
        .await?;
        self.live.record_agent(agent_id).await;
        Ok(stored)
    }

    /// Writes the agent's directory entry (replacing the earlier one) and marks them provisioned.
    pub async fn provision(&self, provision: &Provision) -> Result<AgentEntry, AgentError> {
        let entry =
            store::provision(&mut *crate::db::acquire(&self.pool).await?, provision).await?;
        self.live.record_agent(&provision.agent_id).await;
        Ok(entry)
    }

    /// Agents in id order after `filter.after`, at most `filter.limit`.
    pub async fn list(&self, filter: &AgentFilter) -> Result<Vec<AgentEntry>, AgentError> {
        Ok(store::list(&mut *crate::db::acquire(&self.pool).await?, filter).await?)
    }

    pub async fn list_states(
        &self,
        agent_id: &str,
        limit: i64,
    ) -> Result<Vec<StateChange>, AgentError> {
        let mut conn = crate::db::acquire(&self.pool).await?;
        if store::lock_current(&mut conn, agent_id).await?.is_none() {
            return Err(AgentError::NotFound);
        }
        Ok(store::history(&mut conn, agent_id, limit).await?)
    }
}

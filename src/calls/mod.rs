//! Call events from telephony gateways: durable, idempotent, order-independent ingestion.
//!
//! `ingest` handles one event:
//! 1. an OFFERED resolves the caller (the screen pop), which pins the card to the call;
//! 2. the event joins the next group commit ([`batch`]): in one transaction with the events that
//!    arrived alongside it, under per-call locks, it is checked against the acks already given (a
//!    resend gets its stored ack), joins its call's accepted history if the history stays possible
//!    ([`machine::admit`]), the call record is rebuilt from the sorted history, and the event is
//!    stored with its ack (accepted or rejected), so that a concurrent or later resend gets the
//!    same ack;
//! 3. after the commit, and only then, the ack is returned and the agents whose view of the call
//!    changed are notified (through [`crate::push::Fanout`]).
//!
//! Three rules keep one gateway's mistake from costing it anything else:
//! - an agent named by an accepted event who was never seen before becomes known, marked as
//!   known from the gateway ((`crate::agents::learn_from_gateway_sql`)): desk phones and PBX-only
//!   agents count in KPIs, and the agent directory lists them as drift;
//! - a resend is recognised by its payload's fingerprint ([`NewEvent::fingerprint`]): the same
//!   payload gets the stored ack, another payload under a used event id gets
//!   [`Ack::DuplicateId`] and is not stored;
//! - an event PostgreSQL refuses (which edge validation should already have caught) is acked
//!   [`Ack::Invalid`] alone, and the rest of its batch commits without it.
//!
//! `call_events` and `calls` are partitioned by month (of `occurred_at` and `offered_at`,
//! `src/history/`), so nothing here looks an event or a call up by its id alone. Ids identify
//! within [`IDENTITY_SPAN`] of the event's time: a resend is found by its event id and time (a
//! resend carries the same time), a call as the call of its id offered nearest to the event
//! within that span (none: the event starts a new call), and a call's history within its own
//! span.

mod batch;
pub mod grpc;
pub mod machine;
mod store;

pub use self::store::CUSTOMER_ROWS;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

pub use self::store::{CallKey, active_calls_for_agent, lock_calls, privacy, try_lock_calls};

use self::batch::Batcher;
use self::machine::{CallRecord, CallState, EventType, Step, TransferTarget};
use crate::live::Live;
use crate::phone::PhoneParser;
use crate::proto::v1;
use crate::push::Fanout;
use crate::screenpop::{PopRequest, ScreenPops};

/// How far apart two things of one gateway with the same id may be and still be one thing:
/// - two events with one event id, in `occurred_at`: the second is the first sent again (the same
///   ack, or DUPLICATE_ID for another payload); further apart, the id names another event;
/// - an event and a call with its call id, from the call's `offered_at`: the event belongs to the
///   nearest such call; with none, it starts a new call.
///
/// A resend carries the event's own time, and no call lasts a day, so neither bound is reached
/// in practice; they keep each lookup to the one or two months around the event.
pub const IDENTITY_SPAN: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// A validated event.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub gateway_id: String,
    pub call_id: String,
    pub step: Step,
    pub attached_data: BTreeMap<String, String>,
}

/// What the gateway is told about an event it sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// Stored and applied.
    Accepted,
    /// Stored, not applied: impossible in the call's history.
    Rejected(String),
    /// Not stored: PostgreSQL refused the event's data (edge validation missed it).
    Invalid(String),
    /// Not stored: the event id was used before for an event with another payload.
    DuplicateId,
}

/// A call as kept for the record (a privacy export shows these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSummary {
    pub gateway_id: String,
    pub call_id: String,
    pub state: CallState,
    pub caller_number: Option<String>,
    pub dialed_number: Option<String>,
    pub queue: Option<String>,
    pub handled_by: Vec<String>,
    pub transfers: i32,
    pub offered_at: Option<DateTime<Utc>>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub hold_ms: i64,
}

pub use crate::call_model::{CallView, Notice, NoticeKind};

#[derive(Debug, thiserror::Error)]
pub enum CallEventError {
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

crate::db::from_sqlx!(CallEventError);

/// The calls an agent is on now, read for a softphone's first snapshot.
#[derive(Clone)]
pub struct CallBook {
    pool: PgPool,
}

impl CallBook {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl crate::agents::ActiveCalls for CallBook {
    fn for_agent<'a>(
        &'a self,
        agent_id: &'a crate::ids::AgentId,
    ) -> futures::future::BoxFuture<'a, sqlx::Result<Vec<CallView>>> {
        Box::pin(async move {
            let mut conn = crate::db::acquire(&self.pool).await?;
            active_calls_for_agent(&mut conn, agent_id.as_str()).await
        })
    }
}

#[derive(Clone)]
pub struct CallEvents {
    batcher: Batcher,
    pops: ScreenPops,
    phones: PhoneParser,
}

impl CallEvents {
    pub fn new(
        pool: PgPool,
        pops: ScreenPops,
        phones: PhoneParser,
        fanout: Arc<Fanout>,
        live: Live,
        backlog: crate::ingest_backlog::IngestBacklog,
    ) -> Self {
        Self {
            batcher: Batcher::start(pool, fanout, live, backlog),
            pops,
            phones,
        }
    }

    #[tracing::instrument(skip_all, fields(gateway_id = %event.gateway_id, event_id = %event.step.event_id, kind = event.step.kind.as_str()))]
    pub async fn ingest(&self, event: NewEvent) -> Result<Ack, CallEventError> {
        // A resend of an OFFERED resolves again (a cached pop, harmless); the batch then finds
        // the stored ack and changes nothing.
        let customer_id = match event.step.kind {
            EventType::Offered => self.resolve_caller(&event).await,
            _ => None,
        };
        self.batcher.commit(event, customer_id).await
    }

    /// Resolves an OFFERED call's caller once, pinning the pop to the call. A failure here never
    /// fails the event: the pop can still be resolved when an agent needs it.
    async fn resolve_caller(&self, event: &NewEvent) -> Option<Uuid> {
        let caller = self
            .phones
            .parse(event.step.caller_number.as_deref()?, "")
            .ok()?;
        let request = PopRequest {
            caller,
            dialed: None,
            call_id: Some(crate::call_model::call_key(
                &event.gateway_id.as_str().into(),
                &event.call_id,
            )),
        };
        match self.pops.lookup(&request).await {
            Ok((pop, _)) if pop.r#match() == v1::MatchKind::Exact => pop
                .card
                .and_then(|card| Uuid::parse_str(&card.customer_id).ok()),
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(%error, "screen pop for an offered call failed; continuing");
                None
            }
        }
    }
}

impl NewEvent {
    /// SHA-256 of everything the event says (after parsing, so a resend that writes the same
    /// number another way is still the same event), to tell a resend from a reused event id.
    pub fn fingerprint(&self) -> Vec<u8> {
        use sha2::Digest as _;
        // serde_json's maps keep their keys sorted: one encoding per payload.
        let payload = serde_json::Value::Object(self.payload());
        sha2::Sha256::digest(payload.to_string().as_bytes()).to_vec()
    }

    /// Everything the event says but its identity (gateway id, event id), by column name: what
    /// is stored, and what [`Self::fingerprint`] hashes.
    pub fn payload(&self) -> serde_json::Map<String, serde_json::Value> {
        let step = &self.step;
        let (target_agent, target_queue) = TransferTarget::columns(step.target.as_ref());
        use serde_json::json;
        [
            ("call_id", json!(self.call_id)),
            ("type", json!(step.kind.as_str())),
            ("occurred_at", json!(step.occurred_at)),
            ("sequence", json!(step.sequence)),
            ("caller_number", json!(step.caller_number)),
            ("dialed_number", json!(step.dialed_number)),
            ("queue", json!(step.queue)),
            ("agent_id", json!(step.agent_id)),
            ("target_agent_id", json!(target_agent)),
            ("target_queue", json!(target_queue)),
            ("attached_data", json!(self.attached_data)),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
    }

    /// Agents this event names (made known from the gateway when the event is accepted).
    fn agents(&self) -> Vec<&str> {
        let mut agents: Vec<&str> = self.step.agent_id.iter().map(String::as_str).collect();
        if let Some(TransferTarget::Agent(target)) = &self.step.target {
            agents.push(target);
        }
        agents
    }
}

/// The agents whose view of the call changed, and how.
fn notices(
    before: Option<&(CallState, Vec<String>)>,
    after: &CallRecord,
    kind: EventType,
    view: &CallView,
) -> Vec<Notice> {
    let (before_state, before_agents) =
        before.map_or((None, &[][..]), |(s, a)| (Some(*s), a.as_slice()));
    let after_agents = after.on_call_agents();
    let mut out = Vec::new();
    let mut notify = |agent: &str, kind: NoticeKind| {
        out.push(Notice {
            agent_id: agent.into(),
            kind,
            call: view.clone(),
        })
    };
    for agent in &after_agents {
        let joined = !before_agents.contains(agent);
        let changed = joined || before_state != Some(after.state);
        if !changed {
            continue;
        }
        let notice = match after.state {
            CallState::Ringing => NoticeKind::Ringing,
            CallState::Held => NoticeKind::Held,
            CallState::Connected if kind == EventType::Conferenced && joined => {
                NoticeKind::Conferenced
            }
            CallState::Connected if before_state == Some(CallState::Held) && !joined => {
                NoticeKind::Resumed
            }
            _ => NoticeKind::Answered,
        };
        notify(agent, notice);
    }
    for agent in before_agents.iter().filter(|a| !after_agents.contains(a)) {
        let notice = if after.state.is_terminal() {
            NoticeKind::Ended
        } else {
            NoticeKind::TransferredAway
        };
        notify(agent, notice);
    }
    out
}

//! The vocabulary of live calls that `calls`, `agents`, `live` and `push` share, owned here so
//! none of them imports another for it: the call's key, its state, an agent's state, the call as
//! a softphone shows it, and the notices an agent gets. A leaf: it depends on no context.

use chrono::{DateTime, Utc};

use crate::ids::{AgentId, CustomerId, GatewayId};

use crate::text_enum::text_enum;

text_enum!(CallState {
    Offered => "offered",
    Queued => "queued",
    Ringing => "ringing",
    Connected => "connected",
    Held => "held",
    Ended => "ended",
    Abandoned => "abandoned",
});

impl CallState {
    pub fn is_terminal(self) -> bool {
        matches!(self, CallState::Ended | CallState::Abandoned)
    }
}

text_enum!(AgentState {
    Available => "available",
    Busy => "busy",
    AfterCallWork => "after_call_work",
    Away => "away",
    Offline => "offline",
});

/// A call's key across Switchboard: its pin in the pop cache, its hot state in Redis
/// (`{prefix}call:{key}`), and the live board's entry.
pub fn call_key(gateway_id: &GatewayId, call_id: &str) -> String {
    format!("{gateway_id}/{call_id}")
}

/// Agent ids: 1 to 64 characters of letters, digits, `.`, `_`, `-`, `@`.
pub fn parse_agent_id(value: &str) -> Result<String, &'static str> {
    let value = value.trim();
    if value.is_empty() {
        return Err("is required");
    }
    if value.len() > 64
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
    {
        return Err("must be 1 to 64 letters, digits, '.', '_', '-' or '@'");
    }
    Ok(value.to_owned())
}

/// A call as an agent's softphone shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallView {
    pub gateway_id: GatewayId,
    pub call_id: String,
    pub state: CallState,
    pub caller_number: Option<String>,
    pub dialed_number: Option<String>,
    pub queue: Option<String>,
    pub current_agent: Option<AgentId>,
    pub offered_at: Option<DateTime<Utc>>,
    pub answered_at: Option<DateTime<Utc>>,
    pub customer_id: Option<CustomerId>,
}

impl CallView {
    /// The call's key ([`call_key`]).
    pub fn key(&self) -> String {
        call_key(&self.gateway_id, &self.call_id)
    }
}

/// What changed for one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    Ringing,
    Answered,
    Held,
    Resumed,
    Conferenced,
    TransferredAway,
    Ended,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub agent_id: AgentId,
    pub kind: NoticeKind,
    pub call: CallView,
}

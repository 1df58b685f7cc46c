//! `switchboard.v1.AgentService`: request parsing and `AgentError` -> `Status`.

use std::pin::Pin;

use futures::{Stream, StreamExt as _};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{
    AgentEntry, AgentError, AgentFilter, AgentState, Agents, KnownFrom, Provision, StateChange,
    Watcher, parse_agent_id,
};
use crate::auth::{self, Principal};
use crate::drain::Draining;
use crate::grpc_status;
use crate::page_token::{LONG_PAGES, PageRequest};
use crate::proto::v1;
use crate::proto::v1::agent_service_server::AgentService;
use crate::proto_time::to_timestamp;
use crate::validation::Violations;

pub struct AgentGrpc {
    agents: Agents,
    watcher: Watcher,
    draining: Draining,
}

impl AgentGrpc {
    pub fn new(agents: Agents, watcher: Watcher, draining: Draining) -> Self {
        Self {
            agents,
            watcher,
            draining,
        }
    }
}

impl From<AgentError> for Status {
    fn from(error: AgentError) -> Self {
        match &error {
            AgentError::Invalid(violations) => grpc_status::invalid_argument(violations),
            AgentError::NotFound => Status::not_found(error.to_string()),
            AgentError::Unavailable(source) => grpc_status::unavailable(source),
            AgentError::Database(source) => grpc_status::internal(source),
        }
    }
}

/// An agent acts only for itself; supervisors and admins for anyone.
fn require_self(principal: &Principal, agent_id: &str) -> Result<(), Status> {
    if principal.may_act_for_agent(agent_id) {
        Ok(())
    } else {
        tracing::info!(subject = %principal.subject, "permission denied: agent acting for another agent");
        Err(Status::permission_denied(
            "an agent may act only for itself",
        ))
    }
}

fn agent_id(value: &str) -> Result<String, AgentError> {
    parse_agent_id(value).map_err(|e| AgentError::Invalid(Violations::single("agent_id", e)))
}

fn state_to_proto(state: AgentState) -> v1::AgentState {
    match state {
        AgentState::Available => v1::AgentState::Available,
        AgentState::Busy => v1::AgentState::Busy,
        AgentState::AfterCallWork => v1::AgentState::AfterCallWork,
        AgentState::Away => v1::AgentState::Away,
        AgentState::Offline => v1::AgentState::Offline,
    }
}

fn entry_to_proto(entry: AgentEntry) -> v1::Agent {
    let p = entry.provision;
    v1::Agent {
        agent_id: p.agent_id,
        display_name: p.display_name,
        team: p.team,
        queues: p.queues,
        extension: p.extension,
        sip_user: p.sip_user,
        known_from: match entry.known_from {
            KnownFrom::Desktop => v1::AgentKnownFrom::Desktop,
            KnownFrom::Directory => v1::AgentKnownFrom::Directory,
            KnownFrom::Gateway => v1::AgentKnownFrom::Gateway,
        }
        .into(),
        provision_time: entry.provisioned_at.map(to_timestamp),
        desktop_seen_time: entry.desktop_seen_at.map(to_timestamp),
        state: state_to_proto(entry.state).into(),
    }
}

/// Parses an agent's directory entry; every bad field is reported.
fn provision(r: v1::UpsertAgentRequest) -> Result<Provision, Violations> {
    let mut v = Violations::new();
    let agent_id = v.check("agent_id", parse_agent_id(&r.agent_id));
    let display_name = v.masked_text("display_name", &r.display_name, 100, false);
    let team = v.text("team", &r.team, 100, false);
    let queues = v.texts("queues", &r.queues, 100, 100);
    let extension = r.extension.trim().to_owned();
    if !extension.is_empty()
        && (extension.len() > 32
            || !extension
                .chars()
                .all(|c| c.is_ascii_digit() || "*#".contains(c)))
    {
        v.add("extension", "must be 1 to 32 of 0-9, * and #");
    }
    let sip_user = v.text("sip_user", &r.sip_user, 64, false);
    if sip_user.chars().any(char::is_whitespace) {
        v.add("sip_user", "must not contain spaces");
    }
    let Some(agent_id) = agent_id else {
        return Err(v);
    };
    v.finish(|| Provision {
        agent_id,
        display_name,
        team,
        queues,
        extension,
        sip_user,
    })
}

fn change_to_proto(change: StateChange) -> v1::AgentStateChange {
    let state = state_to_proto(change.state);
    v1::AgentStateChange {
        state: state.into(),
        reason: change.reason,
        since: Some(to_timestamp(change.since)),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::WatchAgentResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentGrpc {
    type WatchAgentStream = WatchStream;

    async fn watch_agent(
        &self,
        request: Request<v1::WatchAgentRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let principal = auth::principal(&request)?;
        let agent_id = agent_id(&request.get_ref().agent_id)?;
        require_self(&principal, &agent_id)?;
        let responses = self.watcher.watch(agent_id).await?;
        // On drain the stream ends cleanly; the softphone watches again on another instance.
        let stream = ReceiverStream::new(responses)
            .map(|item| item.map_err(Status::from))
            .take_until(self.draining.clone().started());
        Ok(Response::new(Box::pin(stream)))
    }

    async fn set_agent_state(
        &self,
        request: Request<v1::SetAgentStateRequest>,
    ) -> Result<Response<v1::SetAgentStateResponse>, Status> {
        let principal = auth::principal(&request)?;
        let request = request.into_inner();
        let mut violations = Violations::new();
        let agent = violations.check("agent_id", parse_agent_id(&request.agent_id));
        let state = match v1::AgentState::try_from(request.state) {
            Ok(v1::AgentState::Available) => Some(AgentState::Available),
            Ok(v1::AgentState::Busy) => Some(AgentState::Busy),
            Ok(v1::AgentState::AfterCallWork) => Some(AgentState::AfterCallWork),
            Ok(v1::AgentState::Away) => Some(AgentState::Away),
            Ok(v1::AgentState::Offline) => Some(AgentState::Offline),
            Ok(v1::AgentState::Unspecified) | Err(_) => {
                violations.add("state", format!("unknown agent state {}", request.state));
                None
            }
        };
        let reason = violations.masked_text("reason", &request.reason, 100, false);
        let (Some(agent), Some(state), true) = (agent, state, violations.is_empty()) else {
            return Err(AgentError::Invalid(violations).into());
        };
        require_self(&principal, &agent)?;
        let current = self.agents.set_state(&agent, state, &reason).await?;
        Ok(Response::new(v1::SetAgentStateResponse {
            current: Some(change_to_proto(current)),
        }))
    }

    async fn list_agent_states(
        &self,
        request: Request<v1::ListAgentStatesRequest>,
    ) -> Result<Response<v1::ListAgentStatesResponse>, Status> {
        let principal = auth::principal(&request)?;
        let request = request.into_inner();
        let agent = agent_id(&request.agent_id)?;
        require_self(&principal, &agent)?;
        let limit = match request.limit {
            0 => 50,
            n @ 1..=500 => i64::from(n),
            _ => {
                return Err(AgentError::Invalid(Violations::single(
                    "limit",
                    "must be between 1 and 500",
                ))
                .into());
            }
        };
        let changes = self.agents.list_states(&agent, limit).await?;
        Ok(Response::new(v1::ListAgentStatesResponse {
            changes: changes.into_iter().map(change_to_proto).collect(),
        }))
    }

    async fn set_agent_team(
        &self,
        request: Request<v1::SetAgentTeamRequest>,
    ) -> Result<Response<v1::SetAgentTeamResponse>, Status> {
        let request = request.into_inner();
        let mut violations = Violations::new();
        let agent = violations.check("agent_id", parse_agent_id(&request.agent_id));
        let team = violations.text("team", &request.team, 100, false);
        let (Some(agent), true) = (agent, violations.is_empty()) else {
            return Err(AgentError::Invalid(violations).into());
        };
        self.agents.set_team(&agent, &team).await?;
        Ok(Response::new(v1::SetAgentTeamResponse {
            agent_id: agent,
            team,
        }))
    }

    async fn upsert_agent(
        &self,
        request: Request<v1::UpsertAgentRequest>,
    ) -> Result<Response<v1::UpsertAgentResponse>, Status> {
        let provision = provision(request.into_inner()).map_err(AgentError::Invalid)?;
        let entry = self.agents.provision(&provision).await?;
        Ok(Response::new(v1::UpsertAgentResponse {
            agent: Some(entry_to_proto(entry)),
        }))
    }

    async fn list_agents(
        &self,
        request: Request<v1::ListAgentsRequest>,
    ) -> Result<Response<v1::ListAgentsResponse>, Status> {
        let r = request.into_inner();
        let mut v = Violations::new();
        let team = Some(v.text("team", &r.team, 100, false)).filter(|t| !t.is_empty());
        let page = PageRequest::parse(&mut v, r.page_size, &r.page_token, LONG_PAGES);
        let fingerprint = format!(
            "agents:{}:{}",
            r.gateway_only,
            team.as_deref().unwrap_or("")
        );
        let after = v
            .check("page_token", page.after::<String>(&fingerprint))
            .flatten();
        if !v.is_empty() {
            return Err(AgentError::Invalid(v).into());
        }
        let filter = AgentFilter {
            gateway_only: r.gateway_only,
            team,
            after,
            limit: page.fetch_limit(),
        };
        let agents = self.agents.list(&filter).await?;
        let (agents, next_page_token) =
            page.page(&fingerprint, agents, |a| a.provision.agent_id.clone());
        Ok(Response::new(v1::ListAgentsResponse {
            agents: agents.into_iter().map(entry_to_proto).collect(),
            next_page_token: next_page_token.unwrap_or_default(),
        }))
    }

    async fn set_agent_queues(
        &self,
        request: Request<v1::SetAgentQueuesRequest>,
    ) -> Result<Response<v1::SetAgentQueuesResponse>, Status> {
        let request = request.into_inner();
        let mut violations = Violations::new();
        let agent = violations.check("agent_id", parse_agent_id(&request.agent_id));
        let queues = violations.texts("queues", &request.queues, 100, 100);
        let (Some(agent), true) = (agent, violations.is_empty()) else {
            return Err(AgentError::Invalid(violations).into());
        };
        let queues = self.agents.set_queues(&agent, &queues).await?;
        Ok(Response::new(v1::SetAgentQueuesResponse {
            agent_id: agent,
            queues,
        }))
    }
}

//! `switchboard.v1.InteractionService`: proto <-> domain and `InteractionError` -> `Status`.

use chrono::NaiveDate;
use tonic::{Request, Response, Status};

use super::{
    Channel, Direction, Disposition, Interaction, InteractionError, Interactions, NewInteraction,
    TimelineFilter,
};
use crate::call_model::parse_agent_id;
use crate::grpc_status;
use crate::page_token::{PageRequest, SHORT_PAGES};
use crate::proto::v1;
use crate::proto::v1::interaction_service_server::InteractionService;
use crate::proto_time::to_timestamp;
use crate::validation::Violations;

const MAX_NOTES: usize = 10_000;

pub struct InteractionGrpc {
    interactions: Interactions,
}

impl InteractionGrpc {
    pub fn new(interactions: Interactions) -> Self {
        Self { interactions }
    }
}

impl From<InteractionError> for Status {
    fn from(error: InteractionError) -> Self {
        match &error {
            InteractionError::Invalid(violations) => grpc_status::invalid_argument(violations),
            InteractionError::CustomerNotFound
            | InteractionError::NotFound
            | InteractionError::CaseNotFound => Status::not_found(error.to_string()),
            InteractionError::UnknownDisposition(_) => {
                Status::failed_precondition(error.to_string())
            }
            InteractionError::Unavailable(source) => grpc_status::unavailable(source),
            InteractionError::Database(source) => grpc_status::internal(source),
        }
    }
}

fn channel(value: i32) -> Option<Channel> {
    match v1::Channel::try_from(value).ok()? {
        v1::Channel::Voice => Some(Channel::Voice),
        v1::Channel::Email => Some(Channel::Email),
        v1::Channel::Chat => Some(Channel::Chat),
        v1::Channel::Sms => Some(Channel::Sms),
        v1::Channel::Visit => Some(Channel::Visit),
        v1::Channel::Social => Some(Channel::Social),
        v1::Channel::Unspecified => None,
    }
}

fn disposition_code(
    violations: &mut Violations,
    field: &str,
    value: &str,
    required: bool,
) -> Option<String> {
    let code = violations.text(field, value, 40, required);
    if !code.is_empty()
        && !code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        violations.add(field, "must be letters, digits, '_', '-' or '.'");
    }
    (!code.is_empty()).then_some(code)
}

fn new_interaction(r: v1::LogInteractionRequest) -> Result<NewInteraction, Violations> {
    let mut v = Violations::new();
    let request_id = v.text("request_id", &r.request_id, 100, true);
    let customer_id = v.uuid("customer_id", &r.customer_id, true);
    let channel = channel(r.channel);
    if channel.is_none() {
        v.add("channel", format!("unknown channel {}", r.channel));
    }
    let direction = match v1::Direction::try_from(r.direction) {
        Ok(v1::Direction::Inbound) => Some(Direction::Inbound),
        Ok(v1::Direction::Outbound) => Some(Direction::Outbound),
        _ => {
            v.add("direction", format!("unknown direction {}", r.direction));
            None
        }
    };
    let agent_id = match r.agent_id.trim() {
        "" => None,
        agent => v.check("agent_id", parse_agent_id(agent)),
    };
    let gateway_id = v.text("gateway_id", &r.gateway_id, 64, false);
    let call_id = v.text("call_id", &r.call_id, 128, false);
    if gateway_id.is_empty() != call_id.is_empty() {
        v.add("call_id", "gateway_id and call_id go together");
    }
    let case_id = v.uuid("case_id", &r.case_id, false);
    let campaign_id = v.text("campaign_id", &r.campaign_id, 64, false);
    let disposition_code = disposition_code(&mut v, "disposition_code", &r.disposition_code, false);
    let outcome = v.masked_text("outcome", &r.outcome, 200, false);
    v.free_text("notes", &r.notes, MAX_NOTES);
    let follow_up_on = match r.follow_up_on.trim() {
        "" => None,
        date => v.check(
            "follow_up_on",
            NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| "must be YYYY-MM-DD"),
        ),
    };
    let started_at = v.time("started_at", r.started_at.as_ref(), true);
    let ended_at = v.time("ended_at", r.ended_at.as_ref(), false);
    if let (Some(start), Some(end)) = (started_at, ended_at)
        && end < start
    {
        v.add("ended_at", "must not be before started_at");
    }
    let (Some(customer_id), Some(channel), Some(direction), Some(started_at), true) =
        (customer_id, channel, direction, started_at, v.is_empty())
    else {
        return Err(v);
    };
    Ok(NewInteraction {
        request_id,
        customer_id,
        channel,
        direction,
        agent_id,
        call: (!gateway_id.is_empty()).then_some((gateway_id, call_id)),
        case_id,
        campaign_id: (!campaign_id.is_empty()).then_some(campaign_id),
        disposition_code,
        outcome,
        notes: r.notes,
        follow_up_on,
        started_at,
        ended_at,
    })
}

pub(crate) fn to_proto(i: Interaction) -> v1::Interaction {
    let (gateway_id, call_id) = i.call.unwrap_or_default();
    v1::Interaction {
        id: i.id.to_string(),
        customer_id: i.customer_id.to_string(),
        channel: match i.channel {
            Channel::Voice => v1::Channel::Voice,
            Channel::Email => v1::Channel::Email,
            Channel::Chat => v1::Channel::Chat,
            Channel::Sms => v1::Channel::Sms,
            Channel::Visit => v1::Channel::Visit,
            Channel::Social => v1::Channel::Social,
        }
        .into(),
        direction: match i.direction {
            Direction::Inbound => v1::Direction::Inbound,
            Direction::Outbound => v1::Direction::Outbound,
        }
        .into(),
        agent_id: i.agent_id.unwrap_or_default(),
        gateway_id,
        call_id,
        case_id: i.case_id.map(|id| id.to_string()).unwrap_or_default(),
        campaign_id: i.campaign_id.unwrap_or_default(),
        disposition_code: i.disposition_code.unwrap_or_default(),
        outcome: i.outcome,
        notes: i.notes,
        follow_up_on: i
            .follow_up_on
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default(),
        started_at: Some(to_timestamp(i.started_at)),
        ended_at: i.ended_at.map(to_timestamp),
        wrap_up_completed_at: i.wrap_up_completed_at.map(to_timestamp),
        wrap_up_ms: i.wrap_up_ms.unwrap_or_default(),
    }
}

fn disposition_to_proto(d: Disposition) -> v1::Disposition {
    v1::Disposition {
        code: d.code,
        label: d.label,
        resolves: d.resolves,
        active: d.active,
    }
}

#[tonic::async_trait]
impl InteractionService for InteractionGrpc {
    async fn log_interaction(
        &self,
        request: Request<v1::LogInteractionRequest>,
    ) -> Result<Response<v1::LogInteractionResponse>, Status> {
        let new = new_interaction(request.into_inner()).map_err(InteractionError::Invalid)?;
        let interaction = self.interactions.log(new).await?;
        Ok(Response::new(v1::LogInteractionResponse {
            interaction: Some(to_proto(interaction)),
        }))
    }

    async fn complete_wrap_up(
        &self,
        request: Request<v1::CompleteWrapUpRequest>,
    ) -> Result<Response<v1::CompleteWrapUpResponse>, Status> {
        let r = request.into_inner();
        let mut v = Violations::new();
        let id = v.uuid("interaction_id", &r.interaction_id, true);
        let code = disposition_code(&mut v, "disposition_code", &r.disposition_code, true);
        v.free_text("notes", &r.notes, MAX_NOTES);
        let (Some(id), Some(code), true) = (id, code, v.is_empty()) else {
            return Err(InteractionError::Invalid(v).into());
        };
        let interaction = self
            .interactions
            .complete_wrap_up(id, &code, &r.notes)
            .await?;
        Ok(Response::new(v1::CompleteWrapUpResponse {
            interaction: Some(to_proto(interaction)),
        }))
    }

    async fn list_interactions(
        &self,
        request: Request<v1::ListInteractionsRequest>,
    ) -> Result<Response<v1::ListInteractionsResponse>, Status> {
        let r = request.into_inner();
        let mut v = Violations::new();
        let customer_id = v.uuid("customer_id", &r.customer_id, true);
        let channel_filter = match r.channel {
            0 => None,
            value => {
                let parsed = channel(value);
                if parsed.is_none() {
                    v.add("channel", format!("unknown channel {value}"));
                }
                parsed
            }
        };
        let agent_id = match r.agent_id.trim() {
            "" => None,
            agent => v.check("agent_id", parse_agent_id(agent)),
        };
        let started_after = v.time("started_after", r.started_after.as_ref(), false);
        let started_before = v.time("started_before", r.started_before.as_ref(), false);
        let page = PageRequest::parse(&mut v, r.page_size, &r.page_token, SHORT_PAGES);
        let (Some(customer_id), true) = (customer_id, v.is_empty()) else {
            return Err(InteractionError::Invalid(v).into());
        };
        let filter = TimelineFilter {
            channel: channel_filter,
            agent_id,
            started_after,
            started_before,
        };
        let page = self.interactions.list(customer_id, filter, &page).await?;
        Ok(Response::new(v1::ListInteractionsResponse {
            interactions: page.items.into_iter().map(to_proto).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn list_dispositions(
        &self,
        _: Request<v1::ListDispositionsRequest>,
    ) -> Result<Response<v1::ListDispositionsResponse>, Status> {
        let dispositions = self.interactions.dispositions().await?;
        Ok(Response::new(v1::ListDispositionsResponse {
            dispositions: dispositions.into_iter().map(disposition_to_proto).collect(),
        }))
    }

    async fn upsert_disposition(
        &self,
        request: Request<v1::UpsertDispositionRequest>,
    ) -> Result<Response<v1::UpsertDispositionResponse>, Status> {
        let d = request.into_inner().disposition.unwrap_or_default();
        let mut v = Violations::new();
        let code = disposition_code(&mut v, "disposition.code", &d.code, true);
        let label = v.masked_text("disposition.label", &d.label, 100, true);
        let (Some(code), true) = (code, v.is_empty()) else {
            return Err(InteractionError::Invalid(v).into());
        };
        let saved = self
            .interactions
            .upsert_disposition(Disposition {
                code,
                label,
                resolves: d.resolves,
                active: d.active,
            })
            .await?;
        Ok(Response::new(v1::UpsertDispositionResponse {
            disposition: Some(disposition_to_proto(saved)),
        }))
    }
}

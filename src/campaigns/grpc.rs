//! `switchboard.v1.CampaignService`: proto <-> domain and `CampaignError` -> `Status`.

use chrono::{Duration, Utc};
use tonic::{Request, Response, Status};

use super::{
    AttemptPolicy, CallingWindow, Campaign, CampaignError, CampaignFields, CampaignPatch,
    CampaignStatus, Campaigns, Channel, MAX_EXPLICIT_MEMBERS, MemberState, Members, NextContact,
    Outcome, SegmentFilter,
};
use crate::auth::{self, Role};
use crate::call_model::parse_agent_id;
use crate::grpc_status;
use crate::page_token::{PageRequest, SHORT_PAGES};
use crate::phone::PhoneParser;
use crate::proto::v1;
use crate::proto::v1::campaign_service_server::CampaignService;
use crate::proto_time::to_timestamp;
use crate::validation::Violations;

const MAX_OFFER: usize = 2_000;

pub struct CampaignGrpc {
    campaigns: Campaigns,
    phones: PhoneParser,
}

impl CampaignGrpc {
    pub fn new(campaigns: Campaigns, phones: PhoneParser) -> Self {
        Self { campaigns, phones }
    }
}

impl From<CampaignError> for Status {
    fn from(error: CampaignError) -> Self {
        match &error {
            CampaignError::Invalid(violations) => grpc_status::invalid_argument(violations),
            CampaignError::NotFound
            | CampaignError::CustomerNotFound(_)
            | CampaignError::LeaseNotFound => Status::not_found(error.to_string()),
            CampaignError::StaleVersion { .. } => Status::aborted(error.to_string()),
            CampaignError::NumberTaken(_) => Status::already_exists(error.to_string()),
            CampaignError::IllegalTransition { .. }
            | CampaignError::NotRunning(_)
            | CampaignError::Completed
            | CampaignError::LeaseLost
            | CampaignError::OutcomeConflict(_) => Status::failed_precondition(error.to_string()),
            CampaignError::NotYourLease => Status::permission_denied(error.to_string()),
            CampaignError::Unavailable(source) => grpc_status::unavailable(source),
            CampaignError::Database(source) => grpc_status::internal(source),
        }
    }
}

fn status(value: i32) -> Result<CampaignStatus, String> {
    match v1::CampaignStatus::try_from(value) {
        Ok(v1::CampaignStatus::Draft) => Ok(CampaignStatus::Draft),
        Ok(v1::CampaignStatus::Active) => Ok(CampaignStatus::Active),
        Ok(v1::CampaignStatus::Paused) => Ok(CampaignStatus::Paused),
        Ok(v1::CampaignStatus::Completed) => Ok(CampaignStatus::Completed),
        _ => Err(format!("unknown campaign status {value}")),
    }
}

fn status_to_proto(status: CampaignStatus) -> v1::CampaignStatus {
    match status {
        CampaignStatus::Draft => v1::CampaignStatus::Draft,
        CampaignStatus::Active => v1::CampaignStatus::Active,
        CampaignStatus::Paused => v1::CampaignStatus::Paused,
        CampaignStatus::Completed => v1::CampaignStatus::Completed,
    }
}

fn channel(value: i32) -> Result<Channel, String> {
    match v1::CampaignChannel::try_from(value) {
        Ok(v1::CampaignChannel::OutboundCall) => Ok(Channel::OutboundCall),
        Ok(v1::CampaignChannel::InboundCall) => Ok(Channel::InboundCall),
        Ok(v1::CampaignChannel::Email) => Ok(Channel::Email),
        Ok(v1::CampaignChannel::Sms) => Ok(Channel::Sms),
        _ => Err("must name a channel".to_owned()),
    }
}

fn channel_to_proto(channel: Channel) -> v1::CampaignChannel {
    match channel {
        Channel::OutboundCall => v1::CampaignChannel::OutboundCall,
        Channel::InboundCall => v1::CampaignChannel::InboundCall,
        Channel::Email => v1::CampaignChannel::Email,
        Channel::Sms => v1::CampaignChannel::Sms,
    }
}

fn outcome(value: i32) -> Result<Outcome, String> {
    use v1::OutboundOutcome as O;
    match O::try_from(value) {
        Ok(O::Reached) => Ok(Outcome::Reached),
        Ok(O::NoAnswer) => Ok(Outcome::NoAnswer),
        Ok(O::Busy) => Ok(Outcome::Busy),
        Ok(O::Voicemail) => Ok(Outcome::Voicemail),
        Ok(O::Converted) => Ok(Outcome::Converted),
        Ok(O::Declined) => Ok(Outcome::Declined),
        Ok(O::CallbackRequested) => Ok(Outcome::CallbackRequested),
        Ok(O::WrongNumber) => Ok(Outcome::WrongNumber),
        Ok(O::DoNotCall) => Ok(Outcome::DoNotCall),
        _ => Err("must name an outcome".to_owned()),
    }
}

fn outcome_to_proto(outcome: Outcome) -> v1::OutboundOutcome {
    use v1::OutboundOutcome as O;
    match outcome {
        Outcome::Reached => O::Reached,
        Outcome::NoAnswer => O::NoAnswer,
        Outcome::Busy => O::Busy,
        Outcome::Voicemail => O::Voicemail,
        Outcome::Converted => O::Converted,
        Outcome::Declined => O::Declined,
        Outcome::CallbackRequested => O::CallbackRequested,
        Outcome::WrongNumber => O::WrongNumber,
        Outcome::DoNotCall => O::DoNotCall,
    }
}

fn member_state_to_proto(state: MemberState) -> v1::MemberState {
    match state {
        MemberState::Pending => v1::MemberState::Pending,
        MemberState::Leased => v1::MemberState::Leased,
        MemberState::Done => v1::MemberState::Done,
    }
}

fn time_zone(v: &mut Violations, field: &str, value: &str) -> String {
    let value = v.text(field, value, 64, false);
    if value.is_empty() {
        return "UTC".to_owned();
    }
    if value.parse::<chrono_tz::Tz>().is_err() {
        v.add(
            field,
            "must be an IANA time zone such as \"America/New_York\"",
        );
    }
    value
}

fn seconds(v: &mut Violations, field: &str, value: i64, default: i64) -> Duration {
    match value {
        0 => Duration::seconds(default),
        1..=31_536_000 => Duration::seconds(value),
        _ => {
            v.add(field, "must be between 1 and 31,536,000 seconds");
            Duration::seconds(default)
        }
    }
}

fn max_attempts(v: &mut Violations, value: i32) -> i32 {
    match value {
        0 => 3,
        1..=20 => value,
        _ => {
            v.add("campaign.max_attempts", "must be between 1 and 20");
            3
        }
    }
}

fn window(v: &mut Violations, value: Option<&v1::CallingWindow>) -> CallingWindow {
    let Some(value) = value else {
        return CallingWindow::default();
    };
    let window = CallingWindow {
        start_minute: value.start_minute,
        end_minute: value.end_minute,
    };
    if !window.is_valid() {
        v.add(
            "campaign.calling_window",
            "start_minute must be 0..1439 and end_minute after it, at most 1440",
        );
    }
    window
}

impl CampaignGrpc {
    fn dialed_numbers(&self, v: &mut Violations, values: &[String]) -> Vec<String> {
        let mut numbers: Vec<String> = Vec::with_capacity(values.len());
        for (i, raw) in values.iter().enumerate() {
            if let Some(number) = v.check(
                &format!("campaign.dialed_numbers[{i}]"),
                self.phones.parse(raw, ""),
            ) {
                numbers.push(number.e164().to_owned());
            }
        }
        numbers.sort();
        numbers.dedup();
        if numbers.len() > 100 {
            v.add("campaign.dialed_numbers", "at most 100 numbers");
        }
        numbers
    }

    fn fields(&self, v: &mut Violations, c: &v1::Campaign) -> Option<CampaignFields> {
        let name = v.masked_text("campaign.name", &c.name, 200, true);
        let channel = v.check("campaign.channel", channel(c.channel));
        let status = if c.status == 0 {
            Some(CampaignStatus::Draft)
        } else {
            v.check("campaign.status", status(c.status))
        };
        let starts_at = v.time("campaign.starts_at", c.starts_at.as_ref(), true);
        let ends_at = v.time("campaign.ends_at", c.ends_at.as_ref(), true);
        if let (Some(s), Some(e)) = (starts_at, ends_at)
            && e <= s
        {
            v.add("campaign.ends_at", "must be after starts_at");
        }
        let offer_text = v.masked_text("campaign.offer_text", &c.offer_text, MAX_OFFER, false);
        let dialed_numbers = self.dialed_numbers(v, &c.dialed_numbers);
        let policy = AttemptPolicy {
            max_attempts: max_attempts(v, c.max_attempts),
            retry_after: seconds(
                v,
                "campaign.retry_after_seconds",
                c.retry_after_seconds,
                3600,
            ),
        };
        let lease = seconds(v, "campaign.lease_seconds", c.lease_seconds, 300);
        let window = window(v, c.calling_window.as_ref());
        let default_time_zone = time_zone(v, "campaign.default_time_zone", &c.default_time_zone);
        Some(CampaignFields {
            name,
            channel: channel?,
            status: status?,
            starts_at: starts_at?,
            ends_at: ends_at?,
            offer_text,
            dialed_numbers,
            policy,
            lease,
            window,
            default_time_zone,
        })
    }
}

pub(crate) fn to_proto(c: Campaign) -> v1::Campaign {
    let f = c.fields;
    v1::Campaign {
        id: c.id.to_string(),
        name: f.name,
        channel: channel_to_proto(f.channel).into(),
        status: status_to_proto(f.status).into(),
        starts_at: Some(to_timestamp(f.starts_at)),
        ends_at: Some(to_timestamp(f.ends_at)),
        offer_text: f.offer_text,
        dialed_numbers: f.dialed_numbers,
        max_attempts: f.policy.max_attempts,
        retry_after_seconds: f.policy.retry_after.num_seconds(),
        lease_seconds: f.lease.num_seconds(),
        calling_window: Some(v1::CallingWindow {
            start_minute: f.window.start_minute,
            end_minute: f.window.end_minute,
        }),
        default_time_zone: f.default_time_zone,
        create_time: Some(to_timestamp(c.created_at)),
        update_time: Some(to_timestamp(c.updated_at)),
        version: c.version,
    }
}

fn segment_filter(v: &mut Violations, s: v1::SegmentFilter) -> SegmentFilter {
    let tiers = s
        .tiers
        .iter()
        .filter_map(|t| match v1::Tier::try_from(*t) {
            Ok(v1::Tier::Standard) => Some("standard".to_owned()),
            Ok(v1::Tier::Silver) => Some("silver".to_owned()),
            Ok(v1::Tier::Gold) => Some("gold".to_owned()),
            Ok(v1::Tier::Platinum) => Some("platinum".to_owned()),
            _ => {
                v.add("segment.tiers", format!("unknown tier {t}"));
                None
            }
        })
        .collect();
    let value_range = s.min_lifetime_value_minor.is_some() || s.max_lifetime_value_minor.is_some();
    if value_range && s.currency.len() != 3 {
        v.add(
            "segment.currency",
            "a lifetime value range needs an ISO 4217 currency code",
        );
    }
    SegmentFilter {
        tiers,
        segments: s.segments,
        languages: s.languages,
        currency: s.currency.to_ascii_uppercase(),
        min_lifetime_value_minor: s.min_lifetime_value_minor,
        max_lifetime_value_minor: s.max_lifetime_value_minor,
        last_contact_before: v.time(
            "segment.last_contact_before",
            s.last_contact_before.as_ref(),
            false,
        ),
        last_contact_after: v.time(
            "segment.last_contact_after",
            s.last_contact_after.as_ref(),
            false,
        ),
        has_open_case: s.has_open_case,
    }
}

#[tonic::async_trait]
impl CampaignService for CampaignGrpc {
    async fn create_campaign(
        &self,
        request: Request<v1::CreateCampaignRequest>,
    ) -> Result<Response<v1::CreateCampaignResponse>, Status> {
        let r = request.into_inner();
        let mut v = Violations::new();
        let request_id = v.text("request_id", &r.request_id, 100, true);
        let fields = self.fields(&mut v, &r.campaign.unwrap_or_default());
        let (Some(fields), true) = (fields, v.is_empty()) else {
            return Err(CampaignError::Invalid(v).into());
        };
        let campaign = self.campaigns.create(&request_id, fields).await?;
        Ok(Response::new(v1::CreateCampaignResponse {
            campaign: Some(to_proto(campaign)),
        }))
    }

    async fn update_campaign(
        &self,
        request: Request<v1::UpdateCampaignRequest>,
    ) -> Result<Response<v1::UpdateCampaignResponse>, Status> {
        let r = request.into_inner();
        let mut v = Violations::new();
        let c = r.campaign.unwrap_or_default();
        let id = v.uuid("campaign.id", &c.id, true);
        if c.version <= 0 {
            v.add(
                "campaign.version",
                "must be the version you read (at least 1)",
            );
        }
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            v.add("update_mask", "name at least one field to change");
        }
        let mut patch = CampaignPatch::default();
        for path in &paths {
            match path.as_str() {
                "name" => patch.name = Some(v.masked_text("campaign.name", &c.name, 200, true)),
                "status" => patch.status = v.check("campaign.status", status(c.status)),
                "starts_at" => {
                    patch.starts_at = v.time("campaign.starts_at", c.starts_at.as_ref(), true)
                }
                "ends_at" => patch.ends_at = v.time("campaign.ends_at", c.ends_at.as_ref(), true),
                "offer_text" => {
                    patch.offer_text =
                        Some(v.masked_text("campaign.offer_text", &c.offer_text, MAX_OFFER, false))
                }
                "dialed_numbers" => {
                    patch.dialed_numbers = Some(self.dialed_numbers(&mut v, &c.dialed_numbers))
                }
                "max_attempts" => patch.max_attempts = Some(max_attempts(&mut v, c.max_attempts)),
                "retry_after_seconds" => {
                    patch.retry_after = Some(seconds(
                        &mut v,
                        "campaign.retry_after_seconds",
                        c.retry_after_seconds,
                        3600,
                    ))
                }
                "lease_seconds" => {
                    patch.lease = Some(seconds(
                        &mut v,
                        "campaign.lease_seconds",
                        c.lease_seconds,
                        300,
                    ))
                }
                "calling_window" => patch.window = Some(window(&mut v, c.calling_window.as_ref())),
                "default_time_zone" => {
                    patch.default_time_zone = Some(time_zone(
                        &mut v,
                        "campaign.default_time_zone",
                        &c.default_time_zone,
                    ))
                }
                other => v.add(
                    "update_mask",
                    format!("unknown or read-only field {other:?}"),
                ),
            }
        }
        let (Some(id), true) = (id, v.is_empty()) else {
            return Err(CampaignError::Invalid(v).into());
        };
        let campaign = self.campaigns.update(id, c.version, patch).await?;
        Ok(Response::new(v1::UpdateCampaignResponse {
            campaign: Some(to_proto(campaign)),
        }))
    }

    async fn list_campaigns(
        &self,
        request: Request<v1::ListCampaignsRequest>,
    ) -> Result<Response<v1::ListCampaignsResponse>, Status> {
        let r = request.into_inner();
        let mut v = Violations::new();
        let status = match r.status {
            0 => None,
            value => v.check("status", status(value)),
        };
        let page = PageRequest::parse(&mut v, r.page_size, &r.page_token, SHORT_PAGES);
        if !v.is_empty() {
            return Err(CampaignError::Invalid(v).into());
        }
        let page = self.campaigns.list(status, &page).await?;
        Ok(Response::new(v1::ListCampaignsResponse {
            campaigns: page.items.into_iter().map(to_proto).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn get_campaign_stats(
        &self,
        request: Request<v1::GetCampaignStatsRequest>,
    ) -> Result<Response<v1::GetCampaignStatsResponse>, Status> {
        let id = Violations::single_uuid("campaign_id", &request.get_ref().campaign_id)
            .map_err(CampaignError::Invalid)?;
        let s = self.campaigns.stats(id).await?;
        Ok(Response::new(v1::GetCampaignStatsResponse {
            members: s.members,
            pending: s.pending,
            leased: s.leased,
            done: s.done,
            outcomes: s
                .outcomes
                .into_iter()
                .map(|(outcome, count)| v1::OutcomeCount {
                    outcome: outcome_to_proto(outcome).into(),
                    count,
                })
                .collect(),
            attempts: s.attempts,
            conversions: s.conversions,
            conversion_rate: s.conversion_rate,
            inbound_calls: s.inbound_calls,
        }))
    }

    async fn add_campaign_members(
        &self,
        request: Request<v1::AddCampaignMembersRequest>,
    ) -> Result<Response<v1::AddCampaignMembersResponse>, Status> {
        use v1::add_campaign_members_request::Members as ProtoMembers;
        let r = request.into_inner();
        let mut v = Violations::new();
        let id = v.uuid("campaign_id", &r.campaign_id, true);
        let members = match r.members {
            Some(ProtoMembers::CustomerIds(list)) => {
                if list.ids.is_empty() || list.ids.len() > MAX_EXPLICIT_MEMBERS {
                    v.add(
                        "customer_ids.ids",
                        format!("give 1 to {MAX_EXPLICIT_MEMBERS} customer ids"),
                    );
                }
                let ids = list
                    .ids
                    .iter()
                    .enumerate()
                    .filter_map(|(i, raw)| v.uuid(&format!("customer_ids.ids[{i}]"), raw, true))
                    .collect();
                Some(Members::Ids(ids))
            }
            Some(ProtoMembers::Segment(segment)) => {
                Some(Members::Segment(segment_filter(&mut v, segment)))
            }
            None => {
                v.add("members", "give customer_ids or a segment filter");
                None
            }
        };
        let (Some(id), Some(members), true) = (id, members, v.is_empty()) else {
            return Err(CampaignError::Invalid(v).into());
        };
        let added = self.campaigns.add_members(id, members).await?;
        Ok(Response::new(v1::AddCampaignMembersResponse {
            added: added.added,
            already_members: added.already_members,
        }))
    }

    async fn next_outbound_contact(
        &self,
        request: Request<v1::NextOutboundContactRequest>,
    ) -> Result<Response<v1::NextOutboundContactResponse>, Status> {
        let principal = auth::principal(&request)?;
        let r = request.into_inner();
        let mut v = Violations::new();
        let id = v.uuid("campaign_id", &r.campaign_id, true);
        let agent_id = v.check("agent_id", parse_agent_id(&r.agent_id));
        let (Some(id), Some(agent_id), true) = (id, agent_id, v.is_empty()) else {
            return Err(CampaignError::Invalid(v).into());
        };
        if !principal.may_act_for_agent(&agent_id) {
            return Err(Status::permission_denied(
                "an agent may lease contacts only for itself",
            ));
        }
        let response = match self.campaigns.next_contact(id, &agent_id).await? {
            NextContact::Leased(lease) => v1::NextOutboundContactResponse {
                contact: Some(v1::OutboundContact {
                    lease_id: lease.lease_id.to_string(),
                    customer_id: lease.customer_id.to_string(),
                    display_name: lease.display_name,
                    phone_number: lease.phone_number,
                    time_zone: lease.time_zone,
                    attempts: lease.attempts,
                    lease_expires_at: Some(to_timestamp(lease.expires_at)),
                    callback_at: lease.callback_at.map(to_timestamp),
                    offer_text: lease.offer_text,
                }),
                retry_after_seconds: 0,
            },
            NextContact::NoneNow { retry_after } => v1::NextOutboundContactResponse {
                contact: None,
                retry_after_seconds: retry_after.num_seconds(),
            },
        };
        Ok(Response::new(response))
    }

    async fn record_outcome(
        &self,
        request: Request<v1::RecordOutcomeRequest>,
    ) -> Result<Response<v1::RecordOutcomeResponse>, Status> {
        let principal = auth::principal(&request)?;
        let r = request.into_inner();
        let mut v = Violations::new();
        let lease_id = v.uuid("lease_id", &r.lease_id, true);
        let outcome = v.check("outcome", outcome(r.outcome));
        let callback_at = if outcome == Some(Outcome::CallbackRequested) {
            let at = v.time("callback_at", r.callback_at.as_ref(), true);
            if at.is_some_and(|at| !super::rules::callback_allowed(at, Utc::now())) {
                v.add(
                    "callback_at",
                    format!(
                        "must be in the future and within {} days",
                        super::rules::MAX_CALLBACK_DAYS
                    ),
                );
            }
            at
        } else {
            None
        };
        let (Some(lease_id), Some(outcome), true) = (lease_id, outcome, v.is_empty()) else {
            return Err(CampaignError::Invalid(v).into());
        };
        let acting_agent = (principal.role == Role::Agent).then_some(principal.subject.as_str());
        let after = self
            .campaigns
            .record_outcome(lease_id, outcome, callback_at, acting_agent)
            .await?;
        Ok(Response::new(v1::RecordOutcomeResponse {
            member_state: member_state_to_proto(after.state).into(),
            attempts: after.attempts,
            next_attempt_at: after.next_attempt_at.map(to_timestamp),
        }))
    }
}

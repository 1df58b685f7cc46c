//! `switchboard.v1.FeedbackService`: proto <-> domain and `FeedbackError` -> `Status`.

use chrono::Utc;
use tonic::{Request, Response, Status as GrpcStatus};

use super::{
    Change, Feedback, FeedbackDesk, FeedbackError, Filter, NewFeedback, Score, Sentiment, Source,
    Status,
};
use crate::auth;
use crate::call_model::parse_agent_id;
use crate::grpc_status;
use crate::page_token::{PageRequest, SHORT_PAGES};
use crate::proto::v1;
use crate::proto::v1::feedback_service_server::FeedbackService;
use crate::proto_time::to_timestamp;
use crate::validation::Violations;

const MAX_TEXT: usize = 10_000;

pub struct FeedbackGrpc {
    desk: FeedbackDesk,
}

impl FeedbackGrpc {
    pub fn new(desk: FeedbackDesk) -> Self {
        Self { desk }
    }
}

impl From<FeedbackError> for GrpcStatus {
    fn from(error: FeedbackError) -> Self {
        match &error {
            FeedbackError::Invalid(violations) => grpc_status::invalid_argument(violations),
            FeedbackError::NotFound | FeedbackError::LinkNotFound(_) => {
                GrpcStatus::not_found(error.to_string())
            }
            FeedbackError::IllegalTransition { .. } => {
                GrpcStatus::failed_precondition(error.to_string())
            }
            FeedbackError::Unavailable(source) => grpc_status::unavailable(source),
            FeedbackError::Database(source) => grpc_status::internal(source),
        }
    }
}

fn source(value: i32) -> Result<Source, String> {
    use v1::FeedbackSource as S;
    match S::try_from(value) {
        Ok(S::Customer) => Ok(Source::Customer),
        Ok(S::Agent) => Ok(Source::Agent),
        Ok(S::Supplier) => Ok(Source::Supplier),
        Ok(S::Partner) => Ok(Source::Partner),
        Ok(S::Shareholder) => Ok(Source::Shareholder),
        Ok(S::Internal) => Ok(Source::Internal),
        _ => Err("must name a source".to_owned()),
    }
}

pub(crate) fn source_to_proto(value: Source) -> v1::FeedbackSource {
    use v1::FeedbackSource as S;
    match value {
        Source::Customer => S::Customer,
        Source::Agent => S::Agent,
        Source::Supplier => S::Supplier,
        Source::Partner => S::Partner,
        Source::Shareholder => S::Shareholder,
        Source::Internal => S::Internal,
    }
}

fn sentiment_to_proto(value: Sentiment) -> v1::Sentiment {
    match value {
        Sentiment::Positive => v1::Sentiment::Positive,
        Sentiment::Neutral => v1::Sentiment::Neutral,
        Sentiment::Negative => v1::Sentiment::Negative,
    }
}

fn status(value: i32) -> Result<Status, String> {
    use v1::FeedbackStatus as S;
    match S::try_from(value) {
        Ok(S::New) => Ok(Status::New),
        Ok(S::Triaged) => Ok(Status::Triaged),
        Ok(S::InProgress) => Ok(Status::InProgress),
        Ok(S::Resolved) => Ok(Status::Resolved),
        Ok(S::Closed) => Ok(Status::Closed),
        _ => Err("must name a status".to_owned()),
    }
}

fn status_to_proto(value: Status) -> v1::FeedbackStatus {
    use v1::FeedbackStatus as S;
    match value {
        Status::New => S::New,
        Status::Triaged => S::Triaged,
        Status::InProgress => S::InProgress,
        Status::Resolved => S::Resolved,
        Status::Closed => S::Closed,
    }
}

pub(crate) fn to_proto(f: Feedback) -> v1::Feedback {
    let overdue = f.is_overdue(Utc::now());
    let score = f.score.map(|s| v1::Score {
        kind: Some(match s {
            Score::Csat(n) => v1::score::Kind::Csat(n),
            Score::Nps(n) => v1::score::Kind::Nps(n),
        }),
    });
    let (gateway_id, call_id) = f.call.unwrap_or_default();
    let id = |id: Option<uuid::Uuid>| id.map(|i| i.to_string()).unwrap_or_default();
    v1::Feedback {
        id: f.id.to_string(),
        source: source_to_proto(f.source).into(),
        sentiment: sentiment_to_proto(f.sentiment).into(),
        score,
        category: f.category,
        text: f.text,
        customer_id: id(f.customer_id),
        interaction_id: id(f.interaction_id),
        case_id: id(f.case_id),
        gateway_id,
        call_id,
        status: status_to_proto(f.status).into(),
        owner: f.owner.unwrap_or_default(),
        due_at: f.due_at.map(to_timestamp),
        overdue,
        resolution: f.resolution.unwrap_or_default(),
        create_time: Some(to_timestamp(f.created_at)),
        update_time: Some(to_timestamp(f.updated_at)),
        resolved_at: f.resolved_at.map(to_timestamp),
        closed_at: f.closed_at.map(to_timestamp),
    }
}

fn change_to_proto(c: Change) -> v1::FeedbackChange {
    v1::FeedbackChange {
        action: c.action,
        from: c.from,
        to: c.to,
        actor: c.actor,
        at: Some(to_timestamp(c.at)),
    }
}

fn long_text(v: &mut Violations, field: &str, value: &str) -> String {
    v.free_text(field, value, MAX_TEXT).trim().to_owned()
}

fn actor(v: &mut Violations, value: &str) -> String {
    v.check("actor", parse_agent_id(value)).unwrap_or_default()
}

#[tonic::async_trait]
impl FeedbackService for FeedbackGrpc {
    async fn submit_feedback(
        &self,
        request: Request<v1::SubmitFeedbackRequest>,
    ) -> Result<Response<v1::SubmitFeedbackResponse>, GrpcStatus> {
        let r = request.into_inner();
        let mut v = Violations::new();
        let request_id = v.text("request_id", &r.request_id, 100, true);
        let source = v.check("source", source(r.source));
        let sentiment = match v1::Sentiment::try_from(r.sentiment) {
            Ok(v1::Sentiment::Unspecified) => None,
            Ok(v1::Sentiment::Positive) => Some(Sentiment::Positive),
            Ok(v1::Sentiment::Neutral) => Some(Sentiment::Neutral),
            Ok(v1::Sentiment::Negative) => Some(Sentiment::Negative),
            Err(_) => {
                v.add("sentiment", format!("unknown sentiment {}", r.sentiment));
                None
            }
        };
        let score = match r.score.and_then(|s| s.kind) {
            Some(v1::score::Kind::Csat(n)) => Some(Score::Csat(n)),
            Some(v1::score::Kind::Nps(n)) => Some(Score::Nps(n)),
            None => None,
        };
        if score.is_some_and(|s| !s.is_valid()) {
            v.add("score", "CSAT is 1 to 5 and NPS 0 to 10");
        }
        if sentiment.is_none() && score.is_none() {
            v.add("sentiment", "give a sentiment or a score");
        }
        let category = v.text("category", &r.category, 64, true).to_lowercase();
        let text = long_text(&mut v, "text", &r.text);
        let customer_id = v.uuid("customer_id", &r.customer_id, false);
        let interaction_id = v.uuid("interaction_id", &r.interaction_id, false);
        let case_id = v.uuid("case_id", &r.case_id, false);
        let gateway_id = v.text("gateway_id", &r.gateway_id, 64, false);
        let call_id = v.text("call_id", &r.call_id, 128, false);
        if gateway_id.is_empty() != call_id.is_empty() {
            v.add("call_id", "a call is named by both gateway_id and call_id");
        }
        let (Some(source), true) = (source, v.is_empty()) else {
            return Err(FeedbackError::Invalid(v).into());
        };
        let (feedback, case_opened) = self
            .desk
            .submit(NewFeedback {
                request_id,
                source,
                sentiment,
                score,
                category,
                text,
                customer_id,
                interaction_id,
                case_id,
                call: (!gateway_id.is_empty()).then_some((gateway_id, call_id)),
            })
            .await?;
        Ok(Response::new(v1::SubmitFeedbackResponse {
            feedback: Some(to_proto(feedback)),
            case_opened,
        }))
    }

    async fn get_feedback(
        &self,
        request: Request<v1::GetFeedbackRequest>,
    ) -> Result<Response<v1::GetFeedbackResponse>, GrpcStatus> {
        let id =
            Violations::single_uuid("id", &request.get_ref().id).map_err(FeedbackError::Invalid)?;
        let (feedback, history) = self.desk.get(id).await?;
        Ok(Response::new(v1::GetFeedbackResponse {
            feedback: Some(to_proto(feedback)),
            history: history.into_iter().map(change_to_proto).collect(),
        }))
    }

    async fn triage_feedback(
        &self,
        request: Request<v1::TriageFeedbackRequest>,
    ) -> Result<Response<v1::TriageFeedbackResponse>, GrpcStatus> {
        let r = auth::signed(request, |r| &r.actor)?;
        let mut v = Violations::new();
        let actor = actor(&mut v, &r.actor);
        let id = v.uuid("id", &r.id, true);
        let owner = v.text("owner", &r.owner, 64, true);
        let due_at = v.time("due_at", r.due_at.as_ref(), true);
        let (Some(id), Some(due_at), true) = (id, due_at, v.is_empty()) else {
            return Err(FeedbackError::Invalid(v).into());
        };
        let feedback = self.desk.triage(id, owner, due_at, &actor).await?;
        Ok(Response::new(v1::TriageFeedbackResponse {
            feedback: Some(to_proto(feedback)),
        }))
    }

    async fn update_feedback_status(
        &self,
        request: Request<v1::UpdateFeedbackStatusRequest>,
    ) -> Result<Response<v1::UpdateFeedbackStatusResponse>, GrpcStatus> {
        let r = auth::signed(request, |r| &r.actor)?;
        let mut v = Violations::new();
        let actor = actor(&mut v, &r.actor);
        let id = v.uuid("id", &r.id, true);
        let status = v.check("status", status(r.status));
        let resolution = long_text(&mut v, "resolution", &r.resolution);
        if status == Some(Status::Resolved) && resolution.is_empty() {
            v.add("resolution", "is required to resolve");
        }
        let (Some(id), Some(status), true) = (id, status, v.is_empty()) else {
            return Err(FeedbackError::Invalid(v).into());
        };
        let feedback = self
            .desk
            .set_status(id, status, Some(resolution), &actor)
            .await?;
        Ok(Response::new(v1::UpdateFeedbackStatusResponse {
            feedback: Some(to_proto(feedback)),
        }))
    }

    async fn list_feedback(
        &self,
        request: Request<v1::ListFeedbackRequest>,
    ) -> Result<Response<v1::ListFeedbackResponse>, GrpcStatus> {
        let r = request.into_inner();
        let mut v = Violations::new();
        let source = match r.source {
            0 => None,
            value => v.check("source", source(value)),
        };
        let customer_id = v.uuid("customer_id", &r.customer_id, false);
        let page = PageRequest::parse(&mut v, r.page_size, &r.page_token, SHORT_PAGES);
        let owner = Some(v.text("owner", &r.owner, 64, false)).filter(|o| !o.is_empty());
        let category = Some(v.text("category", &r.category, 64, false))
            .filter(|c| !c.is_empty())
            .map(|c| c.to_lowercase());
        if !v.is_empty() {
            return Err(FeedbackError::Invalid(v).into());
        }
        let filter = Filter {
            open_only: r.open_only,
            overdue_only: r.overdue_only,
            owner,
            category,
            source,
            customer_id,
        };
        let page = self.desk.list(filter, &page).await?;
        Ok(Response::new(v1::ListFeedbackResponse {
            items: page.items.into_iter().map(to_proto).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn get_feedback_summary(
        &self,
        request: Request<v1::GetFeedbackSummaryRequest>,
    ) -> Result<Response<v1::GetFeedbackSummaryResponse>, GrpcStatus> {
        let r = request.into_inner();
        let mut v = Violations::new();
        let since = v.time("since", r.since.as_ref(), true);
        let until = v.time("until", r.until.as_ref(), true);
        if let (Some(s), Some(u)) = (since, until)
            && u <= s
        {
            v.add("until", "must be after since");
        }
        let (Some(since), Some(until), true) = (since, until, v.is_empty()) else {
            return Err(FeedbackError::Invalid(v).into());
        };
        let s = self.desk.summary(since, until).await?;
        let counts = |rows: Vec<(String, i64)>| {
            rows.into_iter()
                .map(|(key, count)| v1::Count { key, count })
                .collect()
        };
        Ok(Response::new(v1::GetFeedbackSummaryResponse {
            total: s.total,
            by_source: counts(s.by_source),
            by_sentiment: counts(s.by_sentiment),
            by_category: counts(s.by_category),
            share_resolved: s.share_resolved,
            median_hours_to_resolution: s.median_hours_to_resolution,
        }))
    }
}

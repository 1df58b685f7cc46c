//! `switchboard.v1.CaseService`: proto <-> domain and `CaseError` -> `Status`.

use chrono::Utc;
use tonic::{Request, Response, Status};

use super::{
    Assignee, Case, CaseError, CaseFilter, CasePatch, CaseStatus, Cases, Change, Comment, NewCase,
    Priority,
};
use crate::auth;
use crate::call_model::parse_agent_id;
use crate::grpc_status;
use crate::page_token::{PageRequest, SHORT_PAGES};
use crate::proto::v1;
use crate::proto::v1::case_service_server::CaseService;
use crate::proto_time::to_timestamp;
use crate::validation::Violations;

const MAX_TEXT: usize = 10_000;

pub struct CaseGrpc {
    cases: Cases,
}

impl CaseGrpc {
    pub fn new(cases: Cases) -> Self {
        Self { cases }
    }
}

impl From<CaseError> for Status {
    fn from(error: CaseError) -> Self {
        match &error {
            CaseError::Invalid(violations) => grpc_status::invalid_argument(violations),
            CaseError::NotFound | CaseError::CustomerNotFound => {
                Status::not_found(error.to_string())
            }
            CaseError::StaleVersion { .. } => Status::aborted(error.to_string()),
            CaseError::IllegalTransition { .. } => Status::failed_precondition(error.to_string()),
            CaseError::Unavailable(source) => grpc_status::unavailable(source),
            CaseError::Database(source) => grpc_status::internal(source),
        }
    }
}

fn actor(v: &mut Violations, value: &str) -> String {
    v.check("actor", parse_agent_id(value)).unwrap_or_default()
}

fn long_text(v: &mut Violations, field: &str, value: &str) -> String {
    v.free_text(field, value, MAX_TEXT).trim().to_owned()
}

fn priority(value: i32, default: Option<Priority>) -> Result<Priority, String> {
    match v1::CasePriority::try_from(value) {
        Ok(v1::CasePriority::Low) => Ok(Priority::Low),
        Ok(v1::CasePriority::Normal) => Ok(Priority::Normal),
        Ok(v1::CasePriority::High) => Ok(Priority::High),
        Ok(v1::CasePriority::Urgent) => Ok(Priority::Urgent),
        Ok(v1::CasePriority::Unspecified) => {
            default.ok_or_else(|| "must name a priority".to_owned())
        }
        Err(_) => Err(format!("unknown priority {value}")),
    }
}

fn status(value: i32) -> Result<CaseStatus, String> {
    match v1::CaseStatus::try_from(value) {
        Ok(v1::CaseStatus::New) => Ok(CaseStatus::New),
        Ok(v1::CaseStatus::Open) => Ok(CaseStatus::Open),
        Ok(v1::CaseStatus::Pending) => Ok(CaseStatus::Pending),
        Ok(v1::CaseStatus::Resolved) => Ok(CaseStatus::Resolved),
        Ok(v1::CaseStatus::Closed) => Ok(CaseStatus::Closed),
        _ => Err(format!("unknown case status {value}")),
    }
}

fn status_to_proto(status: CaseStatus) -> v1::CaseStatus {
    match status {
        CaseStatus::New => v1::CaseStatus::New,
        CaseStatus::Open => v1::CaseStatus::Open,
        CaseStatus::Pending => v1::CaseStatus::Pending,
        CaseStatus::Resolved => v1::CaseStatus::Resolved,
        CaseStatus::Closed => v1::CaseStatus::Closed,
    }
}

pub fn priority_to_proto(priority: Priority) -> v1::CasePriority {
    match priority {
        Priority::Low => v1::CasePriority::Low,
        Priority::Normal => v1::CasePriority::Normal,
        Priority::High => v1::CasePriority::High,
        Priority::Urgent => v1::CasePriority::Urgent,
    }
}

pub(crate) fn to_proto(case: Case) -> v1::Case {
    let overdue = case.is_overdue(Utc::now());
    let (agent, team) = match case.assignee {
        Some(Assignee::Agent(agent)) => (agent, String::new()),
        Some(Assignee::Team(team)) => (String::new(), team),
        None => (String::new(), String::new()),
    };
    v1::Case {
        id: case.id.to_string(),
        customer_id: case.customer_id.to_string(),
        subject: case.subject,
        description: case.description,
        status: status_to_proto(case.status).into(),
        priority: priority_to_proto(case.priority).into(),
        assignee_agent_id: agent,
        assignee_team: team,
        sla_due_at: Some(to_timestamp(case.sla_due_at)),
        overdue,
        create_time: Some(to_timestamp(case.created_at)),
        update_time: Some(to_timestamp(case.updated_at)),
        resolved_at: case.resolved_at.map(to_timestamp),
        closed_at: case.closed_at.map(to_timestamp),
        version: case.version,
    }
}

fn case_response<T>(wrap: impl FnOnce(Option<v1::Case>) -> T, case: Case) -> Response<T> {
    Response::new(wrap(Some(to_proto(case))))
}

#[tonic::async_trait]
impl CaseService for CaseGrpc {
    async fn open_case(
        &self,
        request: Request<v1::OpenCaseRequest>,
    ) -> Result<Response<v1::OpenCaseResponse>, Status> {
        let r = auth::signed(request, |r| &r.actor)?;
        let mut v = Violations::new();
        let request_id = v.text("request_id", &r.request_id, 100, true);
        let customer_id = v.uuid("customer_id", &r.customer_id, true);
        let subject = v.masked_text("subject", &r.subject, 200, true);
        let description = long_text(&mut v, "description", &r.description);
        let priority = v.check("priority", priority(r.priority, Some(Priority::Normal)));
        let actor = actor(&mut v, &r.actor);
        let (Some(customer_id), Some(priority), true) = (customer_id, priority, v.is_empty())
        else {
            return Err(CaseError::Invalid(v).into());
        };
        let case = self
            .cases
            .open(NewCase {
                request_id,
                customer_id,
                subject,
                description,
                priority,
                actor,
            })
            .await?;
        Ok(case_response(|case| v1::OpenCaseResponse { case }, case))
    }

    async fn get_case(
        &self,
        request: Request<v1::GetCaseRequest>,
    ) -> Result<Response<v1::GetCaseResponse>, Status> {
        let mut v = Violations::new();
        let Some(id) = v.uuid("id", &request.get_ref().id, true) else {
            return Err(CaseError::Invalid(v).into());
        };
        let case = self.cases.get(id).await?;
        Ok(case_response(|case| v1::GetCaseResponse { case }, case))
    }

    async fn update_case(
        &self,
        request: Request<v1::UpdateCaseRequest>,
    ) -> Result<Response<v1::UpdateCaseResponse>, Status> {
        let r = auth::signed(request, |r| &r.actor)?;
        let mut v = Violations::new();
        let case = r.case.unwrap_or_default();
        let id = v.uuid("case.id", &case.id, true);
        if case.version <= 0 {
            v.add("case.version", "must be the version you read (at least 1)");
        }
        let actor = actor(&mut v, &r.actor);
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            v.add("update_mask", "name at least one field to change");
        }
        let mut patch = CasePatch::default();
        for path in &paths {
            match path.as_str() {
                "subject" => {
                    patch.subject = Some(v.masked_text("case.subject", &case.subject, 200, true))
                }
                "description" => {
                    patch.description =
                        Some(long_text(&mut v, "case.description", &case.description))
                }
                "priority" => {
                    patch.priority = v.check("case.priority", priority(case.priority, None))
                }
                "status" => patch.status = v.check("case.status", status(case.status)),
                other => v.add(
                    "update_mask",
                    format!("unknown or read-only field {other:?} (assign with AssignCase)"),
                ),
            }
        }
        let (Some(id), true) = (id, v.is_empty()) else {
            return Err(CaseError::Invalid(v).into());
        };
        let updated = self.cases.update(id, case.version, patch, &actor).await?;
        Ok(case_response(
            |case| v1::UpdateCaseResponse { case },
            updated,
        ))
    }

    async fn assign_case(
        &self,
        request: Request<v1::AssignCaseRequest>,
    ) -> Result<Response<v1::AssignCaseResponse>, Status> {
        use v1::assign_case_request::Assignee as ProtoAssignee;
        let r = auth::signed(request, |r| &r.actor)?;
        let mut v = Violations::new();
        let id = v.uuid("case_id", &r.case_id, true);
        let actor = actor(&mut v, &r.actor);
        let assignee = match r.assignee {
            Some(ProtoAssignee::AgentId(agent)) => v
                .check("agent_id", parse_agent_id(&agent))
                .map(Assignee::Agent),
            Some(ProtoAssignee::Team(team)) => {
                let team = v.text("team", &team, 64, true);
                (!team.is_empty()).then_some(Assignee::Team(team))
            }
            None => {
                v.add("assignee", "set agent_id or team");
                None
            }
        };
        let (Some(id), Some(assignee), true) = (id, assignee, v.is_empty()) else {
            return Err(CaseError::Invalid(v).into());
        };
        let case = self.cases.assign(id, assignee, &actor).await?;
        Ok(case_response(|case| v1::AssignCaseResponse { case }, case))
    }

    async fn add_case_comment(
        &self,
        request: Request<v1::AddCaseCommentRequest>,
    ) -> Result<Response<v1::AddCaseCommentResponse>, Status> {
        let r = auth::signed(request, |r| &r.actor)?;
        let mut v = Violations::new();
        let id = v.uuid("case_id", &r.case_id, true);
        let actor = actor(&mut v, &r.actor);
        if r.text.trim().is_empty() {
            v.add("text", "is required");
        }
        let text = long_text(&mut v, "text", &r.text);
        let (Some(id), true) = (id, v.is_empty()) else {
            return Err(CaseError::Invalid(v).into());
        };
        let comment = self.cases.comment(id, &text, &actor).await?;
        Ok(Response::new(v1::AddCaseCommentResponse {
            comment: Some(comment_to_proto(comment)),
        }))
    }

    async fn list_cases(
        &self,
        request: Request<v1::ListCasesRequest>,
    ) -> Result<Response<v1::ListCasesResponse>, Status> {
        let r = request.into_inner();
        let mut v = Violations::new();
        let customer_id = match r.customer_id.as_str() {
            "" => None,
            id => v.uuid("customer_id", id, true),
        };
        let status_filter = match r.status {
            0 => None,
            value => v.check("status", status(value)),
        };
        let agent_id = match r.assignee_agent_id.trim() {
            "" => None,
            agent => v.check("assignee_agent_id", parse_agent_id(agent)),
        };
        let team = Some(v.text("team", &r.team, 64, false)).filter(|t| !t.is_empty());
        let page = PageRequest::parse(&mut v, r.page_size, &r.page_token, SHORT_PAGES);
        if !v.is_empty() {
            return Err(CaseError::Invalid(v).into());
        }
        let filter = CaseFilter {
            customer_id,
            status: status_filter,
            agent_id,
            team,
            overdue_only: r.overdue_only,
        };
        let page = self.cases.list(filter, &page).await?;
        Ok(Response::new(v1::ListCasesResponse {
            cases: page.items.into_iter().map(to_proto).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn get_case_history(
        &self,
        request: Request<v1::GetCaseHistoryRequest>,
    ) -> Result<Response<v1::GetCaseHistoryResponse>, Status> {
        let mut v = Violations::new();
        let Some(id) = v.uuid("case_id", &request.get_ref().case_id, true) else {
            return Err(CaseError::Invalid(v).into());
        };
        let changes = self.cases.history(id).await?;
        Ok(Response::new(v1::GetCaseHistoryResponse {
            changes: changes.into_iter().map(change_to_proto).collect(),
        }))
    }
}

pub(crate) fn comment_to_proto(comment: Comment) -> v1::CaseComment {
    v1::CaseComment {
        id: comment.id.to_string(),
        case_id: comment.case_id.to_string(),
        author: comment.author,
        text: comment.text,
        create_time: Some(to_timestamp(comment.created_at)),
    }
}

pub(crate) fn change_to_proto(c: Change) -> v1::CaseChange {
    v1::CaseChange {
        action: c.action,
        from: c.from,
        to: c.to,
        actor: c.actor,
        at: Some(to_timestamp(c.at)),
    }
}

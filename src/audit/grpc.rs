//! `switchboard.v1.AuditService`.

use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{AuditEvent, AuditFilter};
use crate::grpc_status;
use crate::proto::v1;
use crate::proto::v1::audit_service_server::AuditService;
use crate::proto_time::to_timestamp;
use crate::validation::Violations;

pub struct AuditGrpc {
    log: super::AuditLog,
}

impl AuditGrpc {
    pub fn new(log: super::AuditLog) -> Self {
        Self { log }
    }
}

#[tonic::async_trait]
impl AuditService for AuditGrpc {
    async fn list_audit_events(
        &self,
        request: Request<v1::ListAuditEventsRequest>,
    ) -> Result<Response<v1::ListAuditEventsResponse>, Status> {
        let r = request.into_inner();
        let mut v = Violations::new();
        let customer_id = match r.customer_id.as_str() {
            "" => None,
            id => v.check(
                "customer_id",
                Uuid::parse_str(id).map_err(|_| "must be a UUID"),
            ),
        };
        let since = v.time("since", r.since.as_ref(), false);
        let until = v.time("until", r.until.as_ref(), false);
        let limit = i64::from(v.page_size(r.page_size, 100, 500));
        let before_id = match r.page_token.as_str() {
            "" => None,
            token => v.check(
                "page_token",
                token
                    .parse::<i64>()
                    .map_err(|_| "is not a page token from this service"),
            ),
        };
        let actor = Some(v.text("actor", &r.actor, 200, false)).filter(|a| !a.is_empty());
        if !v.is_empty() {
            return Err(grpc_status::invalid_argument(&v));
        }
        let filter = AuditFilter {
            actor,
            customer_id,
            since,
            until,
        };
        let mut rows = self
            .log
            .list(&filter, before_id, limit + 1)
            .await
            .map_err(|e| match crate::db::classify(&e) {
                crate::db::Failure::Unavailable => grpc_status::unavailable(&e),
                _ => grpc_status::internal(&e),
            })?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_page_token = if more {
            rows.last()
                .map(|(id, _)| id.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(v1::ListAuditEventsResponse {
            events: rows.into_iter().map(|(_, e)| to_proto(e)).collect(),
            next_page_token,
        }))
    }
}

pub(crate) fn to_proto(e: AuditEvent) -> v1::AuditEvent {
    v1::AuditEvent {
        at: Some(to_timestamp(e.at)),
        actor: e.context.actor,
        role: e.context.role,
        rpc: e.context.rpc,
        customer_id: e.customer_id.map(|id| id.to_string()).unwrap_or_default(),
        request_id: e.context.request_id,
        outcome: e.outcome.to_owned(),
    }
}

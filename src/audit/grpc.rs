//! `switchboard.v1.AuditService`.

use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{AuditEvent, AuditFilter};
use crate::grpc_status;
use crate::page_token::{LONG_PAGES, PageRequest};
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
        let page = PageRequest::parse(&mut v, r.page_size, &r.page_token, LONG_PAGES);
        let actor = Some(v.text("actor", &r.actor, 200, false)).filter(|a| !a.is_empty());
        let fingerprint = format!(
            "audit|{:?}|{customer_id:?}|{since:?}|{until:?}",
            actor.as_deref()
        );
        let before_id = v
            .check("page_token", page.after::<i64>(&fingerprint))
            .flatten();
        if !v.is_empty() {
            return Err(grpc_status::invalid_argument(&v));
        }
        let filter = AuditFilter {
            actor,
            customer_id,
            since,
            until,
        };
        let rows = self
            .log
            .list(&filter, before_id, page.fetch_limit())
            .await
            .map_err(|e| match crate::db::classify(&e) {
                crate::db::Failure::Unavailable => grpc_status::unavailable(&e),
                _ => grpc_status::internal(&e),
            })?;
        let (rows, next_page_token) = page.page(&fingerprint, rows, |(id, _)| *id);
        Ok(Response::new(v1::ListAuditEventsResponse {
            events: rows.into_iter().map(|(_, e)| to_proto(e)).collect(),
            next_page_token: next_page_token.unwrap_or_default(),
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
        read_count: e.count,
        last_at: e.last_at.map(to_timestamp),
    }
}

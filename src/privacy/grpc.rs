//! `switchboard.v1.PrivacyService`: proto <-> domain and `PrivacyError` -> `Status`.

use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{CustomerData, Privacy, PrivacyError};
use crate::calls::CallSummary;
use crate::proto::v1;
use crate::proto::v1::privacy_service_server::PrivacyService;
use crate::proto_time::to_timestamp;
use crate::validation::Violations;
use crate::{activity, audit, cases, customers, grpc_status, interactions};

pub struct PrivacyGrpc {
    privacy: Privacy,
}

impl PrivacyGrpc {
    pub fn new(privacy: Privacy) -> Self {
        Self { privacy }
    }
}

impl From<PrivacyError> for Status {
    fn from(error: PrivacyError) -> Self {
        match &error {
            PrivacyError::NotFound => Status::not_found(error.to_string()),
            PrivacyError::Unavailable(source) => grpc_status::unavailable(source),
            PrivacyError::Database(source) => grpc_status::internal(source),
        }
    }
}

fn customer_id(value: &str) -> Result<Uuid, Status> {
    Violations::single_uuid("customer_id", value).map_err(|v| grpc_status::invalid_argument(&v))
}

fn call_to_proto(call: CallSummary) -> v1::CallRecord {
    v1::CallRecord {
        gateway_id: call.gateway_id,
        call_id: call.call_id,
        state: call.state.as_str().to_owned(),
        caller_number: call.caller_number.unwrap_or_default(),
        dialed_number: call.dialed_number.unwrap_or_default(),
        queue: call.queue.unwrap_or_default(),
        handled_by: call.handled_by,
        transfers: call.transfers,
        offered_at: call.offered_at.map(to_timestamp),
        answered_at: call.answered_at.map(to_timestamp),
        ended_at: call.ended_at.map(to_timestamp),
        hold_ms: call.hold_ms,
    }
}

fn export_to_proto(data: CustomerData) -> v1::ExportCustomerDataResponse {
    v1::ExportCustomerDataResponse {
        delete_time: data.customer.deleted_at.map(to_timestamp),
        erase_time: data.customer.erased_at.map(to_timestamp),
        customer: Some(customers::grpc::to_proto(data.customer.customer)),
        feedback: data
            .feedback
            .into_iter()
            .map(crate::feedback::grpc::to_proto)
            .collect(),
        interactions: data
            .interactions
            .into_iter()
            .map(interactions::grpc::to_proto)
            .collect(),
        cases: data
            .cases
            .into_iter()
            .map(|(case, comments, history)| v1::CaseRecord {
                case: Some(cases::grpc::to_proto(case)),
                comments: comments
                    .into_iter()
                    .map(cases::grpc::comment_to_proto)
                    .collect(),
                history: history
                    .into_iter()
                    .map(cases::grpc::change_to_proto)
                    .collect(),
            })
            .collect(),
        orders: data
            .orders
            .into_iter()
            .map(activity::grpc::order_to_proto)
            .collect(),
        service_events: data
            .service_events
            .into_iter()
            .map(activity::grpc::service_event_to_proto)
            .collect(),
        calls: data.calls.into_iter().map(call_to_proto).collect(),
        access_log: data
            .access_log
            .into_iter()
            .map(audit::grpc::to_proto)
            .collect(),
        export_time: Some(to_timestamp(data.exported_at)),
    }
}

#[tonic::async_trait]
impl PrivacyService for PrivacyGrpc {
    async fn export_customer_data(
        &self,
        request: Request<v1::ExportCustomerDataRequest>,
    ) -> Result<Response<v1::ExportCustomerDataResponse>, Status> {
        let id = customer_id(&request.get_ref().customer_id)?;
        let data = self.privacy.export(id).await?;
        Ok(Response::new(export_to_proto(data)))
    }

    async fn erase_customer(
        &self,
        request: Request<v1::EraseCustomerRequest>,
    ) -> Result<Response<v1::EraseCustomerResponse>, Status> {
        let id = customer_id(&request.get_ref().customer_id)?;
        let erasure = self.privacy.erase(id).await?;
        Ok(Response::new(v1::EraseCustomerResponse {
            erase_time: Some(to_timestamp(erasure.erased_at)),
            numbers_purged: i32::try_from(erasure.numbers_purged).unwrap_or(i32::MAX),
        }))
    }
}

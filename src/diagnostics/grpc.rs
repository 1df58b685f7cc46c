//! `switchboard.v1.DiagnosticsService`.

use tonic::{Request, Response, Status};

use crate::proto::v1;
use crate::proto::v1::diagnostics_service_server::DiagnosticsService;

#[derive(Debug, Default)]
pub struct DiagnosticsGrpc;

#[tonic::async_trait]
impl DiagnosticsService for DiagnosticsGrpc {
    async fn echo(
        &self,
        request: Request<v1::EchoRequest>,
    ) -> Result<Response<v1::EchoResponse>, Status> {
        Ok(Response::new(v1::EchoResponse {
            payload: request.into_inner().payload,
        }))
    }
}

//! `switchboard.v1.ScreenPopService` and `switchboard.v1.CallerIdService`: request parsing and
//! `PopError` -> `Status`. Both answer from the same lookup and audit the customers they show.

use tonic::{Request, Response, Status};

use super::{PopError, PopRequest, PopSource, ScreenPops, caller_id};
use crate::audit::Auditor;
use crate::grpc_status;
use crate::phone::{Caller, PhoneParser};
use crate::proto::v1;
use crate::proto::v1::caller_id_service_server::CallerIdService;
use crate::proto::v1::screen_pop_service_server::ScreenPopService;
use crate::validation::Violations;

#[derive(Clone)]
pub struct ScreenPopGrpc {
    pops: ScreenPops,
    phones: PhoneParser,
    auditor: Auditor,
}

impl ScreenPopGrpc {
    pub fn new(pops: ScreenPops, phones: PhoneParser, auditor: Auditor) -> Self {
        Self {
            pops,
            phones,
            auditor,
        }
    }
}

impl From<PopError> for Status {
    fn from(error: PopError) -> Self {
        match &error {
            PopError::Invalid(violations) => grpc_status::invalid_argument(violations),
            PopError::Unavailable(source) => grpc_status::unavailable(source.as_ref()),
            PopError::Database(source) => grpc_status::internal(source.as_ref()),
            PopError::Overloaded => Status::unavailable(
                "this instance is at capacity and its cache is not answering; retry with back-off or on another instance",
            ),
        }
    }
}

/// A lookup to make, or the answer for a caller with no number to look up.
enum Parsed {
    Lookup(PopRequest),
    NoNumber(v1::CallerKind),
}

/// Parses a lookup; every bad field is reported.
fn pop_request(request: &v1::LookupRequest, phones: &PhoneParser) -> Result<Parsed, Violations> {
    let mut violations = Violations::new();
    let caller = violations.check("caller_number", phones.parse_caller(&request.caller_number));
    let dialed = match request.dialed_number.trim() {
        "" => None,
        dialed => violations.check("dialed_number", phones.parse(dialed, "")),
    };
    let call_id = violations.text("call_id", &request.call_id, 128, false);
    if !violations.is_empty() {
        return Err(violations);
    }
    Ok(match caller {
        Some(Caller::Number(caller)) => Parsed::Lookup(PopRequest {
            caller,
            dialed,
            call_id: (!call_id.is_empty()).then_some(call_id),
        }),
        Some(Caller::Withheld) => Parsed::NoNumber(v1::CallerKind::Withheld),
        Some(Caller::NotANumber) | None => Parsed::NoNumber(v1::CallerKind::NotANumber),
    })
}

impl ScreenPopGrpc {
    /// The pop for a request (audited as a read of the customers it shows) and where it came
    /// from; a caller with no number to look up gets NONE with its kind, and no lookup.
    async fn pop(
        &self,
        request: &v1::LookupRequest,
    ) -> Result<(v1::ScreenPop, v1::PopSource), Status> {
        let request = match pop_request(request, &self.phones) {
            Ok(Parsed::Lookup(request)) => request,
            Ok(Parsed::NoNumber(kind)) => {
                let pop = v1::ScreenPop {
                    r#match: v1::MatchKind::None.into(),
                    caller_kind: kind.into(),
                    ..Default::default()
                };
                return Ok((pop, v1::PopSource::None));
            }
            Err(violations) => return Err(PopError::Invalid(violations).into()),
        };
        let (mut pop, source) = self.pops.lookup(&request).await?;
        pop.caller_kind = v1::CallerKind::Number.into();
        let shown = pop.card.iter().chain(pop.candidates.iter());
        self.auditor
            .read(shown.filter_map(|card| uuid::Uuid::parse_str(&card.customer_id).ok()));
        let source = match source {
            PopSource::Cache => v1::PopSource::Cache,
            PopSource::Database => v1::PopSource::Database,
            PopSource::Shared => v1::PopSource::Shared,
            PopSource::CallPin => v1::PopSource::CallPin,
        };
        Ok((pop, source))
    }
}

#[tonic::async_trait]
impl ScreenPopService for ScreenPopGrpc {
    async fn lookup(
        &self,
        request: Request<v1::LookupRequest>,
    ) -> Result<Response<v1::LookupResponse>, Status> {
        let (pop, source) = self.pop(request.get_ref()).await?;
        Ok(Response::new(v1::LookupResponse {
            pop: Some(pop),
            source: source.into(),
        }))
    }
}

#[tonic::async_trait]
impl CallerIdService for ScreenPopGrpc {
    async fn get_caller_name(
        &self,
        request: Request<v1::GetCallerNameRequest>,
    ) -> Result<Response<v1::GetCallerNameResponse>, Status> {
        let caller_number = request.into_inner().caller_number;
        let lookup = v1::LookupRequest {
            caller_number,
            ..Default::default()
        };
        let (pop, _) = self.pop(&lookup).await?;
        Ok(Response::new(v1::GetCallerNameResponse {
            name: caller_id::caller_name(&pop),
            r#match: pop.r#match,
            caller_kind: pop.caller_kind,
        }))
    }

    async fn get_caller_routing(
        &self,
        request: Request<v1::GetCallerRoutingRequest>,
    ) -> Result<Response<v1::GetCallerRoutingResponse>, Status> {
        let request = request.into_inner();
        let lookup = v1::LookupRequest {
            caller_number: request.caller_number,
            dialed_number: request.dialed_number,
            call_id: request.call_id,
        };
        let (pop, source) = self.pop(&lookup).await?;
        Ok(Response::new(caller_id::routing(&pop, source)))
    }
}

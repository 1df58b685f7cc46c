//! `switchboard.v1.ScreenPopService` and `switchboard.v1.CallerIdService`: request parsing and
//! `PopError` -> `Status`. Both answer from the same lookup and audit the customers they show.

use tonic::{Request, Response, Status};

use super::{PopAnswer, PopBody, PopError, PopRequest, PopSource, ScreenPops, caller_id};
use crate::audit::Auditor;
use crate::grpc_status;
use crate::phone::{Caller, PhoneParser};
use crate::proto::lookup::EncodedPop;
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

/// What a lookup request found.
enum Found {
    Answer(Box<(PopRequest, PopAnswer)>),
    NoNumber(v1::CallerKind),
}

fn source(source: PopSource) -> v1::PopSource {
    match source {
        PopSource::Cache => v1::PopSource::Cache,
        PopSource::Database => v1::PopSource::Database,
        PopSource::Shared => v1::PopSource::Shared,
        PopSource::CallPin => v1::PopSource::CallPin,
    }
}

/// The pop of a caller with no number to look up: NONE, with its kind.
fn no_number(kind: v1::CallerKind) -> v1::ScreenPop {
    v1::ScreenPop {
        r#match: v1::MatchKind::None.into(),
        caller_kind: kind.into(),
        ..Default::default()
    }
}

impl ScreenPopGrpc {
    /// The answer for a request, audited as a read of the customers it shows; a caller with no
    /// number to look up gets no lookup.
    async fn find(&self, request: &v1::LookupRequest) -> Result<Found, Status> {
        let request = match pop_request(request, &self.phones) {
            Ok(Parsed::Lookup(request)) => request,
            Ok(Parsed::NoNumber(kind)) => return Ok(Found::NoNumber(kind)),
            Err(violations) => return Err(PopError::Invalid(violations).into()),
        };
        let answer = self.pops.answer(&request).await?;
        self.auditor.read(answer.customer_ids());
        Ok(Found::Answer(Box::new((request, answer))))
    }

    /// The pop for a request, decoded, and where it came from.
    async fn pop(
        &self,
        request: &v1::LookupRequest,
    ) -> Result<(v1::ScreenPop, v1::PopSource), Status> {
        let (request, answer) = match self.find(request).await? {
            Found::NoNumber(kind) => return Ok((no_number(kind), v1::PopSource::None)),
            Found::Answer(found) => *found,
        };
        let (mut pop, from) = self.pops.decoded(&request, answer).await?;
        pop.caller_kind = v1::CallerKind::Number.into();
        Ok((pop, source(from)))
    }
}

#[tonic::async_trait]
impl ScreenPopService for ScreenPopGrpc {
    async fn lookup(
        &self,
        request: Request<v1::LookupRequest>,
    ) -> Result<Response<v1::LookupResponse>, Status> {
        let found = match self.find(request.get_ref()).await? {
            Found::NoNumber(kind) => Err(kind),
            Found::Answer(found) => Ok(found.1),
        };
        let response = match found {
            Err(kind) => v1::LookupResponse {
                pop: Some(no_number(kind)),
                source: v1::PopSource::None.into(),
                encoded_pop: None,
            },
            // A cached pop goes out as its bytes, with the dialed campaign and the caller's kind
            // appended: the same bytes as encoding it whole (`proto::lookup`).
            Ok(PopAnswer {
                body: PopBody::Encoded { bytes, .. },
                source: from,
                dialed_campaign,
            }) => v1::LookupResponse {
                pop: None,
                source: source(from).into(),
                encoded_pop: Some(EncodedPop::new(
                    bytes,
                    dialed_campaign.as_ref(),
                    v1::CallerKind::Number,
                )),
            },
            Ok(PopAnswer {
                body: PopBody::Decoded(mut pop),
                source: from,
                dialed_campaign,
            }) => {
                pop.dialed_campaign = dialed_campaign;
                pop.caller_kind = v1::CallerKind::Number.into();
                v1::LookupResponse {
                    pop: Some(*pop),
                    source: source(from).into(),
                    encoded_pop: None,
                }
            }
        };
        Ok(Response::new(response))
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

//! The HTTP caller-ID lookups for dialplans, on the gRPC port:
//! - `GET /v1/cid/{number}`: `CallerIdService.GetCallerName`, the name as `text/plain`;
//! - `GET /v1/pop/{number}?dialed=&call_id=`: `CallerIdService.GetCallerRouting`, as canonical
//!   protobuf JSON.
//!
//! Each GET is translated into that gRPC call (an HTTP/2 request with one protobuf frame) and sent
//! down the same stack as any other: gRPC-web, metrics and traces, admission, auth, rate limits and
//! audit all see an ordinary gRPC request, so nothing bypasses a layer. The number travels in the
//! protobuf body, never in the path a layer logs or labels.
//!
//! Credentials, for systems that cannot send a custom header:
//! - `x-api-key: <key>` or `authorization: Bearer <key or JWT>`, passed on as they are;
//! - `authorization: Basic base64(any-user:<key>)` (a URL's `user:key@host`), read as the key;
//! - `?key=<key>`, when no header credential is sent.
//!
//! The key is moved into the `x-api-key` header of the translated request, and the query string is
//! dropped with the rest of the original URI: no layer, log, trace, metric or audit row ever sees
//! it. `+` in the path or query is a plus sign, not a space (`?dialed=+18005550100` works).
//!
//! The answers (docs/INTEGRATIONS.md):
//! - `/v1/cid`: 200 with the name; 404 with an empty body when there is no name (a miss, a withheld
//!   caller, a SIP user that is not a number). Every other answer has an empty body too, with the
//!   reason in `grpc-status` and `grpc-message` headers: mod_cidlookup takes any body as the name.
//! - `/v1/pop`: 200 with the JSON for every answer, NONE included; errors as AIP-193 JSON
//!   (`{"error": {"code", "status", "message", "details"}}`).

use std::sync::LazyLock;
use std::task::{Context, Poll};

use base64::Engine as _;
use bytes::{BufMut as _, Bytes, BytesMut};
use futures::future::{BoxFuture, Either};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt as _, Full};
use percent_encoding::percent_decode_str;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use tonic::body::Body;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;
use tower::{Layer, Service};

use crate::grpc_status;
use crate::proto::{self, v1};
use crate::validation::Violations;

const CID_PREFIX: &str = "/v1/cid/";
const POP_PREFIX: &str = "/v1/pop/";
const GET_CALLER_NAME: &str = "/switchboard.v1.CallerIdService/GetCallerName";
const GET_CALLER_ROUTING: &str = "/switchboard.v1.CallerIdService/GetCallerRouting";
/// Longer raw input than any number form: refused before it is decoded.
const MAX_RAW_CHARS: usize = 2048;

/// Translates the caller-ID GETs into gRPC; passes everything else through untouched.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallerIdHttpLayer;

impl<S> Layer<S> for CallerIdHttpLayer {
    type Service = CallerIdHttp<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallerIdHttp { inner }
    }
}

#[derive(Debug, Clone)]
pub struct CallerIdHttp<S> {
    inner: S,
}

/// Which lookup a GET asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    Name,
    Routing,
}

impl Lookup {
    fn of(path: &str) -> Option<(Self, &str)> {
        if let Some(number) = path.strip_prefix(CID_PREFIX) {
            Some((Lookup::Name, number))
        } else {
            path.strip_prefix(POP_PREFIX)
                .map(|number| (Lookup::Routing, number))
        }
    }
}

impl<S> Service<Request<Body>> for CallerIdHttp<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response<Body>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let Some((lookup, _)) = Lookup::of(request.uri().path()) else {
            return Either::Left(self.inner.call(request));
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Either::Right(Box::pin(async move {
            let grpc = match translate(lookup, request) {
                Ok(grpc) => grpc,
                Err(answer) => return Ok(*answer),
            };
            let response = inner.call(grpc).await?;
            Ok(answer(lookup, response).await)
        }))
    }
}

/// The gRPC request for a caller-ID GET, or the HTTP answer when it cannot be one.
fn translate(lookup: Lookup, request: Request<Body>) -> Result<Request<Body>, Box<Response<Body>>> {
    let (parts, _) = request.into_parts();
    if parts.method != Method::GET {
        let mut refused = render(lookup, &Status::unimplemented("only GET is served here"));
        *refused.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        refused
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return Err(Box::new(refused));
    }
    let path = parts.uri.path();
    let raw_number = Lookup::of(path).map_or("", |(_, number)| number);
    let query = parts.uri.query().unwrap_or("");
    if raw_number.len() > MAX_RAW_CHARS || query.len() > MAX_RAW_CHARS {
        let violations = Violations::single("caller_number", "the request is too long");
        return Err(Box::new(render(
            lookup,
            &grpc_status::invalid_argument(&violations),
        )));
    }
    let caller_number = match decode(raw_number) {
        Some(number) => number,
        None => {
            let violations = Violations::single("caller_number", "is not valid UTF-8");
            return Err(Box::new(render(
                lookup,
                &grpc_status::invalid_argument(&violations),
            )));
        }
    };
    let mut params = Params::default();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(value) = decode(value) else {
            let violations = Violations::single(name, "is not valid UTF-8");
            return Err(Box::new(render(
                lookup,
                &grpc_status::invalid_argument(&violations),
            )));
        };
        match name {
            "key" => params.key = Some(value),
            "dialed" | "dialed_number" => params.dialed = value,
            "call_id" => params.call_id = value,
            _ => {}
        }
    }
    let message = match lookup {
        Lookup::Name => v1::GetCallerNameRequest { caller_number }.encode_to_vec(),
        Lookup::Routing => v1::GetCallerRoutingRequest {
            caller_number,
            dialed_number: params.dialed,
            call_id: params.call_id,
        }
        .encode_to_vec(),
    };
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(message.len() as u32);
    frame.put_slice(&message);

    let mut grpc = Request::new(Body::new(Full::new(frame.freeze())));
    *grpc.method_mut() = Method::POST;
    *grpc.version_mut() = Version::HTTP_2;
    *grpc.uri_mut() = http::Uri::from_static(match lookup {
        Lookup::Name => GET_CALLER_NAME,
        Lookup::Routing => GET_CALLER_ROUTING,
    });
    *grpc.extensions_mut() = parts.extensions;
    let headers = grpc.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    for name in ["x-request-id", "traceparent", "tracestate", "user-agent"] {
        if let Some(value) = parts.headers.get(name) {
            headers.insert(HeaderName::from_static(name), value.clone());
        }
    }
    credentials(&parts.headers, params.key, headers);
    Ok(grpc)
}

#[derive(Default)]
struct Params {
    key: Option<String>,
    dialed: String,
    call_id: String,
}

/// Percent-decodes a path segment or query value; `+` stays a plus sign.
fn decode(raw: &str) -> Option<String> {
    percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|decoded| decoded.into_owned())
}

/// Puts the request's credential on the gRPC request: a header credential as it is (a Basic one
/// read as its password), else the `key` query parameter, as `x-api-key`.
fn credentials(original: &HeaderMap, query_key: Option<String>, grpc: &mut HeaderMap) {
    if let Some(authorization) = original.get(header::AUTHORIZATION) {
        match basic_password(authorization) {
            Some(Ok(key)) => {
                grpc.insert("x-api-key", key);
            }
            // A Basic credential that cannot be read is a wrong credential, not a missing one.
            Some(Err(())) => {
                grpc.insert(
                    header::AUTHORIZATION,
                    HeaderValue::from_static("Basic invalid"),
                );
            }
            None => {
                grpc.insert(header::AUTHORIZATION, authorization.clone());
            }
        }
    } else if let Some(key) = original.get("x-api-key") {
        grpc.insert("x-api-key", key.clone());
    } else if let Some(key) = query_key {
        let key =
            HeaderValue::from_str(&key).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        grpc.insert("x-api-key", key);
    }
}

/// The password of a Basic credential (`None` when the scheme is not Basic).
fn basic_password(value: &HeaderValue) -> Option<Result<HeaderValue, ()>> {
    let encoded = value.to_str().ok()?.strip_prefix("Basic ")?;
    let password = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|decoded| String::from_utf8(decoded).ok())
        .and_then(|pair| pair.split_once(':').map(|(_, key)| key.to_owned()))
        .and_then(|key| HeaderValue::from_str(&key).ok());
    Some(password.ok_or(()))
}

/// The HTTP answer for the gRPC response, with its `server-timing` (the server's own time).
async fn answer(lookup: Lookup, response: Response<Body>) -> Response<Body> {
    let (parts, body) = response.into_parts();
    let mut answer = match body.collect().await {
        Ok(collected) => answer_of(lookup, &parts.headers, collected),
        Err(status) => render(lookup, &status),
    };
    if let Some(timing) = parts.headers.get("server-timing") {
        answer.headers_mut().insert("server-timing", timing.clone());
    }
    answer
}

fn answer_of(
    lookup: Lookup,
    headers: &HeaderMap,
    collected: http_body_util::Collected<Bytes>,
) -> Response<Body> {
    let status = collected
        .trailers()
        .and_then(Status::from_header_map)
        .or_else(|| Status::from_header_map(headers))
        .unwrap_or_else(|| Status::internal("the answer carried no status"));
    if status.code() != Code::Ok {
        return render(lookup, &status);
    }
    let body = collected.to_bytes();
    let message = match body.get(..5) {
        Some([0, ..]) => body.slice(5..),
        _ => return render(lookup, &Status::internal("the answer was not one message")),
    };
    match lookup {
        Lookup::Name => match v1::GetCallerNameResponse::decode(message) {
            Ok(named) => name_answer(&named),
            Err(_) => render(lookup, &Status::internal("the answer did not decode")),
        },
        Lookup::Routing => match json(&ROUTING, message) {
            Some(json) => with_body(StatusCode::OK, "application/json", json),
            None => render(lookup, &Status::internal("the answer did not decode")),
        },
    }
}

/// `/v1/cid`'s answer: the name, or 404 and an empty body, with what the caller turned out to be.
fn name_answer(named: &v1::GetCallerNameResponse) -> Response<Body> {
    let mut response = if named.name.is_empty() {
        with_body(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Bytes::new(),
        )
    } else {
        with_body(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            Bytes::from(named.name.clone()),
        )
    };
    let matched = match named.r#match() {
        v1::MatchKind::Exact => "exact",
        v1::MatchKind::Multiple => "multiple",
        v1::MatchKind::None | v1::MatchKind::Unspecified => "none",
    };
    let caller = match named.caller_kind() {
        v1::CallerKind::Withheld => "withheld",
        v1::CallerKind::NotANumber => "not-a-number",
        v1::CallerKind::Number | v1::CallerKind::Unspecified => "number",
    };
    let headers = response.headers_mut();
    headers.insert("x-switchboard-match", HeaderValue::from_static(matched));
    headers.insert("x-switchboard-caller", HeaderValue::from_static(caller));
    response
}

/// An error answer: its HTTP status, `grpc-status` and `grpc-message` headers, and for
/// `/v1/pop` an AIP-193 JSON body (`/v1/cid` keeps the body empty).
fn render(lookup: Lookup, status: &Status) -> Response<Body> {
    let http_status = http_status(status.code());
    let mut response = match lookup {
        Lookup::Name => with_body(http_status, "text/plain; charset=utf-8", Bytes::new()),
        Lookup::Routing => with_body(http_status, "application/json", error_json(status)),
    };
    let headers = response.headers_mut();
    headers.insert("grpc-status", HeaderValue::from(status.code() as i32));
    let message: String =
        percent_encoding::utf8_percent_encode(status.message(), percent_encoding::NON_ALPHANUMERIC)
            .collect();
    if let Ok(message) = HeaderValue::from_str(&message) {
        headers.insert("grpc-message", message);
    }
    match http_status {
        StatusCode::UNAUTHORIZED => {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer, Basic realm=\"switchboard\""),
            );
        }
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    response
}

fn with_body(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::new(Full::new(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Customer data, and fresh after every write: never cached on the way.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The HTTP status for a gRPC code, as Google's HTTP/JSON transcoding maps them.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `{"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": ..., "details": [...]}}`
/// (AIP-193), with the field violations as a `google.rpc.BadRequest`.
fn error_json(status: &Status) -> Bytes {
    let mut details = Vec::new();
    if let Some(bad_request) = status.get_details_bad_request() {
        let violations: Vec<_> = bad_request
            .field_violations
            .iter()
            .map(|v| serde_json::json!({"field": v.field, "description": v.description}))
            .collect();
        details.push(serde_json::json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": violations,
        }));
    }
    let code = status.code();
    let body = serde_json::json!({
        "error": {
            "code": http_status(code).as_u16(),
            "status": grpc_status::code_name(code),
            "message": status.message(),
            "details": details,
        }
    });
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// `GetCallerRoutingResponse`'s descriptor, for its canonical JSON.
static ROUTING: LazyLock<Option<MessageDescriptor>> = LazyLock::new(|| {
    DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET)
        .ok()?
        .get_message_by_name("switchboard.v1.GetCallerRoutingResponse")
});

/// The canonical protobuf JSON of an encoded message, every field present (defaults included, so
/// an IVR script never meets a missing key).
fn json(descriptor: &Option<MessageDescriptor>, encoded: Bytes) -> Option<Bytes> {
    let message = DynamicMessage::decode(descriptor.clone()?, encoded).ok()?;
    let mut out = serde_json::Serializer::new(Vec::with_capacity(512));
    message
        .serialize_with_options(
            &mut out,
            &SerializeOptions::new().skip_default_fields(false),
        )
        .ok()?;
    Some(Bytes::from(out.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_routing_answer_is_canonical_protobuf_json_with_every_field() {
        let hints = v1::GetCallerRoutingResponse {
            r#match: v1::MatchKind::Exact.into(),
            caller_kind: v1::CallerKind::Number.into(),
            customer_id: "c1".into(),
            vip: true,
            candidate_count: 1,
            ..Default::default()
        };
        let encoded = Bytes::from(hints.encode_to_vec());
        let json: serde_json::Value =
            serde_json::from_slice(&json(&ROUTING, encoded).expect("renders")).expect("JSON");
        assert_eq!(json["match"], "MATCH_KIND_EXACT");
        assert_eq!(json["callerKind"], "CALLER_KIND_NUMBER");
        assert_eq!(json["customerId"], "c1");
        assert_eq!(json["vip"], true);
        assert_eq!(json["doNotCall"], false, "defaults are present");
        assert_eq!(json["tier"], "TIER_UNSPECIFIED");
        assert_eq!(json["candidateCount"], 1);
    }

    #[test]
    fn a_plus_is_a_plus_and_percent_escapes_decode() {
        assert_eq!(decode("+14155550100").as_deref(), Some("+14155550100"));
        assert_eq!(
            decode("sip:%2B14155550100@pbx;user=phone").as_deref(),
            Some("sip:+14155550100@pbx;user=phone")
        );
        assert_eq!(decode("%FF"), None);
    }

    #[test]
    fn a_basic_credential_is_read_as_its_password() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("pbx:sbk_secret");
        let value = HeaderValue::from_str(&format!("Basic {encoded}")).expect("header");
        let mut grpc = HeaderMap::new();
        let mut original = HeaderMap::new();
        original.insert(header::AUTHORIZATION, value);
        credentials(&original, Some("ignored".into()), &mut grpc);
        assert_eq!(grpc.get("x-api-key").expect("key"), "sbk_secret");
        assert!(grpc.get(header::AUTHORIZATION).is_none());
    }

    #[test]
    fn the_query_key_is_used_only_without_a_header_credential() {
        let mut grpc = HeaderMap::new();
        credentials(&HeaderMap::new(), Some("sbk_query".into()), &mut grpc);
        assert_eq!(grpc.get("x-api-key").expect("key"), "sbk_query");

        let mut original = HeaderMap::new();
        original.insert("x-api-key", HeaderValue::from_static("sbk_header"));
        let mut grpc = HeaderMap::new();
        credentials(&original, Some("sbk_query".into()), &mut grpc);
        assert_eq!(grpc.get("x-api-key").expect("key"), "sbk_header");
    }
}

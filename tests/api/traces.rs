//! OpenTelemetry traces: the real binary, configured through its environment, exports over OTLP
//! to an in-process collector (a tonic server implementing the OTLP trace service). The RPC span
//! continues the caller's `traceparent`, its children hang under it, sampling follows the caller,
//! and no attribute carries the customer's name or number.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use switchboard::auth::Role;
use switchboard::proto::v1;
use switchboard::proto::v1::customer_service_client::CustomerServiceClient;
use tonic::transport::Channel;

use crate::helpers::{
    ServerProcess, admin_database_url, authed, free_port, fresh_database, phone, token,
};

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        if let Ok(mut stored) = self.spans.lock() {
            stored.extend(spans);
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    fn of_trace(&self, trace_id: &[u8]) -> Vec<Span> {
        self.spans
            .lock()
            .map(|spans| {
                spans
                    .iter()
                    .filter(|s| s.trace_id == trace_id)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Every attribute value of a span, its events included, as text.
fn attribute_text(span: &Span) -> String {
    let events = span.events.iter().flat_map(|e| e.attributes.iter());
    span.attributes
        .iter()
        .chain(events)
        .filter_map(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|value| match value {
            Value::StringValue(s) => s.clone(),
            other => format!("{other:?}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn spans_continue_the_callers_trace_with_children_and_no_pii() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("collector port");
    let collector_port = listener.local_addr().expect("address").port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let database_url = fresh_database(&admin_database_url()).await;
    let prefix = format!("t:{}:", uuid::Uuid::new_v4().simple());
    let endpoint = format!("http://127.0.0.1:{collector_port}");
    let server = ServerProcess::start(
        &database_url,
        &prefix,
        free_port(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            // No new traces: only a caller's sampled trace is followed.
            ("SWITCHBOARD_TRACE_SAMPLE_RATIO", "0"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("RUST_LOG", "warn"),
        ],
        Stdio::null(),
    )
    .await;
    let channel = Channel::from_shared(server.address.clone())
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut customers =
        CustomerServiceClient::new(authed(channel, &token(Role::Admin, "tracer", None)));

    let create = |name: &str, number: &str, traceparent: Option<&str>| {
        let mut request = tonic::Request::new(v1::CreateCustomerRequest {
            display_name: name.into(),
            contact_points: vec![phone(number)],
            ..Default::default()
        });
        if let Some(traceparent) = traceparent {
            request
                .metadata_mut()
                .insert("traceparent", traceparent.parse().expect("a header value"));
        }
        request
    };
    let trace_id: [u8; 16] = *b"switchboard-tr-1";
    let parent_id: [u8; 8] = *b"caller-1";
    let sampled = format!("00-{}-{}-01", hex(&trace_id), hex(&parent_id));
    customers
        .create_customer(create("Grace Hopper", "+14155550177", Some(&sampled)))
        .await
        .expect("created (sampled)");
    let unsampled_trace: [u8; 16] = *b"switchboard-tr-2";
    let unsampled = format!("00-{}-{}-00", hex(&unsampled_trace), hex(&parent_id));
    customers
        .create_customer(create("Ada Lovelace", "+14155550178", Some(&unsampled)))
        .await
        .expect("created (not sampled)");

    // The RPC span ends last, so once it has arrived its children have too (spans are exported
    // in the order they end).
    const RPC: &str = "switchboard.v1.CustomerService/CreateCustomer";
    let mut spans = Vec::new();
    for _ in 0..100 {
        spans = collector.of_trace(&trace_id);
        if spans.iter().any(|s| s.name == RPC) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rpc = spans
        .iter()
        .find(|s| s.name == RPC)
        .unwrap_or_else(|| panic!("the RPC span arrives: {spans:#?}"));
    assert_eq!(rpc.parent_span_id, parent_id, "continues the caller's span");
    assert_eq!(rpc.kind, SpanKind::Server as i32);
    let children: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id == rpc.span_id)
        .collect();
    assert!(
        !children.is_empty(),
        "the work under the RPC hangs under its span: {spans:#?}"
    );
    // Each SQL statement is a CLIENT span under the work that ran it: SQL with placeholders.
    let statements: Vec<&Span> = spans
        .iter()
        .filter(|s| s.attributes.iter().any(|kv| kv.key == "db.statement"))
        .collect();
    assert!(!statements.is_empty(), "statement spans: {spans:#?}");
    for statement in &statements {
        assert_eq!(statement.kind, SpanKind::Client as i32);
        assert!(
            spans.iter().any(|s| s.span_id == statement.parent_span_id),
            "a statement's parent is a span of the same trace"
        );
    }
    for span in &spans {
        let text = attribute_text(span);
        for secret in ["Grace", "Hopper", "4155550177", "555-0177"] {
            assert!(
                !text.contains(secret),
                "{secret} in span {}: {text}",
                span.name
            );
        }
    }
    // The second request's caller did not sample its trace, and new traces are not sampled.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(collector.of_trace(&unsampled_trace).is_empty());
}

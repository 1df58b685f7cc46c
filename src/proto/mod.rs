//! Generated protobuf and gRPC code for `switchboard.v1`, plus redacting `Debug` impls.
//!
//! Messages that carry phone numbers, names, emails or account numbers are generated without a
//! derived `Debug` (see `build.rs`); the impls below print identifiers only, so a stray `{:?}` in a
//! log line cannot leak PII.

use std::fmt;

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("switchboard.v1");
    /// Written by hand (see [`super::lookup`]), so that a cached pop goes out as it is stored.
    pub use super::lookup::LookupResponse;
}

pub mod lookup;

/// Encoded `FileDescriptorSet` of every Switchboard proto, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("switchboard_descriptor");

/// One RPC of the descriptor set: its HTTP/2 path and whether its client sends a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcMethod {
    /// `/switchboard.v1.Service/Method`
    pub path: String,
    pub client_streaming: bool,
}

/// Every RPC that [`FILE_DESCRIPTOR_SET`] declares (empty if it cannot be decoded, which the
/// permission table's test would catch).
pub fn rpc_methods() -> Vec<RpcMethod> {
    use prost::Message as _;
    let Ok(descriptors) = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET) else {
        return Vec::new();
    };
    descriptors
        .file
        .iter()
        .flat_map(|file| {
            file.service.iter().flat_map(move |service| {
                service.method.iter().map(move |method| RpcMethod {
                    path: format!("/{}.{}/{}", file.package(), service.name(), method.name()),
                    client_streaming: method.client_streaming(),
                })
            })
        })
        .collect()
}

/// Every service [`FILE_DESCRIPTOR_SET`] declares, as `package.Service` (the names gRPC health
/// and reflection use). Decoded once: health reports them on every change of the database's
/// state, and a decode is CPU work a busy runtime should not repeat.
pub fn service_names() -> &'static [String] {
    static NAMES: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        let mut names: Vec<String> = rpc_methods()
            .into_iter()
            .filter_map(|method| {
                let service = method.path.trim_start_matches('/').split_once('/')?.0;
                Some(service.to_owned())
            })
            .collect();
        names.dedup();
        names
    });
    &NAMES
}

macro_rules! redacted_debug {
    ($($ty:ident { $($field:ident),* }),* $(,)?) => {
        $(impl fmt::Debug for v1::$ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), &self.$field))*
                    .finish_non_exhaustive()
            }
        })*
    };
}

redacted_debug! {
    ContactPoint { id, kind, primary },
    NewContactPoint { kind, primary },
    ExternalReference { system },
    Customer { id, version },
    CreateCustomerRequest { tier, request_id },
    SearchCustomersRequest { page_size },
    CustomerCard { customer_id, version },
    OutboundContact { lease_id, customer_id, attempts },
    Feedback { id, source, sentiment, status },
    ImportRow { row_number },
    ImportCustomersRequest { dry_run },
    MergeCustomersResponse { merge_id, moved },
    UnmergeCustomerResponse {},
    DuplicateCandidate { reasons },
    SubmitFeedbackRequest { request_id, source, sentiment },
    UpdateFeedbackStatusRequest { id, status },
    NextOutboundContactResponse { contact, retry_after_seconds },
    ScreenPop { candidate_count },
    LookupRequest { call_id },
    GetCallerNameRequest {},
    GetCallerNameResponse { caller_kind },
    GetCallerRoutingRequest { call_id },
    GetCallerRoutingResponse { caller_kind, candidate_count, source },
    CallEvent { gateway_id, event_id, call_id, r#type },
    AgentCall { gateway_id, call_id, state, current_agent_id },
    WatchAgentResponse { kind, call },
    Interaction { id, customer_id, channel, disposition_code },
    LogInteractionRequest { request_id, customer_id, channel },
    CompleteWrapUpRequest { interaction_id, disposition_code },
    ServiceEvent { system, event_id, customer_id, kind },
    CardInteraction { id, channel, disposition_code },
    Case { id, customer_id, status, priority, version },
    CaseComment { id, case_id },
    OpenCaseRequest { request_id, customer_id, priority },
    AddCaseCommentRequest { case_id },
    CardCase { id, status, priority },
    AuditEvent { rpc, outcome },
    RecordServiceEventRequest { system, event_id, kind },
    CallRecord { gateway_id, call_id, state },
    CaseRecord { case },
    ExportCustomerDataResponse { export_time },
    CreateWebhookRequest { topics },
    CreateWebhookResponse { webhook },
    RotateWebhookSecretRequest { id, overlap_seconds },
    RotateWebhookSecretResponse { webhook },
}

#[cfg(test)]
mod tests {
    use super::v1;

    #[test]
    fn debug_output_never_shows_numbers_or_names() {
        let card = v1::CustomerCard {
            customer_id: "c-1".into(),
            display_name: "Ada Lovelace".into(),
            primary_contacts: vec![v1::ContactPoint {
                value: "+14155550100".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let pop = v1::LookupResponse {
            pop: Some(v1::ScreenPop {
                normalized_number: "+14155550100".into(),
                card: Some(card),
                ..Default::default()
            }),
            source: 1,
            encoded_pop: None,
        };
        let printed = format!("{pop:?}");
        assert!(!printed.contains("4155550100"), "{printed}");
        assert!(!printed.contains("Ada"), "{printed}");
        assert!(printed.contains("ScreenPop"), "{printed}");
    }
}

//! Compiles `proto/switchboard/v1/*.proto` with protox (pure Rust, no system `protoc`) and writes
//! the encoded descriptor set that the reflection service serves.

use std::path::PathBuf;

use prost::Message as _;

/// Messages that carry phone numbers, names or emails: no derived `Debug`, so they cannot leak into
/// logs by accident. `src/proto.rs` gives them a redacting `Debug`.
const PII_MESSAGES: &[&str] = &[
    ".switchboard.v1.ContactPoint",
    ".switchboard.v1.NewContactPoint",
    ".switchboard.v1.ExternalReference",
    ".switchboard.v1.Customer",
    ".switchboard.v1.CreateCustomerRequest",
    ".switchboard.v1.SearchCustomersRequest",
    ".switchboard.v1.CustomerCard",
    ".switchboard.v1.ScreenPop",
    ".switchboard.v1.LookupRequest",
    ".switchboard.v1.GetCallerNameRequest",
    ".switchboard.v1.GetCallerNameResponse",
    ".switchboard.v1.GetCallerRoutingRequest",
    ".switchboard.v1.GetCallerRoutingResponse",
    ".switchboard.v1.CallEvent",
    ".switchboard.v1.AgentCall",
    ".switchboard.v1.WatchAgentResponse",
    ".switchboard.v1.Interaction",
    ".switchboard.v1.LogInteractionRequest",
    ".switchboard.v1.CompleteWrapUpRequest",
    ".switchboard.v1.ServiceEvent",
    ".switchboard.v1.CardInteraction",
    ".switchboard.v1.Case",
    ".switchboard.v1.CaseComment",
    ".switchboard.v1.OpenCaseRequest",
    ".switchboard.v1.AddCaseCommentRequest",
    ".switchboard.v1.CardCase",
    ".switchboard.v1.AuditEvent",
    ".switchboard.v1.RecordServiceEventRequest",
    ".switchboard.v1.CallRecord",
    ".switchboard.v1.CaseRecord",
    ".switchboard.v1.ExportCustomerDataResponse",
    ".switchboard.v1.OutboundContact",
    ".switchboard.v1.Feedback",
    ".switchboard.v1.ImportRow",
    ".switchboard.v1.ImportCustomersRequest",
    ".switchboard.v1.MergeCustomersResponse",
    ".switchboard.v1.UnmergeCustomerResponse",
    ".switchboard.v1.DuplicateCandidate",
    ".switchboard.v1.SubmitFeedbackRequest",
    ".switchboard.v1.UpdateFeedbackStatusRequest",
    ".switchboard.v1.NextOutboundContactResponse",
    // Webhook signing secrets.
    ".switchboard.v1.CreateWebhookRequest",
    ".switchboard.v1.CreateWebhookResponse",
    ".switchboard.v1.RotateWebhookSecretRequest",
    ".switchboard.v1.RotateWebhookSecretResponse",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut protos: Vec<PathBuf> = std::fs::read_dir("proto/switchboard/v1")?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    protos.sort();
    println!("cargo:rerun-if-changed=proto");
    // `sqlx::migrate!` embeds the migrations when the crate compiles: a new file must rebuild it.
    println!("cargo:rerun-if-changed=migrations");

    let descriptors = protox::compile(&protos, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("switchboard_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .skip_debug(PII_MESSAGES.iter().copied())
        // Hand-written (src/proto/lookup.rs): it can carry a cached pop's bytes as they are.
        .extern_path(
            ".switchboard.v1.LookupResponse",
            "crate::proto::lookup::LookupResponse",
        )
        .compile_fds(descriptors)?;
    Ok(())
}

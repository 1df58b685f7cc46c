//! The few `tonic::Status` constructors every gRPC adapter shares.
//!
//! Each context maps its own error enum to `Status` in its `grpc.rs`; these helpers keep the
//! details uniform: field violations become `google.rpc.BadRequest`, internal failures are logged
//! with their whole chain and reach the client as a generic message.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::validation::Violations;

/// `INVALID_ARGUMENT` with one `google.rpc.BadRequest` field violation per bad field.
pub fn invalid_argument(violations: &Violations) -> Status {
    let details = ErrorDetails::with_bad_request(
        violations
            .iter()
            .map(|v| tonic_types::FieldViolation::new(v.field.clone(), v.description.clone()))
            .collect::<Vec<_>>(),
    );
    Status::with_error_details(Code::InvalidArgument, violations.to_string(), details)
}

/// `UNAVAILABLE`: a dependency could not be reached; nothing was written, a retry is safe.
pub fn unavailable(error: &(dyn std::error::Error + 'static)) -> Status {
    tracing::warn!(error = %ErrorChain(error), "dependency unavailable");
    Status::unavailable("the customer database is unavailable; retry with backoff")
}

/// `INTERNAL` with a generic message; the cause is logged, never sent.
pub fn internal(error: &(dyn std::error::Error + 'static)) -> Status {
    tracing::error!(error = %ErrorChain(error), "internal error");
    Status::internal("internal error")
}

/// Displays an error followed by all its sources.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// The canonical name of a gRPC code (`INVALID_ARGUMENT`), as metric labels and JSON errors
/// show it.
pub fn code_name(code: Code) -> &'static str {
    use Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

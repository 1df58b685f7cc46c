//! `switchboard.v1.SegmentationService`.

use chrono::Utc;
use tonic::{Request, Response, Status};

use super::{Run, SegmentError, Segmentation};
use crate::grpc_status;
use crate::proto::v1;
use crate::proto::v1::segmentation_service_server::SegmentationService;
use crate::validation::Violations;

pub struct SegmentationGrpc {
    segmentation: Segmentation,
}

impl SegmentationGrpc {
    pub fn new(segmentation: Segmentation) -> Self {
        Self { segmentation }
    }
}

impl From<SegmentError> for Status {
    fn from(error: SegmentError) -> Self {
        match &error {
            SegmentError::Unavailable(source) => grpc_status::unavailable(source),
            SegmentError::Database(source) => grpc_status::internal(source),
        }
    }
}

fn run_of(request: v1::SegmentCustomersRequest) -> Result<Run, Violations> {
    let mut violations = Violations::new();
    let as_of = match &request.as_of {
        None => Some(Utc::now()),
        at => violations.time("as_of", at.as_ref(), true),
    };
    let window_days = match request.window_days {
        0 => 365,
        days @ 1..=3650 => days,
        _ => {
            violations.add("window_days", "must be between 1 and 3650");
            0
        }
    };
    let currency = match request.currency.as_str() {
        "" => "USD".to_owned(),
        code if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) => code.to_owned(),
        _ => {
            violations.add("currency", "must be an ISO 4217 code such as USD");
            String::new()
        }
    };
    match (as_of, violations.is_empty()) {
        (Some(as_of), true) => Ok(Run {
            as_of,
            window_days,
            currency,
        }),
        _ => Err(violations),
    }
}

#[tonic::async_trait]
impl SegmentationService for SegmentationGrpc {
    async fn segment_customers(
        &self,
        request: Request<v1::SegmentCustomersRequest>,
    ) -> Result<Response<v1::SegmentCustomersResponse>, Status> {
        let run = run_of(request.into_inner()).map_err(|v| grpc_status::invalid_argument(&v))?;
        let outcome = self.segmentation.run(run).await?;
        Ok(Response::new(v1::SegmentCustomersResponse {
            customers_scored: outcome.scored,
            customers_changed: outcome.changed,
            segments: outcome
                .segments
                .into_iter()
                .map(|(segment, customers)| v1::SegmentCount { segment, customers })
                .collect(),
            took_ms: outcome.took_ms,
        }))
    }
}

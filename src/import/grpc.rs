//! `switchboard.v1.ImportService`: a stream of row chunks in, a stream of row results out.

use std::pin::Pin;

use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

use super::{Import, ImportError, MAX_ROWS_PER_CHUNK, Outcome, RawRow, RowResult};
use crate::customers::Tier;
use crate::grpc_status;
use crate::proto::v1;
use crate::proto::v1::import_service_server::ImportService;
use crate::validation::Violations;

pub struct ImportGrpc {
    importer: super::Importer,
}

impl ImportGrpc {
    pub fn new(importer: super::Importer) -> Self {
        Self { importer }
    }
}

impl From<ImportError> for Status {
    fn from(error: ImportError) -> Self {
        match &error {
            ImportError::Unavailable(source) => grpc_status::unavailable(source),
            ImportError::Database(source) => grpc_status::internal(source),
        }
    }
}

fn raw_row(row: v1::ImportRow) -> RawRow {
    let tier = match v1::Tier::try_from(row.tier) {
        Ok(v1::Tier::Silver) => Some(Tier::Silver),
        Ok(v1::Tier::Gold) => Some(Tier::Gold),
        Ok(v1::Tier::Platinum) => Some(Tier::Platinum),
        Ok(v1::Tier::Standard) => Some(Tier::Standard),
        _ => None,
    };
    RawRow {
        row_number: row.row_number,
        display_name: row.display_name,
        company: row.company,
        phones: row.phones,
        emails: row.emails,
        external_references: row
            .external_references
            .into_iter()
            .map(|r| (r.system, r.external_id))
            .collect(),
        tier,
        preferred_language: row.preferred_language,
        time_zone: row.time_zone,
        marketing_consent: row.marketing_consent,
        do_not_call: row.do_not_call,
    }
}

fn result_to_proto(r: RowResult) -> v1::ImportRowResult {
    let (outcome, field, reason) = match r.outcome {
        Outcome::Created => (v1::ImportOutcome::Created, String::new(), String::new()),
        Outcome::Updated => (v1::ImportOutcome::Updated, String::new(), String::new()),
        Outcome::MergedInto => (v1::ImportOutcome::MergedInto, String::new(), String::new()),
        Outcome::SkippedDuplicate => (
            v1::ImportOutcome::SkippedDuplicate,
            String::new(),
            String::new(),
        ),
        Outcome::Rejected { field, reason } => (v1::ImportOutcome::Rejected, field, reason),
    };
    v1::ImportRowResult {
        row_number: r.row_number,
        outcome: outcome.into(),
        customer_id: r.customer_id.map(|id| id.to_string()).unwrap_or_default(),
        matched_by: r.matched_by.unwrap_or_default().to_owned(),
        field,
        reason,
    }
}

type ResultStream = Pin<Box<dyn Stream<Item = Result<v1::ImportCustomersResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ImportService for ImportGrpc {
    type ImportCustomersStream = ResultStream;

    async fn import_customers(
        &self,
        request: Request<Streaming<v1::ImportCustomersRequest>>,
    ) -> Result<Response<Self::ImportCustomersStream>, Status> {
        let mut input = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let importer = self.importer.clone();
        // The task outlives this call: it keeps the audit context the auth layer set.
        let context = crate::audit::current();
        let work = async move {
            let mut import: Option<Import> = None;
            while let Some(message) = input.next().await {
                let message = match message {
                    Ok(message) => message,
                    Err(status) => {
                        tx.send(Err(status)).await.ok();
                        return;
                    }
                };
                if message.rows.len() > MAX_ROWS_PER_CHUNK {
                    let violations = Violations::single(
                        "rows",
                        format!("at most {MAX_ROWS_PER_CHUNK} rows per message"),
                    );
                    tx.send(Err(grpc_status::invalid_argument(&violations)))
                        .await
                        .ok();
                    return;
                }
                let current = match import.as_mut() {
                    Some(current) if current.is_dry_run() != message.dry_run => {
                        let violations = Violations::single(
                            "dry_run",
                            "must be the same on every message of an import",
                        );
                        tx.send(Err(grpc_status::invalid_argument(&violations)))
                            .await
                            .ok();
                        return;
                    }
                    Some(current) => current,
                    None => match importer.start(message.dry_run).await {
                        Ok(started) => import.insert(started),
                        Err(error) => {
                            tx.send(Err(error.into())).await.ok();
                            return;
                        }
                    },
                };
                let rows = message.rows.into_iter().map(raw_row).collect();
                let answer = current
                    .chunk(rows)
                    .await
                    .map(|results| v1::ImportCustomersResponse {
                        results: results.into_iter().map(result_to_proto).collect(),
                    });
                let failed = answer.is_err();
                if tx.send(answer.map_err(Status::from)).await.is_err() || failed {
                    return;
                }
            }
            if let Some(import) = import
                && let Err(error) = import.finish().await
            {
                tx.send(Err(error.into())).await.ok();
            }
        };
        match context {
            Some(context) => tokio::spawn(crate::audit::scope(context, work)),
            None => tokio::spawn(work),
        };
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

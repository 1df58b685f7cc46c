//! `import`: streams `--rows` legacy rows through `ImportService.ImportCustomers` in chunks of
//! 1,000 and reports the wall time and the outcome of every row; then imports the same file again,
//! which must change nothing (every row SKIPPED_DUPLICATE).
//!
//! Each row has a name, a phone, an email and an external reference, all new to the database;
//! every tenth row repeats an earlier row's email with a new phone, so it is MERGED_INTO that
//! earlier row's customer.

use std::collections::BTreeMap;
use std::time::Instant;

use switchboard::proto::v1;
use switchboard::proto::v1::import_service_client::ImportServiceClient;

use crate::Args;
use crate::latency::connect;

const CHUNK: usize = 1_000;

fn rows(run: &str, count: u32) -> Vec<v1::ImportRow> {
    // Each run starts at another exchange, so that runs against one database do not share phones.
    let offset: u32 = run
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    (0..count)
        .map(|i| {
            let email_of = if i % 10 == 9 { i - 5 } else { i };
            v1::ImportRow {
                row_number: i64::from(i) + 1,
                display_name: format!("Imported Customer {i}"),
                phones: vec![format!(
                    "(212) {:03}-{:04}",
                    200 + (offset + i / 10_000) % 800,
                    i % 10_000
                )],
                emails: vec![format!("import-{run}-{email_of}@example.com")],
                external_references: vec![v1::ExternalReference {
                    system: format!("legacy-{run}"),
                    external_id: format!("L-{i}"),
                }],
                ..Default::default()
            }
        })
        .collect()
}

async fn pass(
    client: &mut ImportServiceClient<switchboard::client::AuthedChannel>,
    rows: &[v1::ImportRow],
) -> anyhow::Result<(f64, BTreeMap<String, u64>)> {
    let messages: Vec<v1::ImportCustomersRequest> = rows
        .chunks(CHUNK)
        .map(|chunk| v1::ImportCustomersRequest {
            rows: chunk.to_vec(),
            dry_run: false,
        })
        .collect();
    let started = Instant::now();
    let mut responses = client
        .import_customers(tokio_stream::iter(messages))
        .await?
        .into_inner();
    let mut outcomes = BTreeMap::new();
    while let Some(response) = responses.message().await? {
        for result in response.results {
            *outcomes
                .entry(format!("{:?}", result.outcome()))
                .or_default() += 1;
        }
    }
    Ok((started.elapsed().as_secs_f64(), outcomes))
}

pub async fn import_scenario(args: &Args, run: &str) -> anyhow::Result<()> {
    let channel = connect(&args.gateway_server, args.token.as_deref()).await?;
    let mut client = ImportServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let rows = rows(run, args.rows);
    for label in ["first import", "same file again"] {
        let (seconds, outcomes) = pass(&mut client, &rows).await?;
        println!(
            "import ({label}): {} rows in {seconds:.1} s ({:.0} rows/s): {outcomes:?}",
            rows.len(),
            rows.len() as f64 / seconds
        );
    }
    Ok(())
}

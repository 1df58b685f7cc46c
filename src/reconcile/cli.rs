//! `switchboard reconcile FILE`: a CDR file streamed to `ReconcileService` through the public API
//! with a progress bar; the days printed, every discrepancy and bad row written to a CSV report.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::files::{CdrReader, Format, Item};
use crate::client::{channel, describe};
use crate::config::ReconcileArgs;
use crate::proto::v1;
use crate::proto::v1::reconcile_service_client::ReconcileServiceClient;

/// Records per request message (the service takes at most 1,000).
const BATCH: usize = 1000;

/// A row the file itself made unusable.
pub struct BadRow {
    pub line: u64,
    pub field: String,
    pub reason: String,
}

/// Runs `switchboard reconcile`; returns the report and the rows rejected while reading.
pub async fn run(args: ReconcileArgs) -> anyhow::Result<(v1::ReconcileCdrsResponse, Vec<BadRow>)> {
    let format = Format::parse(&args.format).with_context(|| {
        format!(
            "unknown format {:?}: asterisk, freeswitch, kamailio or csv",
            args.format
        )
    })?;
    let zone: chrono_tz::Tz = args
        .time_zone
        .parse()
        .map_err(|_| anyhow::anyhow!("{:?} is not an IANA time zone", args.time_zone))?;
    let mapping = match &args.mapping {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        ),
        None => None,
    };
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or_default();
    let mut reader = CdrReader::new(
        std::io::BufReader::new(file),
        format,
        mapping.as_deref(),
        zone,
    )?;
    let mut client = ReconcileServiceClient::new(channel(&args.server).await?);

    let progress = indicatif::ProgressBar::new(size).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {msg} ({eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (tx, rx) = mpsc::channel::<v1::ReconcileCdrsRequest>(4);
    let first = v1::ReconcileCdrsRequest {
        gateway_id: args.gateway_id.clone(),
        time_tolerance_seconds: args.time_tolerance,
        duration_tolerance_seconds: args.duration_tolerance,
        time_zone: args.time_zone.clone(),
        records: Vec::new(),
    };
    let bar = progress.clone();
    let read = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<BadRow>> {
        let (mut bad, mut batch, mut rows) = (Vec::new(), Vec::with_capacity(BATCH), 0u64);
        tx.blocking_send(first)
            .ok()
            .context("the server closed the run")?;
        while let Some(item) = reader.next_item() {
            rows += 1;
            match item {
                Item::Record(record) => batch.push(record),
                Item::Rejected {
                    line,
                    field,
                    reason,
                } => bad.push(BadRow {
                    line,
                    field,
                    reason,
                }),
            }
            if batch.len() == BATCH {
                bar.set_position(reader.byte());
                bar.set_message(format!("{rows} rows"));
                let records = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                tx.blocking_send(v1::ReconcileCdrsRequest {
                    records,
                    ..Default::default()
                })
                .ok()
                .context("the server closed the run")?;
            }
        }
        if !batch.is_empty() {
            tx.blocking_send(v1::ReconcileCdrsRequest {
                records: batch,
                ..Default::default()
            })
            .ok()
            .context("the server closed the run")?;
        }
        bar.set_message(format!("{rows} rows; matching"));
        Ok(bad)
    });
    let response = client.reconcile_cdrs(ReceiverStream::new(rx)).await;
    let bad = read.await.context("the file reader stopped")??;
    let response = response.map_err(describe)?.into_inner();
    progress.finish_and_clear();

    let report_path = args.report.clone().unwrap_or_else(|| beside(&args.file));
    write_report(&report_path, &response, &bad)?;
    print!("{}", render(&response, bad.len()));
    println!("discrepancies and rejected rows: {}", report_path.display());
    Ok((response, bad))
}

fn beside(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".reconcile.csv");
    file.with_file_name(name)
}

/// `line,kind,call_id,day,detail`: the discrepancies, then the rows rejected (by the reader or
/// the service), sorted by line.
fn write_report(path: &Path, r: &v1::ReconcileCdrsResponse, bad: &[BadRow]) -> anyhow::Result<()> {
    let mut rows: Vec<(i64, String, String, String, String)> = r
        .discrepancies
        .iter()
        .map(|d| {
            let kind = d
                .kind()
                .as_str_name()
                .trim_start_matches("DISCREPANCY_KIND_");
            (
                d.line,
                kind.to_lowercase(),
                d.call_id.clone(),
                d.day.clone(),
                d.detail.clone(),
            )
        })
        .collect();
    let rejected = bad
        .iter()
        .map(|b| (b.line as i64, &b.field, &b.reason))
        .chain(r.rejected.iter().map(|b| (b.line, &b.field, &b.reason)));
    for (line, field, reason) in rejected {
        rows.push((
            line,
            "rejected".into(),
            String::new(),
            String::new(),
            format!("{field}: {reason}"),
        ));
    }
    rows.sort_by_key(|row| (row.0 == 0, row.0));
    let mut out =
        csv::Writer::from_path(path).with_context(|| format!("cannot write {}", path.display()))?;
    out.write_record(["line", "kind", "call_id", "day", "detail"])?;
    for (line, kind, call_id, day, detail) in rows {
        out.write_record([line.to_string(), kind, call_id, day, detail])?;
    }
    out.flush()?;
    Ok(())
}

/// The days side by side, as text.
pub fn render(r: &v1::ReconcileCdrsResponse, rejected_here: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<11} {:>7} {:>7} {:>7} {:>7} {:>5} {:>7} {:>8}   {:>15} {:>15} {:>15}",
        "day",
        "cdrs",
        "matched",
        "no call",
        "no cdr",
        "dup",
        "outcome",
        "duration",
        "answered cdr/sb",
        "wait cdr/sb s",
        "talk cdr/sb s"
    );
    let pair = |a: Option<f64>, b: Option<f64>| {
        let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        format!("{}/{}", f(a), f(b))
    };
    for d in r.days.iter().chain(&r.total) {
        let (cdr, sb) = (d.cdr.unwrap_or_default(), d.switchboard.unwrap_or_default());
        let _ = writeln!(
            out,
            "{:<11} {:>7} {:>7} {:>7} {:>7} {:>5} {:>7} {:>8}   {:>15} {:>15} {:>15}",
            if d.day.is_empty() { "total" } else { &d.day },
            d.cdrs,
            d.matched,
            d.missing_in_switchboard,
            d.missing_in_cdrs,
            d.duplicates,
            d.outcome_mismatches,
            d.duration_mismatches,
            format!("{}/{}", cdr.answered, sb.answered),
            pair(cdr.average_wait, sb.average_wait),
            pair(cdr.average_talk, sb.average_talk),
        );
    }
    let _ = writeln!(
        out,
        "rejected rows: {} ({} unreadable, {} refused by the service)",
        rejected_here + r.rejected.len(),
        rejected_here,
        r.rejected.len()
    );
    if r.discrepancies_left_out > 0 {
        let _ = writeln!(
            out,
            "{} more discrepancies not listed",
            r.discrepancies_left_out
        );
    }
    out
}

//! `switchboard import customers FILE.csv`: a legacy customer file streamed to `ImportService`,
//! with a progress bar and the per-row report written as CSV (docs/IMPORT.md).
//!
//! 1. The file is read a record at a time on a blocking thread (never loaded whole) and sent in
//!    messages of `--batch` rows; each row carries its line number in the file.
//! 2. A row the file itself makes unusable (a broken record, a yes/no column that is neither) is
//!    reported REJECTED here, with its line and field, and the run goes on.
//! 3. The server answers each message in order; the report interleaves its results with the local
//!    rejections, so it is in file order.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::client::{channel, describe};
use crate::config::ImportCustomersArgs;
use crate::proto::v1;
use crate::proto::v1::import_service_client::ImportServiceClient;

/// Where a column's value goes in an `ImportRow`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    DisplayName,
    Company,
    Phone,
    Email,
    /// An external reference in this system.
    External(String),
    Tier,
    PreferredLanguage,
    TimeZone,
    MarketingConsent,
    DoNotCall,
}

impl Field {
    /// A field by the name the mapping file or a header uses.
    fn named(name: &str) -> Option<Field> {
        let name = name.trim().to_ascii_lowercase().replace([' ', '-'], "_");
        if let Some(system) = name.strip_prefix("external_references.") {
            return Some(Field::External(system.to_owned()));
        }
        Some(match name.as_str() {
            "display_name" | "name" => Field::DisplayName,
            "company" => Field::Company,
            "phones" | "phone" => Field::Phone,
            "emails" | "email" => Field::Email,
            "tier" => Field::Tier,
            "preferred_language" | "language" => Field::PreferredLanguage,
            "time_zone" => Field::TimeZone,
            "marketing_consent" => Field::MarketingConsent,
            "do_not_call" => Field::DoNotCall,
            _ => return None,
        })
    }

    fn proto_name(&self) -> String {
        match self {
            Field::DisplayName => "display_name".into(),
            Field::Company => "company".into(),
            Field::Phone => "phones".into(),
            Field::Email => "emails".into(),
            Field::External(system) => format!("external_references.{system}"),
            Field::Tier => "tier".into(),
            Field::PreferredLanguage => "preferred_language".into(),
            Field::TimeZone => "time_zone".into(),
            Field::MarketingConsent => "marketing_consent".into(),
            Field::DoNotCall => "do_not_call".into(),
        }
    }
}

/// For each column of the file, the field it fills (if any).
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    columns: Vec<Option<Field>>,
}

impl Mapping {
    /// From the header row and, when given, a mapping file: lines `field = Column, Column`, `#`
    /// comments. Without a mapping file, a column named like a field (`display_name`, `phone`,
    /// `phones`, `email`, `external_references.<system>`, ...) fills it, and `phone*` and
    /// `email*` columns add phones and emails.
    pub fn new(headers: &csv::StringRecord, mapping: Option<&str>) -> anyhow::Result<Self> {
        let mut columns = vec![None; headers.len()];
        let Some(mapping) = mapping else {
            for (i, header) in headers.iter().enumerate() {
                let lower = header.trim().to_ascii_lowercase();
                columns[i] = Field::named(header).or_else(|| match () {
                    _ if lower.starts_with("phone") || lower.starts_with("mobile") => {
                        Some(Field::Phone)
                    }
                    _ if lower.starts_with("email") || lower.starts_with("e-mail") => {
                        Some(Field::Email)
                    }
                    _ => None,
                });
            }
            return Ok(Self { columns });
        };
        for entry in crate::mapping_file::entries(mapping)? {
            let field = Field::named(&entry.field).with_context(|| {
                format!(
                    "mapping line {}: unknown field {:?}",
                    entry.line, entry.field
                )
            })?;
            for name in &entry.values {
                let i = crate::mapping_file::position(headers, name, entry.line)?;
                columns[i] = Some(field.clone());
            }
        }
        Ok(Self { columns })
    }

    /// The columns no field takes.
    fn ignored<'a>(&self, headers: &'a csv::StringRecord) -> Vec<&'a str> {
        headers
            .iter()
            .zip(&self.columns)
            .filter(|(_, field)| field.is_none())
            .map(|(header, _)| header)
            .collect()
    }

    /// The import row of one record, or the field that makes it unusable and why.
    fn row(
        &self,
        record: &csv::StringRecord,
        line: u64,
    ) -> Result<v1::ImportRow, (String, String)> {
        if record.len() != self.columns.len() {
            return Err((
                "row".to_owned(),
                format!(
                    "{} fields; the header has {}",
                    record.len(),
                    self.columns.len()
                ),
            ));
        }
        let mut row = v1::ImportRow {
            row_number: line as i64,
            ..Default::default()
        };
        for (value, field) in record.iter().zip(&self.columns) {
            let (value, Some(field)) = (value.trim(), field) else {
                continue;
            };
            if value.is_empty() {
                continue;
            }
            let yes_no = |value: &str| match value.to_ascii_lowercase().as_str() {
                "1" | "y" | "yes" | "true" | "t" => Ok(true),
                "0" | "n" | "no" | "false" | "f" => Ok(false),
                _ => Err((field.proto_name(), format!("{value:?} is not yes or no"))),
            };
            match field {
                Field::DisplayName => row.display_name = value.into(),
                Field::Company => row.company = value.into(),
                Field::Phone => row.phones.extend(split(value)),
                Field::Email => row.emails.extend(split(value)),
                Field::External(system) => row.external_references.push(v1::ExternalReference {
                    system: system.clone(),
                    external_id: value.into(),
                }),
                Field::Tier => {
                    let name = format!("TIER_{}", value.to_ascii_uppercase());
                    let tier = v1::Tier::from_str_name(&name).ok_or_else(|| {
                        (
                            "tier".to_owned(),
                            format!("{value:?} is not standard, silver, gold or platinum"),
                        )
                    })?;
                    row.tier = tier.into();
                }
                Field::PreferredLanguage => row.preferred_language = value.into(),
                Field::TimeZone => row.time_zone = value.into(),
                Field::MarketingConsent => row.marketing_consent = Some(yes_no(value)?),
                Field::DoNotCall => row.do_not_call = Some(yes_no(value)?),
            }
        }
        Ok(row)
    }
}

/// Several values in one cell, separated by `;` or `|`.
fn split(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split([';', '|'])
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// One message's worth of the file, in file order: the rows sent and the rows rejected here.
struct Chunk {
    sent: bool,
    local: Vec<v1::ImportRowResult>,
}

/// What the import did, by outcome.
pub type Summary = BTreeMap<&'static str, u64>;

/// Runs `switchboard import customers`; returns the count of each outcome.
pub async fn customers(args: ImportCustomersArgs) -> anyhow::Result<Summary> {
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or_default();
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(file);
    let headers = reader
        .headers()
        .context("cannot read the header row")?
        .clone();
    let mapping_text = match &args.mapping {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        ),
        None => None,
    };
    let mapping = Mapping::new(&headers, mapping_text.as_deref())?;
    let ignored = mapping.ignored(&headers);
    if !ignored.is_empty() {
        eprintln!("columns not imported: {}", ignored.join(", "));
    }
    let mut client = ImportServiceClient::new(channel(&args.server).await?);
    let report_path = args
        .report
        .clone()
        .unwrap_or_else(|| report_beside(&args.file));
    let mut report = Report::open(&report_path)?;

    let progress = indicatif::ProgressBar::new(size).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {msg} ({elapsed}, {eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (requests, rx) = mpsc::channel::<v1::ImportCustomersRequest>(2);
    let (chunks_tx, mut chunks) = mpsc::channel::<Chunk>(4);
    let (dry_run, batch) = (args.dry_run, usize::from(args.batch));
    let bar = progress.clone();
    let read = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut record = csv::StringRecord::new();
        let (mut rows, mut local) = (Vec::new(), Vec::new());
        let mut count = 0u64;
        loop {
            let more = reader.read_record(&mut record);
            let line = reader.position().line();
            match more {
                Ok(false) => break,
                Ok(true) => {
                    let at = record.position().map_or(line, |p| p.line());
                    match mapping.row(&record, at) {
                        Ok(row) => rows.push(row),
                        Err((field, reason)) => local.push(rejected(at, field, reason)),
                    }
                }
                // A broken record (bad quoting, invalid UTF-8) is that row's problem only.
                Err(error) => local.push(rejected(
                    error.position().map_or(line, |p| p.line()),
                    "row".into(),
                    error.to_string(),
                )),
            }
            count += 1;
            bar.set_position(reader.position().byte());
            bar.set_message(format!("{count} rows"));
            if rows.len() + local.len() >= batch {
                send(&requests, &chunks_tx, &mut rows, &mut local, dry_run)?;
            }
        }
        if !rows.is_empty() || !local.is_empty() {
            send(&requests, &chunks_tx, &mut rows, &mut local, dry_run)?;
        }
        Ok(())
    });

    let mut summary = Summary::new();
    let mut results = client
        .import_customers(ReceiverStream::new(rx))
        .await
        .map_err(describe)?
        .into_inner();
    while let Some(chunk) = chunks.recv().await {
        let mut answered = VecDeque::new();
        if chunk.sent {
            let response = results
                .message()
                .await
                .map_err(describe)?
                .context("the server ended the import early")?;
            answered.extend(response.results);
        }
        // Both lists are in file order: merge them.
        let mut local = chunk.local.into_iter().peekable();
        loop {
            let next = match (answered.front(), local.peek()) {
                (Some(a), Some(l)) if l.row_number < a.row_number => local.next(),
                (Some(_), _) => answered.pop_front(),
                (None, Some(_)) => local.next(),
                (None, None) => break,
            };
            if let Some(result) = next {
                *summary.entry(outcome_name(result.outcome())).or_default() += 1;
                report.write(&result)?;
            }
        }
    }
    read.await.context("the file reader stopped")??;
    report.finish()?;
    progress.finish_and_clear();
    let counts: Vec<String> = summary.iter().map(|(k, n)| format!("{k} {n}")).collect();
    eprintln!(
        "{}{}; report: {}",
        if dry_run {
            "dry run, nothing written: "
        } else {
            ""
        },
        counts.join(", "),
        report_path.display()
    );
    Ok(summary)
}

fn rejected(line: u64, field: String, reason: String) -> v1::ImportRowResult {
    v1::ImportRowResult {
        row_number: line as i64,
        outcome: v1::ImportOutcome::Rejected.into(),
        field,
        reason,
        ..Default::default()
    }
}

/// Hands one message's rows to the stream and its bookkeeping to the report writer.
fn send(
    requests: &mpsc::Sender<v1::ImportCustomersRequest>,
    chunks: &mpsc::Sender<Chunk>,
    rows: &mut Vec<v1::ImportRow>,
    local: &mut Vec<v1::ImportRowResult>,
    dry_run: bool,
) -> anyhow::Result<()> {
    let sent = !rows.is_empty();
    // The writer learns of the chunk first, so it waits for the server's answer in order.
    chunks
        .blocking_send(Chunk {
            sent,
            local: std::mem::take(local),
        })
        .ok()
        .context("the import stopped")?;
    if sent {
        requests
            .blocking_send(v1::ImportCustomersRequest {
                rows: std::mem::take(rows),
                dry_run,
            })
            .ok()
            .context("the server closed the import")?;
    }
    Ok(())
}

fn outcome_name(outcome: v1::ImportOutcome) -> &'static str {
    match outcome {
        v1::ImportOutcome::Created => "CREATED",
        v1::ImportOutcome::Updated => "UPDATED",
        v1::ImportOutcome::MergedInto => "MERGED_INTO",
        v1::ImportOutcome::SkippedDuplicate => "SKIPPED_DUPLICATE",
        v1::ImportOutcome::Rejected => "REJECTED",
        v1::ImportOutcome::Unspecified => "UNSPECIFIED",
    }
}

fn report_beside(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".report.csv");
    file.with_file_name(name)
}

/// The per-row report: `line,outcome,customer_id,matched_by,field,reason`.
struct Report {
    writer: csv::Writer<Box<dyn std::io::Write + Send>>,
}

impl Report {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let out: Box<dyn std::io::Write + Send> = match path.to_str() {
            Some("-") => Box::new(std::io::stdout()),
            _ => Box::new(std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("cannot write {}", path.display()))?,
            )),
        };
        let mut writer = csv::Writer::from_writer(out);
        writer.write_record([
            "line",
            "outcome",
            "customer_id",
            "matched_by",
            "field",
            "reason",
        ])?;
        Ok(Self { writer })
    }

    fn write(&mut self, r: &v1::ImportRowResult) -> anyhow::Result<()> {
        self.writer.write_record([
            r.row_number.to_string().as_str(),
            outcome_name(r.outcome()),
            &r.customer_id,
            &r.matched_by,
            &r.field,
            &r.reason,
        ])?;
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<()> {
        self.writer.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(names: &[&str]) -> csv::StringRecord {
        csv::StringRecord::from(names.to_vec())
    }

    #[test]
    fn without_a_mapping_columns_named_like_fields_are_used() {
        let h = headers(&[
            "Name",
            "Phone",
            "Mobile",
            "E-mail",
            "Notes",
            "external_references.erp",
        ]);
        let mapping = Mapping::new(&h, None).expect("mapping");
        assert_eq!(mapping.ignored(&h), ["Notes"]);
        let row = mapping
            .row(
                &headers(&[
                    "Ada",
                    "+1 415 555 0100",
                    "0171 555 0199; 0171 555 0198",
                    "ada@example.com",
                    "x",
                    "C-1",
                ]),
                2,
            )
            .expect("a row");
        assert_eq!(row.row_number, 2);
        assert_eq!(row.display_name, "Ada");
        assert_eq!(row.phones.len(), 3);
        assert_eq!(row.emails, ["ada@example.com"]);
        assert_eq!(row.external_references[0].system, "erp");
    }

    #[test]
    fn a_mapping_file_names_the_columns_and_says_what_is_wrong() {
        let h = headers(&["Full Name", "Tel", "Level", "DNC"]);
        let text = "# legacy CRM\ndisplay_name = Full Name\nphones = Tel\ntier = Level\ndo_not_call = DNC\n";
        let mapping = Mapping::new(&h, Some(text)).expect("mapping");
        let row = mapping
            .row(&headers(&["Ada", "555 0100", "gold", "yes"]), 7)
            .expect("a row");
        assert_eq!((row.tier(), row.do_not_call), (v1::Tier::Gold, Some(true)));
        let bad = mapping.row(&headers(&["Ada", "", "iron", "maybe"]), 8);
        assert_eq!(bad.expect_err("rejected").0, "tier");
        let error = Mapping::new(&h, Some("phones = Fax")).expect_err("no such column");
        assert!(error.to_string().contains("no column \"Fax\""), "{error}");
        let error = Mapping::new(&h, Some("shoe_size = Tel")).expect_err("no such field");
        assert!(error.to_string().contains("unknown field"), "{error}");
    }

    #[test]
    fn the_report_goes_beside_the_file() {
        assert_eq!(
            report_beside(Path::new("/tmp/legacy.csv")),
            Path::new("/tmp/legacy.csv.report.csv")
        );
    }
}

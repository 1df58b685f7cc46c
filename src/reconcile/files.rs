//! The old system's CDR files, read a record at a time into [`v1::CdrRecord`]s (never loaded
//! whole). Each format follows what its switch writes:
//!
//! - **Asterisk `Master.csv`** (`cdr_csv`, no header): accountcode, src, dst, dcontext, clid,
//!   channel, dstchannel, lastapp, lastdata, start, answer, end, duration, billsec, disposition,
//!   amaflags, then uniqueid and userfield when logged (`build_csv_record` in `cdr_csv.c`).
//!   ANSWERED is an answer; billsec is the talk time; uniqueid is the call id.
//! - **FreeSWITCH `mod_cdr_csv`**, its default `example` template (no header): caller_id_name,
//!   caller_id_number, destination_number, context, start_stamp, answer_stamp, end_stamp,
//!   duration, billsec, hangup_cause, uuid, bleg_uuid, accountcode, ... An answer_stamp is an
//!   answer; uuid is the call id.
//! - **Kamailio `acc`**, the `acc` table exported as CSV with its header (`method`, `callid`,
//!   `sip_code`, `time`, and `src_user`/`dst_user` when `acc_extra` logs them). A transaction is
//!   a row, so a call is its INVITE and its BYE, paired by Call-ID: a 2xx INVITE is the answer,
//!   the BYE the end, a failed INVITE (with `failed_transaction_flag`) an unanswered call. An
//!   INVITE for a Call-ID already open is a re-INVITE (hold, say) and adds nothing.
//! - **Any CSV with a header and a mapping file** (`docs/RECONCILE.md`).
//!
//! Times without a zone are read in the switch's zone (`--time-zone`). A row that cannot be read
//! is returned as [`Item::Rejected`] with its line, and reading goes on.

use std::collections::HashMap;

use anyhow::Context as _;
use chrono::{DateTime, NaiveDateTime, TimeZone as _, Utc};
use chrono_tz::Tz;

use crate::proto::v1;
use crate::proto_time::to_timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Asterisk,
    FreeSwitch,
    Kamailio,
    Csv,
}

impl Format {
    pub fn parse(name: &str) -> Option<Format> {
        Some(match name {
            "asterisk" => Format::Asterisk,
            "freeswitch" => Format::FreeSwitch,
            "kamailio" => Format::Kamailio,
            "csv" => Format::Csv,
            _ => return None,
        })
    }
}

/// What reading one row gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Record(v1::CdrRecord),
    Rejected {
        line: u64,
        field: String,
        reason: String,
    },
}

/// Which column holds what, for the headerless formats and mapped files.
#[derive(Debug, Clone, Default)]
struct Columns {
    call_id: Option<usize>,
    caller: Option<usize>,
    dialed: Option<usize>,
    started_at: Option<usize>,
    answered_at: Option<usize>,
    ended_at: Option<usize>,
    talk_seconds: Option<usize>,
    /// A disposition or yes/no column that says whether the call was answered.
    answered: Option<usize>,
    time_format: Option<String>,
}

/// Kamailio's columns, by name.
#[derive(Debug, Clone, Copy)]
struct AccColumns {
    method: usize,
    callid: usize,
    sip_code: usize,
    time: usize,
    src_user: Option<usize>,
    dst_user: Option<usize>,
}

enum Layout {
    Columns(Columns),
    Acc(AccColumns),
}

/// A CDR file being read.
pub struct CdrReader<R: std::io::Read> {
    csv: csv::Reader<R>,
    layout: Layout,
    zone: Tz,
    record: csv::StringRecord,
    /// Kamailio: calls whose INVITE was answered and whose BYE has not come.
    open: HashMap<String, v1::CdrRecord>,
    ended: bool,
}

impl<R: std::io::Read> CdrReader<R> {
    pub fn new(input: R, format: Format, mapping: Option<&str>, zone: Tz) -> anyhow::Result<Self> {
        let has_headers = matches!(format, Format::Kamailio | Format::Csv);
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(has_headers)
            .flexible(true)
            .from_reader(input);
        let layout = match format {
            Format::Asterisk => Layout::Columns(Columns {
                caller: Some(1),
                dialed: Some(2),
                started_at: Some(9),
                answered_at: Some(10),
                ended_at: Some(11),
                talk_seconds: Some(13),
                answered: Some(14),
                call_id: Some(16),
                time_format: None,
            }),
            Format::FreeSwitch => Layout::Columns(Columns {
                caller: Some(1),
                dialed: Some(2),
                started_at: Some(4),
                answered_at: Some(5),
                ended_at: Some(6),
                talk_seconds: Some(8),
                call_id: Some(10),
                answered: None,
                time_format: None,
            }),
            Format::Kamailio => {
                let headers = csv.headers().context("cannot read the header row")?.clone();
                let find = |name: &str| {
                    headers
                        .iter()
                        .position(|h| h.trim().eq_ignore_ascii_case(name))
                };
                let need = |name: &str| {
                    find(name).with_context(|| format!("the acc export has no {name:?} column"))
                };
                Layout::Acc(AccColumns {
                    method: need("method")?,
                    callid: need("callid")?,
                    sip_code: need("sip_code")?,
                    time: need("time")?,
                    src_user: find("src_user"),
                    dst_user: find("dst_user"),
                })
            }
            Format::Csv => {
                let text = mapping.context("a csv file needs --mapping")?;
                let headers = csv.headers().context("cannot read the header row")?.clone();
                Layout::Columns(mapped(&headers, text)?)
            }
        };
        Ok(Self {
            csv,
            layout,
            zone,
            record: csv::StringRecord::new(),
            open: HashMap::new(),
            ended: false,
        })
    }

    /// How far into the input the reader is, in bytes.
    pub fn byte(&self) -> u64 {
        self.csv.position().byte()
    }

    /// The next item; `None` at the end (Kamailio: after the calls still open are given).
    pub fn next_item(&mut self) -> Option<Item> {
        loop {
            if self.ended {
                // Calls whose BYE never came: answered, end unknown.
                let key = self.open.keys().next()?.clone();
                return self.open.remove(&key).map(Item::Record);
            }
            let line = self.csv.position().line();
            match self.csv.read_record(&mut self.record) {
                Ok(false) => {
                    self.ended = true;
                    continue;
                }
                Err(error) => {
                    let line = error.position().map_or(line, |p| p.line());
                    return Some(rejected(line, "row", &error.to_string()));
                }
                Ok(true) => {}
            }
            let line = self.record.position().map_or(line, |p| p.line());
            let item = match &self.layout {
                Layout::Columns(columns) => Some(row(&self.record, columns, line, self.zone)),
                Layout::Acc(columns) => {
                    acc(&self.record, *columns, line, self.zone, &mut self.open)
                }
            };
            if let Some(item) = item {
                return Some(item);
            }
        }
    }
}

fn rejected(line: u64, field: &str, reason: &str) -> Item {
    Item::Rejected {
        line,
        field: field.into(),
        reason: reason.into(),
    }
}

fn mapped(headers: &csv::StringRecord, text: &str) -> anyhow::Result<Columns> {
    let mut columns = Columns::default();
    for entry in crate::mapping_file::entries(text)? {
        let value = entry.values.first().cloned().unwrap_or_default();
        if entry.field == "time_format" {
            columns.time_format = Some(entry.values.join(","));
            continue;
        }
        let at = Some(crate::mapping_file::position(headers, &value, entry.line)?);
        match entry.field.as_str() {
            "call_id" => columns.call_id = at,
            "caller" => columns.caller = at,
            "dialed" => columns.dialed = at,
            "started_at" => columns.started_at = at,
            "answered_at" => columns.answered_at = at,
            "ended_at" => columns.ended_at = at,
            "talk_seconds" => columns.talk_seconds = at,
            "answered" => columns.answered = at,
            other => anyhow::bail!("mapping line {}: unknown field {other:?}", entry.line),
        }
    }
    if columns.started_at.is_none() {
        anyhow::bail!("the mapping must name the started_at column");
    }
    Ok(columns)
}

/// A time as switches write it: RFC 3339, `YYYY-MM-DD HH:MM:SS` (in `zone`), the mapping's
/// format, or Unix seconds.
fn time(text: &str, zone: Tz, format: Option<&str>) -> Result<Option<DateTime<Utc>>, String> {
    let text = text.trim();
    if text.is_empty() || text == "0" {
        return Ok(None);
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(Some(at.to_utc()));
    }
    let naive = match format {
        Some(format) => NaiveDateTime::parse_from_str(text, format).ok(),
        None => NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").ok(),
    };
    if let Some(naive) = naive {
        // A time in the hour the clocks go back is read as its first occurrence.
        return zone
            .from_local_datetime(&naive)
            .earliest()
            .map(|t| Some(t.to_utc()))
            .ok_or_else(|| format!("{text:?} does not exist in {zone}"));
    }
    match text.parse::<i64>() {
        Ok(seconds) => DateTime::from_timestamp(seconds, 0)
            .map(Some)
            .ok_or_else(|| format!("{text:?} is out of range")),
        Err(_) => Err(format!("{text:?} is not a time")),
    }
}

/// A yes/no, or a disposition: ANSWERED and the like are yes.
fn answered_value(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "answered" | "answer" | "yes" | "y" | "true" | "1" | "normal_clearing" => Some(true),
        "" => None,
        _ => Some(false),
    }
}

/// One row of a headerless format or a mapped file.
fn row(record: &csv::StringRecord, c: &Columns, line: u64, zone: Tz) -> Item {
    let cell = |at: Option<usize>| at.and_then(|i| record.get(i)).unwrap_or("").trim();
    let format = c.time_format.as_deref();
    let read = |field: &'static str, at: Option<usize>| {
        time(cell(at), zone, format).map_err(|reason| (field, reason))
    };
    let result = (|| {
        let Some(started_at) = read("started_at", c.started_at)? else {
            return Err(("started_at", "is empty".to_owned()));
        };
        let mut answered_at = read("answered_at", c.answered_at)?;
        let ended_at = read("ended_at", c.ended_at)?;
        let talk_seconds = match cell(c.talk_seconds) {
            "" => None,
            text => Some(
                text.parse::<f64>()
                    .map_err(|_| ("talk_seconds", format!("{text:?} is not a number")))?
                    .round() as i64,
            ),
        };
        // The disposition decides when there is one: Asterisk writes an answer time for some
        // calls it never connected.
        match c.answered.map(|_| answered_value(cell(c.answered))) {
            Some(Some(false)) => answered_at = None,
            Some(Some(true)) if answered_at.is_none() => answered_at = Some(started_at),
            _ => {}
        }
        Ok(v1::CdrRecord {
            line: line as i64,
            call_id: cell(c.call_id).to_owned(),
            caller_number: cell(c.caller).to_owned(),
            dialed_number: cell(c.dialed).to_owned(),
            started_at: Some(to_timestamp(started_at)),
            answered_at: answered_at.map(to_timestamp),
            ended_at: ended_at.map(to_timestamp),
            talk_seconds: talk_seconds.filter(|_| answered_at.is_some()),
        })
    })();
    match result {
        Ok(record) => Item::Record(record),
        Err((field, reason)) => rejected(line, field, &reason),
    }
}

/// One `acc` row: a call when it completes one, `None` when it only opens or continues one.
fn acc(
    record: &csv::StringRecord,
    c: AccColumns,
    line: u64,
    zone: Tz,
    open: &mut HashMap<String, v1::CdrRecord>,
) -> Option<Item> {
    let cell = |i: usize| record.get(i).unwrap_or("").trim();
    let at = match time(cell(c.time), zone, None) {
        Ok(Some(at)) => at,
        Ok(None) => return Some(rejected(line, "time", "is empty")),
        Err(reason) => return Some(rejected(line, "time", &reason)),
    };
    let callid = cell(c.callid).to_owned();
    if callid.is_empty() {
        return Some(rejected(line, "callid", "is empty"));
    }
    let Ok(code) = cell(c.sip_code).parse::<u16>() else {
        return Some(rejected(line, "sip_code", "is not a SIP status code"));
    };
    match cell(c.method).to_ascii_uppercase().as_str() {
        "INVITE" if open.contains_key(&callid) => None,
        "INVITE" => {
            let call = v1::CdrRecord {
                line: line as i64,
                call_id: callid.clone(),
                caller_number: c.src_user.map(cell).unwrap_or_default().to_owned(),
                dialed_number: c.dst_user.map(cell).unwrap_or_default().to_owned(),
                started_at: Some(to_timestamp(at)),
                answered_at: (200..300).contains(&code).then(|| to_timestamp(at)),
                ended_at: None,
                talk_seconds: None,
            };
            match call.answered_at.is_some() {
                true => {
                    open.insert(callid, call);
                    None
                }
                false => Some(Item::Record(v1::CdrRecord {
                    ended_at: call.started_at,
                    ..call
                })),
            }
        }
        "BYE" => match open.remove(&callid) {
            Some(call) => Some(Item::Record(v1::CdrRecord {
                ended_at: Some(to_timestamp(at)),
                ..call
            })),
            None => Some(rejected(
                line,
                "callid",
                "a BYE with no answered INVITE before it",
            )),
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(format: Format, text: &str, mapping: Option<&str>) -> Vec<Item> {
        let mut reader =
            CdrReader::new(text.as_bytes(), format, mapping, chrono_tz::Europe::Berlin)
                .expect("reader");
        std::iter::from_fn(|| reader.next_item()).collect()
    }

    fn record(item: &Item) -> &v1::CdrRecord {
        match item {
            Item::Record(record) => record,
            other => panic!("not a record: {other:?}"),
        }
    }

    fn seconds(t: &Option<prost_types::Timestamp>) -> Option<i64> {
        t.as_ref().map(|t| t.seconds)
    }

    #[test]
    fn asterisk_master_csv_rows_are_calls_in_the_switchs_zone() {
        let text = concat!(
            "\"\",\"4155550100\",\"600\",\"from-pstn\",\"\"\"Ada\"\" <4155550100>\",\"SIP/trunk-1\",",
            "\"SIP/200-2\",\"Dial\",\"SIP/200\",\"2026-11-02 09:00:00\",\"2026-11-02 09:00:07\",",
            "\"2026-11-02 09:01:07\",67,60,\"ANSWERED\",\"DOCUMENTATION\",\"1793606400.1\",\"\"\n",
            "\"\",\"4155550101\",\"600\",\"from-pstn\",\"\",\"SIP/trunk-3\",\"\",\"Queue\",\"sales\",",
            "\"2026-11-02 09:05:00\",\"\",\"2026-11-02 09:05:30\",30,0,\"NO ANSWER\",\"DOCUMENTATION\",",
            "\"1793606700.3\",\"\"\n",
            "\"\",\"4155550102\",\"600\",\"from-pstn\",\"\",\"SIP/trunk-4\",\"\",\"Dial\",\"\",",
            "\"02/11/2026\",\"\",\"\",0,0,\"FAILED\",\"DOCUMENTATION\",\"1793606800.4\",\"\"\n",
        );
        let found = items(Format::Asterisk, text, None);
        let first = record(&found[0]);
        assert_eq!(first.call_id, "1793606400.1");
        assert_eq!(first.caller_number, "4155550100");
        // 09:00 in Berlin (CET, UTC+1) is 08:00 UTC.
        assert_eq!(seconds(&first.started_at), Some(1_793_606_400));
        assert_eq!(seconds(&first.answered_at), Some(1_793_606_407));
        assert_eq!(first.talk_seconds, Some(60));
        let second = record(&found[1]);
        assert_eq!((second.answered_at, second.talk_seconds), (None, None));
        assert_eq!(
            found[2],
            Item::Rejected {
                line: 3,
                field: "started_at".into(),
                reason: "\"02/11/2026\" is not a time".into()
            }
        );
    }

    #[test]
    fn freeswitch_rows_take_the_uuid_and_the_answer_stamp() {
        let text = "\"Ada\",\"4155550100\",\"600\",\"default\",\"2026-11-02 09:00:00\",\
                    \"2026-11-02 09:00:05\",\"2026-11-02 09:02:05\",\"125\",\"120\",\
                    \"NORMAL_CLEARING\",\"a1b2c3\",\"\",\"\",\"PCMU\",\"PCMU\"\n\
                    \"Bob\",\"4155550101\",\"600\",\"default\",\"2026-11-02 09:10:00\",\"\",\
                    \"2026-11-02 09:10:20\",\"20\",\"0\",\"ORIGINATOR_CANCEL\",\"d4e5\",\"\",\"\",\"\",\"\"\n";
        let found = items(Format::FreeSwitch, text, None);
        assert_eq!(record(&found[0]).call_id, "a1b2c3");
        assert_eq!(record(&found[0]).talk_seconds, Some(120));
        assert!(record(&found[1]).answered_at.is_none());
    }

    #[test]
    fn kamailio_acc_rows_pair_invite_and_bye_by_call_id() {
        let text = "id,method,from_tag,to_tag,callid,sip_code,sip_reason,time,src_user,dst_user\n\
                    1,INVITE,f1,t1,call-a,200,OK,2026-11-02 09:00:05,4155550100,600\n\
                    2,INVITE,f2,,call-b,487,Request Terminated,2026-11-02 09:01:00,4155550101,600\n\
                    3,INVITE,f1,t1,call-a,200,OK,2026-11-02 09:00:30,4155550100,600\n\
                    4,BYE,f1,t1,call-a,200,OK,2026-11-02 09:01:05,4155550100,600\n\
                    5,BYE,f9,t9,call-z,200,OK,2026-11-02 09:02:00,,\n\
                    6,INVITE,f3,t3,call-c,200,OK,2026-11-02 09:03:00,4155550102,600\n";
        let found = items(Format::Kamailio, text, None);
        assert_eq!(found.len(), 4);
        let b = record(&found[0]);
        assert_eq!(
            (b.call_id.as_str(), b.line, b.answered_at.is_none()),
            ("call-b", 3, true)
        );
        let a = record(&found[1]);
        assert_eq!((a.call_id.as_str(), a.line), ("call-a", 2));
        let a_answered = seconds(&a.answered_at).unwrap_or_default();
        assert_eq!(
            seconds(&a.ended_at),
            Some(a_answered + 60),
            "the re-INVITE added nothing"
        );
        assert!(matches!(&found[2], Item::Rejected { line: 6, .. }));
        let c = record(&found[3]);
        assert_eq!((c.call_id.as_str(), c.ended_at.is_none()), ("call-c", true));
    }

    #[test]
    fn a_mapped_csv_reads_its_own_columns_and_time_format() {
        let mapping = "call_id = Ref\ncaller = From\ndialed = To\nstarted_at = Begin\n\
                       talk_seconds = Secs\nanswered = Result\ntime_format = %d/%m/%Y %H:%M:%S\n";
        let text = "Ref,From,To,Begin,Secs,Result\n\
                    r-1,4155550100,600,02/11/2026 09:00:00,42,answered\n\
                    r-2,4155550101,600,02/11/2026 09:05:00,0,busy\n";
        let found = items(Format::Csv, text, Some(mapping));
        let first = record(&found[0]);
        assert_eq!(
            (first.call_id.as_str(), first.talk_seconds),
            ("r-1", Some(42))
        );
        assert_eq!(seconds(&first.answered_at), seconds(&first.started_at));
        assert!(record(&found[1]).answered_at.is_none());
        let no_start = CdrReader::new(
            text.as_bytes(),
            Format::Csv,
            Some("caller = From"),
            chrono_tz::UTC,
        );
        assert!(no_start.is_err());
    }
}

//! Importing legacy customer data: normalize each row, match it against the record (external
//! reference, then a phone only one live customer has, then an email likewise), and create,
//! update or skip. Imports only add: blanks are filled, missing contact points and references
//! added, do-not-call set; nothing held is overwritten.
//!
//! Rows are planned in memory a chunk (one request message) at a time against what the database
//! and the earlier rows hold ([`Planner`]), then written with one statement per kind of write.

pub mod grpc;
mod store;

use std::collections::{HashMap, HashSet};

use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::customers::Tier;
use crate::email::Email;
use crate::phone::PhoneParser;
use crate::screenpop::PopInvalidator;

/// At most this many rows per request message (one transaction).
pub const MAX_ROWS_PER_CHUNK: usize = 1_000;

#[derive(Debug, Clone, Default)]
pub struct RawRow {
    pub row_number: i64,
    pub display_name: String,
    pub company: String,
    pub phones: Vec<String>,
    pub emails: Vec<String>,
    pub external_references: Vec<(String, String)>,
    pub tier: Option<Tier>,
    pub preferred_language: String,
    pub time_zone: String,
    pub marketing_consent: Option<bool>,
    pub do_not_call: Option<bool>,
}

/// A row after normalization.
#[derive(Debug, Clone)]
struct Row {
    row_number: i64,
    display_name: String,
    company: String,
    phones: Vec<String>,
    emails: Vec<String>,
    refs: Vec<(String, String)>,
    tier: Option<Tier>,
    preferred_language: String,
    time_zone: String,
    marketing_consent: Option<bool>,
    do_not_call: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    MergedInto,
    SkippedDuplicate,
    Rejected { field: String, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowResult {
    pub row_number: i64,
    pub outcome: Outcome,
    pub customer_id: Option<Uuid>,
    pub matched_by: Option<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

crate::db::from_sqlx!(ImportError);

pub type Result<T, E = ImportError> = std::result::Result<T, E>;

fn normalize(raw: RawRow, phones: &PhoneParser) -> Result<Row, (String, String)> {
    let reject = |field: &str, reason: &str| (field.to_owned(), reason.to_owned());
    // PostgreSQL refuses NUL in text, and no field of a customer holds a control character.
    let texts = [
        ("display_name", &raw.display_name),
        ("company", &raw.company),
        ("preferred_language", &raw.preferred_language),
        ("time_zone", &raw.time_zone),
    ];
    let lists = [("phones", &raw.phones), ("emails", &raw.emails)];
    let controlled = texts
        .into_iter()
        .map(|(field, value)| (field.to_owned(), value))
        .chain(lists.into_iter().flat_map(|(field, values)| {
            values
                .iter()
                .enumerate()
                .map(move |(i, value)| (format!("{field}[{i}]"), value))
        }))
        .chain(
            raw.external_references
                .iter()
                .enumerate()
                .flat_map(|(i, (system, id))| {
                    [system, id].map(|value| (format!("external_references[{i}]"), value))
                }),
        )
        .find(|(_, value)| value.chars().any(char::is_control));
    if let Some((field, _)) = controlled {
        return Err(reject(&field, "must not contain control characters"));
    }
    let display_name = raw
        .display_name
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if display_name.is_empty() || display_name.chars().count() > 200 {
        return Err(reject("display_name", "must be 1 to 200 characters"));
    }
    let mut numbers = Vec::new();
    for (i, phone) in raw
        .phones
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.trim().is_empty())
    {
        match phones.parse(phone, "") {
            Ok(number) => numbers.push(number.e164().to_owned()),
            Err(error) => return Err((format!("phones[{i}]"), error.to_string())),
        }
    }
    let mut emails = Vec::new();
    for (i, email) in raw
        .emails
        .iter()
        .enumerate()
        .filter(|(_, e)| !e.trim().is_empty())
    {
        match Email::parse(email) {
            Ok(email) => emails.push(email.as_str().to_owned()),
            Err(error) => return Err((format!("emails[{i}]"), error.to_string())),
        }
    }
    let mut refs = Vec::new();
    for (i, (system, id)) in raw.external_references.into_iter().enumerate() {
        let (system, id) = (system.trim().to_owned(), id.trim().to_owned());
        if system.is_empty() || id.is_empty() || system.len() > 64 || id.len() > 128 {
            return Err((
                format!("external_references[{i}]"),
                "needs a system (1-64) and an id (1-128)".to_owned(),
            ));
        }
        refs.push((system, id));
    }
    let time_zone = raw.time_zone.trim().to_owned();
    if !time_zone.is_empty() && time_zone.parse::<chrono_tz::Tz>().is_err() {
        return Err(reject("time_zone", "must be an IANA time zone"));
    }
    let preferred_language = raw.preferred_language.trim().to_owned();
    if preferred_language.len() > 35 {
        return Err(reject("preferred_language", "must be a BCP 47 tag"));
    }
    let company = raw.company.trim().to_owned();
    if company.chars().count() > 200 {
        return Err(reject("company", "must be at most 200 characters"));
    }
    for list in [&mut numbers, &mut emails] {
        let mut seen = HashSet::new();
        list.retain(|v| seen.insert(v.clone()));
    }
    let mut seen = HashSet::new();
    refs.retain(|r| seen.insert(r.clone()));
    Ok(Row {
        row_number: raw.row_number,
        display_name: crate::card_data::mask(&display_name).into_owned(),
        company: crate::card_data::mask(&company).into_owned(),
        phones: numbers,
        emails,
        refs,
        tier: raw.tier,
        preferred_language,
        time_zone,
        marketing_consent: raw.marketing_consent,
        do_not_call: raw.do_not_call,
    })
}

/// What is known of a customer while planning.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    phones: HashSet<String>,
    emails: HashSet<String>,
    refs: HashSet<(String, String)>,
    company: String,
    preferred_language: String,
    time_zone: String,
    do_not_call: bool,
    has_primary_phone: bool,
    has_primary_email: bool,
}

/// The writes one chunk needs.
#[derive(Debug, Default)]
struct Writes {
    creates: Vec<store::NewCustomer>,
    /// (customer, kind, value, primary): the first of its kind a customer gets is primary.
    contact_points: Vec<(Uuid, &'static str, String, bool)>,
    refs: Vec<(Uuid, String, String)>,
    /// Existing customers changed, with their fills.
    fills: HashMap<Uuid, Snapshot>,
}

/// Matching state across the chunks of one import.
#[derive(Default)]
struct Planner {
    by_ref: HashMap<(String, String), Option<Uuid>>,
    owners_phone: HashMap<String, HashSet<Uuid>>,
    owners_email: HashMap<String, HashSet<Uuid>>,
    customers: HashMap<Uuid, Snapshot>,
    created_here: HashSet<Uuid>,
}

impl Planner {
    fn unique(owners: Option<&HashSet<Uuid>>) -> Option<Uuid> {
        owners
            .filter(|o| o.len() == 1)
            .and_then(|o| o.iter().next().copied())
    }

    fn find(&self, row: &Row) -> Result<Option<(Uuid, &'static str)>, (String, String)> {
        let mut by_ref = None;
        for (i, r) in row.refs.iter().enumerate() {
            match self.by_ref.get(r) {
                Some(Some(id)) if by_ref.is_some_and(|seen| seen != *id) => {
                    return Err((
                        format!("external_references[{i}]"),
                        "linked to another customer than the row's other references".into(),
                    ));
                }
                Some(Some(id)) => by_ref = Some(*id),
                Some(None) => {
                    return Err((
                        format!("external_references[{i}]"),
                        "linked to a deleted customer".into(),
                    ));
                }
                None => {}
            }
        }
        if let Some(id) = by_ref {
            return Ok(Some((id, "external_reference")));
        }
        for phone in &row.phones {
            if let Some(id) = Self::unique(self.owners_phone.get(phone)) {
                return Ok(Some((id, "phone")));
            }
        }
        for email in &row.emails {
            if let Some(id) = Self::unique(self.owners_email.get(email)) {
                return Ok(Some((id, "email")));
            }
        }
        Ok(None)
    }

    fn plan(&mut self, row: Row, writes: &mut Writes) -> RowResult {
        let result = |outcome, customer_id, matched_by| RowResult {
            row_number: row.row_number,
            outcome,
            customer_id,
            matched_by,
        };
        let found = match self.find(&row) {
            Ok(found) => found,
            Err((field, reason)) => return result(Outcome::Rejected { field, reason }, None, None),
        };
        let Some((id, matched_by)) = found else {
            let id = Uuid::new_v4();
            self.created_here.insert(id);
            let snapshot = Snapshot {
                company: row.company.clone(),
                preferred_language: row.preferred_language.clone(),
                time_zone: row.time_zone.clone(),
                do_not_call: row.do_not_call.unwrap_or(false),
                ..Snapshot::default()
            };
            self.customers.insert(id, snapshot);
            writes.creates.push(store::NewCustomer {
                id,
                display_name: row.display_name.clone(),
                company: row.company.clone(),
                preferred_language: row.preferred_language.clone(),
                time_zone: row.time_zone.clone(),
                tier: row.tier.unwrap_or(Tier::Standard).as_str(),
                marketing_consent: row.marketing_consent.unwrap_or(false),
                do_not_call: row.do_not_call.unwrap_or(false),
            });
            self.add_keys(id, &row, writes);
            return result(Outcome::Created, Some(id), None);
        };
        // A reference the row brings must not belong to somebody else.
        for (i, r) in row.refs.iter().enumerate() {
            if let Some(Some(owner)) = self.by_ref.get(r)
                && *owner != id
            {
                return result(
                    Outcome::Rejected {
                        field: format!("external_references[{i}]"),
                        reason: "linked to another customer".into(),
                    },
                    None,
                    None,
                );
            }
        }
        let snapshot = self.customers.get(&id).cloned().unwrap_or_default();
        let mut changed = false;
        let mut filled = snapshot.clone();
        for (mine, theirs) in [
            (&mut filled.company, &row.company),
            (&mut filled.preferred_language, &row.preferred_language),
            (&mut filled.time_zone, &row.time_zone),
        ] {
            if mine.is_empty() && !theirs.is_empty() {
                mine.clone_from(theirs);
                changed = true;
            }
        }
        if row.do_not_call == Some(true) && !filled.do_not_call {
            filled.do_not_call = true;
            changed = true;
        }
        let new_keys = row.phones.iter().any(|p| !snapshot.phones.contains(p))
            || row.emails.iter().any(|e| !snapshot.emails.contains(e))
            || row.refs.iter().any(|r| !snapshot.refs.contains(r));
        if !changed && !new_keys {
            return result(Outcome::SkippedDuplicate, Some(id), Some(matched_by));
        }
        self.customers.insert(id, filled.clone());
        if !self.created_here.contains(&id) {
            writes.fills.insert(id, filled);
        } else if let Some(create) = writes.creates.iter_mut().find(|c| c.id == id) {
            // Created earlier in this chunk: the create itself carries the fills.
            create.company = filled.company;
            create.preferred_language = filled.preferred_language;
            create.time_zone = filled.time_zone;
            create.do_not_call = filled.do_not_call;
        } else {
            writes.fills.insert(id, filled);
        }
        self.add_keys(id, &row, writes);
        let outcome = if self.created_here.contains(&id) {
            Outcome::MergedInto
        } else {
            Outcome::Updated
        };
        result(outcome, Some(id), Some(matched_by))
    }

    fn add_keys(&mut self, id: Uuid, row: &Row, writes: &mut Writes) {
        let snapshot = self.customers.entry(id).or_default();
        for phone in &row.phones {
            if snapshot.phones.insert(phone.clone()) {
                let primary = !std::mem::replace(&mut snapshot.has_primary_phone, true);
                writes
                    .contact_points
                    .push((id, "phone", phone.clone(), primary));
                self.owners_phone
                    .entry(phone.clone())
                    .or_default()
                    .insert(id);
            }
        }
        for email in &row.emails {
            if snapshot.emails.insert(email.clone()) {
                let primary = !std::mem::replace(&mut snapshot.has_primary_email, true);
                writes
                    .contact_points
                    .push((id, "email", email.clone(), primary));
                self.owners_email
                    .entry(email.clone())
                    .or_default()
                    .insert(id);
            }
        }
        for r in &row.refs {
            if snapshot.refs.insert(r.clone()) {
                writes.refs.push((id, r.0.clone(), r.1.clone()));
                self.by_ref.insert(r.clone(), Some(id));
            }
        }
    }
}

/// One import: a stream of chunks, each written in its own transaction (or, for a dry run, all in
/// one transaction rolled back at the end).
pub struct Import {
    pool: PgPool,
    pops: PopInvalidator,
    phones: PhoneParser,
    dry_run: Option<Transaction<'static, Postgres>>,
    planner: Planner,
    next_position: i64,
}

/// Starts imports: what every import of this service shares.
#[derive(Clone)]
pub struct Importer {
    pool: PgPool,
    pops: PopInvalidator,
    phones: PhoneParser,
}

impl Importer {
    pub fn new(pool: PgPool, pops: PopInvalidator, phones: PhoneParser) -> Self {
        Self { pool, pops, phones }
    }

    /// A new import (the first chunk's `dry_run` holds for the whole import).
    pub async fn start(&self, dry_run: bool) -> Result<Import> {
        Import::start(self.pool.clone(), self.pops.clone(), self.phones, dry_run).await
    }
}

impl Import {
    pub async fn start(
        pool: PgPool,
        pops: PopInvalidator,
        phones: PhoneParser,
        dry_run: bool,
    ) -> Result<Self> {
        let dry_run = match dry_run {
            true => Some(crate::db::begin(&pool).await?),
            false => None,
        };
        Ok(Self {
            pool,
            pops,
            phones,
            dry_run,
            planner: Planner::default(),
            next_position: 1,
        })
    }

    pub fn is_dry_run(&self) -> bool {
        self.dry_run.is_some()
    }

    /// Plans and writes one chunk; returns a result per row, in order.
    pub async fn chunk(&mut self, rows: Vec<RawRow>) -> Result<Vec<RowResult>> {
        let mut normalized = Vec::with_capacity(rows.len());
        let mut results: Vec<Option<RowResult>> = Vec::with_capacity(rows.len());
        for mut raw in rows {
            if raw.row_number == 0 {
                raw.row_number = self.next_position;
            }
            self.next_position += 1;
            let row_number = raw.row_number;
            match normalize(raw, &self.phones) {
                Ok(row) => {
                    normalized.push(row);
                    results.push(None);
                }
                Err((field, reason)) => results.push(Some(RowResult {
                    row_number,
                    outcome: Outcome::Rejected { field, reason },
                    customer_id: None,
                    matched_by: None,
                })),
            }
        }
        let mut own_tx = None;
        let tx = match &mut self.dry_run {
            Some(tx) => tx,
            None => own_tx.insert(crate::db::begin(&self.pool).await?),
        };
        // An import grows the tables faster than their statistics follow: a plan cached on the
        // connection while a table was small turns a lookup into a scan (measured: 70 s for
        // 100,000 rows into an empty database, 21 s with fresh plans). Planning costs ~1 ms.
        crate::db::set_transaction(tx, crate::db::TransactionMode::CustomPlans).await?;
        learn(&mut self.planner, tx, &normalized).await?;
        let mut writes = Writes::default();
        let mut planned = normalized
            .into_iter()
            .map(|row| self.planner.plan(row, &mut writes));
        for slot in results.iter_mut().filter(|r| r.is_none()) {
            *slot = planned.next();
        }
        let pending = store::write(tx, &writes, &self.pops).await?;
        if let Some(tx) = own_tx {
            tx.commit().await?;
            self.pops.apply(pending).await;
        }
        Ok(results.into_iter().flatten().collect())
    }

    /// Ends a dry run (rolled back); a real import has nothing left to do.
    pub async fn finish(self) -> Result<()> {
        if let Some(tx) = self.dry_run {
            tx.rollback().await?;
        }
        Ok(())
    }
}

/// Loads what the database holds about the chunk's keys and the customers they lead to.
async fn learn(p: &mut Planner, conn: &mut sqlx::PgConnection, rows: &[Row]) -> Result<()> {
    let refs: Vec<(String, String)> = rows
        .iter()
        .flat_map(|r| r.refs.iter().cloned())
        .filter(|r| !p.by_ref.contains_key(r))
        .collect();
    let phones: Vec<String> = rows
        .iter()
        .flat_map(|r| r.phones.iter().cloned())
        .filter(|n| !p.owners_phone.contains_key(n))
        .collect();
    let emails: Vec<String> = rows
        .iter()
        .flat_map(|r| r.emails.iter().cloned())
        .filter(|e| !p.owners_email.contains_key(e))
        .collect();
    let found = store::lookup(&mut *conn, &refs, &phones, &emails).await?;
    for number in phones {
        p.owners_phone.entry(number).or_default();
    }
    for email in emails {
        p.owners_email.entry(email).or_default();
    }
    // Only the owners this lookup found can be new to the planner: earlier keys' owners were
    // snapshotted when they were found.
    let mut unknown = HashSet::new();
    for (key, owner) in found.refs {
        unknown.extend(owner);
        p.by_ref.insert(key, owner);
    }
    for (number, owner) in found.phones {
        unknown.insert(owner);
        p.owners_phone.entry(number).or_default().insert(owner);
    }
    for (email, owner) in found.emails {
        unknown.insert(owner);
        p.owners_email.entry(email).or_default().insert(owner);
    }
    unknown.retain(|id| !p.customers.contains_key(id));
    let unknown: Vec<Uuid> = unknown.into_iter().collect();
    for (id, snapshot) in store::snapshots(conn, &unknown).await? {
        p.customers.insert(id, snapshot);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: i64, name: &str, phones: &[&str]) -> RawRow {
        RawRow {
            row_number: n,
            display_name: name.into(),
            phones: phones.iter().map(|p| (*p).to_owned()).collect(),
            ..RawRow::default()
        }
    }

    fn plan(planner: &mut Planner, raw: RawRow, writes: &mut Writes) -> RowResult {
        let phones = PhoneParser::for_region("US").expect("US");
        planner.plan(normalize(raw, &phones).expect("valid"), writes)
    }

    #[test]
    fn rows_of_one_file_match_each_other_and_a_repeat_changes_nothing() {
        let mut planner = Planner::default();
        let mut writes = Writes::default();
        let first = plan(&mut planner, row(1, "Ada", &["415-555-0100"]), &mut writes);
        assert_eq!(first.outcome, Outcome::Created);
        let mut more = row(2, "Ada L.", &["(415) 555-0100"]);
        more.emails = vec!["ADA@example.com".into()];
        let second = plan(&mut planner, more.clone(), &mut writes);
        assert_eq!(second.outcome, Outcome::MergedInto);
        assert_eq!(second.customer_id, first.customer_id);
        assert_eq!(second.matched_by, Some("phone"));
        let third = plan(&mut planner, more, &mut writes);
        assert_eq!(third.outcome, Outcome::SkippedDuplicate);
        assert_eq!(writes.creates.len(), 1);
        assert_eq!(writes.contact_points.len(), 2);
    }

    #[test]
    fn a_shared_number_matches_nobody_and_bad_fields_are_named() {
        let mut planner = Planner::default();
        let mut writes = Writes::default();
        plan(
            &mut planner,
            row(1, "Maria", &["415-555-0111"]),
            &mut writes,
        );
        let luis = row(2, "Luis", &["415-555-0111"]);
        let mut luis_email = luis.clone();
        luis_email.emails = vec!["luis@example.com".into()];
        // One owner: it matches (the household caveat is documented on the RPC).
        assert_eq!(
            plan(&mut planner, luis_email, &mut writes).outcome,
            Outcome::MergedInto
        );
        planner
            .owners_phone
            .entry("+14155550111".into())
            .or_default()
            .insert(Uuid::new_v4());
        let shared = plan(&mut planner, row(3, "Ana", &["415-555-0111"]), &mut writes);
        assert_eq!(shared.outcome, Outcome::Created, "two owners: no match");

        let phones = PhoneParser::for_region("US").expect("US");
        let bad = normalize(row(4, "Bo", &["415-555-0123", "12"]), &phones).expect_err("bad");
        assert_eq!(bad.0, "phones[1]");
        let nameless = normalize(row(5, "  ", &[]), &phones).expect_err("no name");
        assert_eq!(nameless.0, "display_name");
    }
}

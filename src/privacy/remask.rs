//! `switchboard retention remask`: masks card numbers and security codes in rows stored before
//! masking covered their field (see [`crate::card_data`]): case subjects and history, agent-state
//! reasons, names, labels, campaign text, call events' attached data, and any text with card
//! numbers separated by dots or slashes, which older releases did not recognise.
//!
//! Each column is walked in physical order (`ctid`), a batch of rows at a time, each batch in its
//! own short transaction, reading only rows with a digit in them. A row is written only when
//! masking changes it, and only if it still holds what was read (a concurrent edit wins), so the
//! command can run beside the servers, be interrupted, and be run again: a second run changes
//! nothing. Cached screen pops that show a re-masked name refresh when their TTL ends.

use sqlx::PgPool;

use super::Result;
use super::store::{COLUMNS, Column, Kind};
use crate::card_data::{mask, mask_entry};

const BATCH: i64 = 1000;

/// Rows changed, per column (`table.column`), in the order walked.
pub type RemaskReport = Vec<(&'static str, u64)>;

/// Masks every stored free-text column; returns how many rows each changed.
pub async fn remask(pool: &PgPool) -> Result<RemaskReport> {
    let mut report = Vec::with_capacity(COLUMNS.len());
    for column in COLUMNS {
        report.push((column.name, remask_column(pool, column).await?));
    }
    Ok(report)
}

async fn remask_column(pool: &PgPool, column: &Column) -> Result<u64> {
    let mut tx = crate::db::begin(pool).await?;
    let relations = super::store::relations(&mut tx, column).await?;
    tx.commit().await?;
    let mut changed = 0;
    for relation in &relations {
        changed += remask_relation(pool, column, relation).await?;
    }
    Ok(changed)
}

async fn remask_relation(pool: &PgPool, column: &Column, relation: &str) -> Result<u64> {
    let mut after = "(0,0)".to_owned();
    let mut changed = 0;
    loop {
        let mut tx = crate::db::begin(pool).await?;
        let rows = super::store::texts_after(&mut tx, column, relation, &after, BATCH).await?;
        let Some((last, _)) = rows.last() else {
            return Ok(changed);
        };
        after = last.clone();
        for (ctid, text) in &rows {
            let Some(masked) = masked(column.kind, text) else {
                continue;
            };
            changed +=
                super::store::replace_text(&mut tx, column, relation, ctid, &masked, text).await?;
        }
        tx.commit().await?;
    }
}

/// The masked text, when masking changes it.
fn masked(kind: Kind, text: &str) -> Option<String> {
    match kind {
        Kind::Text => match mask(text) {
            std::borrow::Cow::Owned(masked) => Some(masked),
            std::borrow::Cow::Borrowed(_) => None,
        },
        Kind::Json => {
            let value: serde_json::Value = serde_json::from_str(text).ok()?;
            let masked = mask_json(&value);
            (masked != value).then(|| masked.to_string())
        }
    }
}

fn mask_json(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(mask(s).into_owned()),
        Value::Array(items) => Value::Array(items.iter().map(mask_json).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| match v {
                    Value::String(s) => {
                        let (k, s) = mask_entry(k, s);
                        (k, Value::String(s))
                    }
                    v => (mask(k).into_owned(), mask_json(v)),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keys_and_string_values_are_masked_and_clean_json_is_left_alone() {
        let stored = r#"{"pan 4111.1111.1111.1111":"cvv 123","n":4111111111111111,"ok":"fine"}"#;
        let changed = masked(Kind::Json, stored).expect("changed");
        let value: serde_json::Value = serde_json::from_str(&changed).expect("json");
        assert_eq!(value["pan ****.****.****.1111"], "cvv ***");
        let coded = masked(Kind::Json, r#"{"cvv":"321"}"#).expect("changed");
        assert_eq!(coded, r#"{"cvv":"***"}"#);
        assert_eq!(value["ok"], "fine");
        assert_eq!(masked(Kind::Json, r#"{"ivr":"1"}"#), None);
        assert_eq!(masked(Kind::Text, "call me at 415-555-0100"), None);
    }

    #[test]
    fn every_column_statement_names_the_relation_it_walks() {
        for column in COLUMNS {
            let (table, name) = column.name.split_once('.').unwrap_or_default();
            let part = format!("{table}_p2026_12");
            let select = column.select(&part);
            assert!(select.contains(&format!(" FROM {part} ")), "{select}");
            assert!(select.starts_with(&format!("SELECT ctid::text AS place, {name}::text")));
            let update = column.update(&part);
            assert!(
                update.starts_with(&format!("UPDATE {part} SET {name} = ")),
                "{update}"
            );
        }
    }
}

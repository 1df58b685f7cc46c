//! Merging duplicate customers, previewable and reversible.
//!
//! A merge moves every row the duplicate owns (contact points, external references,
//! interactions, cases, orders, service events, calls, feedback, campaign memberships, leases and
//! attempts) to the survivor, drops the duplicate's contact points and campaign memberships the
//! survivor already has, fills the survivor's blank profile fields from the duplicate (and keeps a
//! do-not-call or VIP flag either one had), and turns the duplicate into a tombstone whose
//! `GetCustomer` answers with the survivor. All of it happens in one transaction, and the merge
//! records its lineage: the key of every row moved, every row dropped, every field filled.
//!
//! A dry run does the same in a transaction that is rolled back, so the preview is exactly what
//! the merge would write. Unmerging moves the recorded rows back, restores the dropped ones,
//! clears the fields the merge filled (if nobody changed them since), and revives the duplicate.
//! Rows created on the survivor after the merge stay with the survivor.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::merge_store as store;
use super::{Customer, CustomerError, Customers, Result};
use crate::ids::CustomerId;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Lineage {
    /// Table -> keys of the rows moved to the survivor.
    moved: BTreeMap<String, Vec<String>>,
    dropped_contact_points: Vec<serde_json::Value>,
    /// Rows another context dropped as shared (by its `SharedRows::lineage_key`, such as
    /// `dropped_memberships`), kept at the top level as lineage has always kept them.
    #[serde(flatten)]
    dropped: BTreeMap<String, Vec<serde_json::Value>>,
    demoted_primaries: Vec<Uuid>,
    /// Survivor profile field -> the value the merge filled in.
    filled: BTreeMap<String, String>,
    do_not_call_set: bool,
    vip_set: bool,
}

/// What a merge did, or would do.
#[derive(Clone)]
pub struct Merged {
    /// Empty for a dry run.
    pub merge_id: Option<Uuid>,
    pub survivor: Customer,
    /// Table -> rows moved.
    pub moved: BTreeMap<String, i64>,
    pub dropped_contact_points: i64,
    pub dropped_memberships: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("a customer cannot be merged into itself")]
    SameCustomer,
    #[error("no merge in force has this customer as its duplicate")]
    NoMerge,
    #[error("the survivor was merged, deleted or erased since: unmerge that first")]
    SurvivorGone,
}

impl Customers {
    /// Merges `duplicate` into `survivor` (or previews it with `dry_run`).
    #[tracing::instrument(skip(self))]
    pub async fn merge(
        &self,
        survivor: Uuid,
        duplicate: Uuid,
        dry_run: bool,
        merged_by: &str,
    ) -> Result<Merged> {
        if survivor == duplicate {
            return Err(CustomerError::Merge(MergeError::SameCustomer));
        }
        let mut tx = crate::db::begin(&self.pool).await?;
        let live = store::lock_pair(&mut tx, survivor, duplicate).await?;
        if live.len() != 2 {
            return Err(CustomerError::NotFound);
        }
        let before = super::store::load_many(&mut tx, &[survivor, duplicate]).await?;
        let numbers: Vec<String> = before.iter().flat_map(Customer::phone_numbers).collect();
        let (Some(kept), Some(gone)) = (
            before.iter().find(|c| c.id == survivor),
            before.iter().find(|c| c.id == duplicate),
        ) else {
            return Err(CustomerError::NotFound);
        };

        let mut lineage = Lineage {
            dropped_contact_points: store::drop_shared_contact_points(&mut tx, survivor, duplicate)
                .await?,
            demoted_primaries: store::demote_primaries(&mut tx, survivor, duplicate).await?,
            ..Lineage::default()
        };
        let (from, to) = (CustomerId::new(duplicate), CustomerId::new(survivor));
        for rows in self.rows.iter() {
            if let Some(shared) = &rows.shared {
                let dropped = (shared.drop)(&mut tx, from, to).await?;
                lineage
                    .dropped
                    .insert(shared.lineage_key.to_owned(), dropped);
            }
            let keys = (rows.reassign)(&mut tx, from, to).await?;
            if !keys.is_empty() {
                lineage.moved.insert(rows.table.to_owned(), keys);
            }
        }
        let mut profile = kept.profile.clone();
        for (field, mine, theirs) in [
            ("company", &mut profile.company, &gone.profile.company),
            (
                "preferred_language",
                &mut profile.preferred_language,
                &gone.profile.preferred_language,
            ),
            ("time_zone", &mut profile.time_zone, &gone.profile.time_zone),
            ("segment", &mut profile.segment, &gone.profile.segment),
        ] {
            if mine.is_empty() && !theirs.is_empty() {
                mine.clone_from(theirs);
                lineage.filled.insert(field.to_owned(), theirs.clone());
            }
        }
        lineage.do_not_call_set = gone.profile.do_not_call && !profile.do_not_call;
        lineage.vip_set = gone.profile.vip && !profile.vip;
        profile.do_not_call |= gone.profile.do_not_call;
        profile.vip |= gone.profile.vip;
        super::store::update_profile(&mut tx, survivor, &profile).await?;
        super::store::touch(&mut tx, survivor).await?;
        crate::activity::recompute_value(&mut tx, survivor.into()).await?;
        crate::activity::recompute_value(&mut tx, duplicate.into()).await?;
        store::tombstone(&mut tx, duplicate, survivor).await?;

        let merged = super::store::load(&mut tx, survivor)
            .await?
            .ok_or(CustomerError::NotFound)?;
        let moved = lineage
            .moved
            .iter()
            .map(|(table, keys)| (table.clone(), keys.len() as i64))
            .collect();
        let mut result = Merged {
            merge_id: None,
            survivor: merged,
            moved,
            dropped_contact_points: lineage.dropped_contact_points.len() as i64,
            dropped_memberships: lineage
                .dropped
                .get("dropped_memberships")
                .map_or(0, |rows| rows.len() as i64),
        };
        if dry_run {
            tx.rollback().await?;
            return Ok(result);
        }
        let merge_id = Uuid::new_v4();
        let lineage = serde_json::to_value(&lineage)
            .map_err(|e| CustomerError::Database(sqlx::Error::Encode(Box::new(e))))?;
        store::insert_merge(&mut tx, merge_id, survivor, duplicate, &lineage, merged_by).await?;
        crate::audit::record_write(&mut tx, duplicate.into()).await?;
        let merged_event = crate::feed::Event::new("customer.merged", duplicate)
            .customer(Some(duplicate.into()))
            .data(serde_json::json!({"survivor_id": survivor, "merge_id": merge_id}));
        crate::feed::record(&mut tx, merged_event).await?;
        let event = result.survivor.event("customer.updated", "merged");
        self.commit_and_invalidate(tx, survivor, numbers, event)
            .await?;
        result.merge_id = Some(merge_id);
        Ok(result)
    }

    /// Undoes the merge in force whose duplicate is `duplicate`; returns (survivor, duplicate).
    #[tracing::instrument(skip(self))]
    pub async fn unmerge(&self, duplicate: Uuid) -> Result<(Customer, Customer)> {
        let mut tx = crate::db::begin(&self.pool).await?;
        let (merge_id, survivor, lineage) = store::merge_in_force(&mut tx, duplicate)
            .await?
            .ok_or(CustomerError::Merge(MergeError::NoMerge))?;
        let lineage: Lineage = serde_json::from_value(lineage)
            .map_err(|e| CustomerError::Database(sqlx::Error::Decode(Box::new(e))))?;
        let live = store::lock_pair(&mut tx, survivor, duplicate).await?;
        if !live.contains(&survivor) {
            return Err(CustomerError::Merge(MergeError::SurvivorGone));
        }
        store::revive(&mut tx, duplicate).await?;
        let (from, to) = (CustomerId::new(survivor), CustomerId::new(duplicate));
        for rows in self.rows.iter() {
            if let Some(keys) = lineage.moved.get(rows.table) {
                (rows.restore)(&mut tx, from, to, keys).await?;
            }
        }
        store::promote(&mut tx, &lineage.demoted_primaries).await?;
        store::restore_contact_points(&mut tx, &lineage.dropped_contact_points).await?;
        for rows in self.rows.iter() {
            if let Some(shared) = &rows.shared
                && let Some(dropped) = lineage.dropped.get(shared.lineage_key)
            {
                (shared.put_back)(&mut tx, dropped).await?;
            }
        }

        let kept = super::store::load(&mut tx, survivor)
            .await?
            .ok_or(CustomerError::NotFound)?;
        let mut profile = kept.profile.clone();
        for (field, value) in [
            ("company", &mut profile.company),
            ("preferred_language", &mut profile.preferred_language),
            ("time_zone", &mut profile.time_zone),
            ("segment", &mut profile.segment),
        ] {
            // Only what still holds the merged-in value: a later edit wins.
            if lineage.filled.get(field) == Some(value) {
                value.clear();
            }
        }
        if lineage.do_not_call_set {
            profile.do_not_call = false;
        }
        if lineage.vip_set {
            profile.vip = false;
        }
        super::store::update_profile(&mut tx, survivor, &profile).await?;
        super::store::touch(&mut tx, survivor).await?;
        crate::activity::recompute_value(&mut tx, survivor.into()).await?;
        crate::activity::recompute_value(&mut tx, duplicate.into()).await?;
        store::mark_unmerged(&mut tx, merge_id).await?;
        let both = super::store::load_many(&mut tx, &[survivor, duplicate]).await?;
        let numbers: Vec<String> = both
            .iter()
            .flat_map(Customer::phone_numbers)
            .chain(kept.phone_numbers())
            .collect();
        let (Some(kept), Some(restored)) = (
            both.iter().find(|c| c.id == survivor).cloned(),
            both.iter().find(|c| c.id == duplicate).cloned(),
        ) else {
            return Err(CustomerError::NotFound);
        };
        crate::audit::record_write(&mut tx, duplicate.into()).await?;
        let unmerged_event = restored
            .event("customer.unmerged", "unmerged")
            .data(serde_json::json!({"survivor_id": survivor, "merge_id": merge_id}));
        crate::feed::record(&mut tx, unmerged_event).await?;
        let event = kept.event("customer.updated", "unmerged");
        self.commit_and_invalidate(tx, survivor, numbers, event)
            .await?;
        Ok((kept, restored))
    }

    /// Live customers that look like duplicates of `id`, with why.
    pub async fn find_duplicates(
        &self,
        id: Uuid,
        limit: i64,
    ) -> Result<Vec<(Customer, Vec<String>)>> {
        let mut conn = crate::db::acquire(&self.pool).await?;
        super::store::load(&mut conn, id)
            .await?
            .ok_or(CustomerError::NotFound)?;
        let found = store::duplicates_of(&mut conn, id, limit).await?;
        let ids: Vec<Uuid> = found.iter().map(|(id, _)| *id).collect();
        let customers = super::store::load_many(&mut conn, &ids).await?;
        Ok(found
            .into_iter()
            .filter_map(|(id, reasons)| {
                customers
                    .iter()
                    .find(|c| c.id == id)
                    .map(|c| (c.clone(), reasons))
            })
            .collect())
    }

    /// The live customer `id` is, following merges: a tombstone answers with its survivor.
    pub(super) async fn resolve_merged(
        &self,
        conn: &mut sqlx::PgConnection,
        mut id: Uuid,
    ) -> Result<Option<Customer>> {
        // A chain of merges is short; the bound only guards against a cycle.
        for _ in 0..16 {
            if let Some(customer) = super::store::load(&mut *conn, id).await? {
                return Ok(Some(customer));
            }
            match store::merged_into(&mut *conn, id).await? {
                Some(next) => id = next,
                None => return Ok(None),
            }
        }
        Ok(None)
    }
}

//! Daily KPI rollups: per day in the deployment's KPI time zone (`--kpi-time-zone`, UTC by
//! default), the tallies the KPI scan would read, so a year of KPIs sums 365 days of rows
//! instead of scanning 12 million calls (migration 20261207000034, which explains the notes).
//!
//! Writers only note the closed days they changed (statement triggers on every table the KPIs
//! read); today's writes note nothing. A pass takes the notes, with the closed days never rolled
//! up, and recomputes each from the data as committed with the scan's own statements; a day
//! that just closed waits behind a barrier for the transactions that may have written it
//! unnoted while it was today. Passes are serialized across instances by an advisory lock, like
//! the chain stamper's. A read plans its period in its own
//! snapshot: the rolled-up days without a note come from the rollups, and every other stretch
//! (today, the partial days at the edges, days changed since their rollup) is scanned. So a
//! rollup is read only where it equals the scan, and a change shows at once, before any pass.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Part, Query, Window, store};

/// Days rolled up per pass: each pass is one transaction, so a backfill of a year commits a
/// week at a time.
const MAX_DAYS: i64 = 7;

/// A rolled-up day that changes again is recounted at most once per this many times its last
/// rollup took (migration 20261208000044). The days inside the repeat window are changed all
/// day by repeat callers; each is then recounted for at most 1/61 of a core's time, instead of
/// on every pass. A read scans a noted day meanwhile, so answers do not change: only how soon a
/// busy day reads from its rollup again.
pub const RECOUNT_SPACING: f64 = 60.0;

/// The advisory lock key of the rollup pass (one pass at a time, across instances).
pub const ROLLUP_LOCK: i64 = 20_261_207_034;

/// Where a KPI read gets each part of its period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Whole days (in the rollups' zone) read from the rollups.
    pub rolled: Vec<NaiveDate>,
    /// The rest, scanned: disjoint, in order.
    pub scanned: Vec<Window>,
}

impl Plan {
    /// Its parts: each scanned stretch, then the rolled-up days together.
    pub fn parts(&self) -> impl Iterator<Item = Part<'_>> {
        let rolled = (!self.rolled.is_empty()).then_some(Part::Rolled(&self.rolled));
        self.scanned.iter().map(Part::Scanned).chain(rolled)
    }

    /// All of it scanned.
    pub fn scan(window: Window) -> Plan {
        Plan {
            rolled: Vec::new(),
            scanned: vec![window],
        }
    }
}

/// The first instant of `day` in `zone`: its midnight, or where a clock change skips midnight,
/// the change (as PostgreSQL reads a local time that does not exist).
pub fn midnight(day: NaiveDate, zone: Tz) -> DateTime<Utc> {
    let local = day.and_time(NaiveTime::MIN);
    match zone.from_local_datetime(&local).earliest() {
        Some(start) => start.with_timezone(&Utc),
        // In a gap, the offset before it applies, so the instant is the change itself.
        None => {
            use chrono::Offset;
            let before = zone.offset_from_utc_datetime(&(local - Days::new(1)));
            let offset = chrono::Duration::seconds(i64::from(before.fix().local_minus_utc()));
            (local - offset).and_utc()
        }
    }
}

/// Splits `window` into the whole days in `zone` it may read from the rollups and the stretches
/// it must scan. A day is read from the rollups when it is closed (before `today`), rolled up
/// (or before `first_day`, when no note means no data) and not noted since.
pub fn plan(
    window: Window,
    zone: Tz,
    today: NaiveDate,
    first_day: NaiveDate,
    rolled: &BTreeSet<NaiveDate>,
    noted: &BTreeSet<NaiveDate>,
) -> Plan {
    let midnight = |day| midnight(day, zone);
    let mut plan = Plan {
        rolled: Vec::new(),
        scanned: Vec::new(),
    };
    let mut scan_from = window.start;
    let mut day = window.start.with_timezone(&zone).date_naive();
    if midnight(day) < window.start {
        day = day + Days::new(1);
    }
    while day < today && midnight(day + Days::new(1)) <= window.end {
        let current = (rolled.contains(&day) || day < first_day) && !noted.contains(&day);
        if current {
            if scan_from < midnight(day) {
                plan.scanned.push(Window {
                    start: scan_from,
                    end: midnight(day),
                });
            }
            plan.rolled.push(day);
            scan_from = midnight(day + Days::new(1));
        }
        day = day + Days::new(1);
    }
    if scan_from < window.end {
        plan.scanned.push(Window {
            start: scan_from,
            end: window.end,
        });
    }
    plan
}

/// [`plan`] for `window`, from the rollups' state in this transaction's snapshot. A request
/// whose groups are days or months (`days_in`: its time zone) reads rollups only if they are cut
/// in that zone.
pub async fn plan_for(
    conn: &mut PgConnection,
    window: &Window,
    days_in: Option<&str>,
) -> sqlx::Result<Plan> {
    // The days of the window in any zone lie within a day of its UTC dates.
    let first = window.start.date_naive() - Days::new(1);
    let last = window.end.date_naive() + Days::new(2);
    let state = store::rollup_state(conn, first, last).await?;
    let zone = match state.zone.parse::<Tz>() {
        Ok(zone) => zone,
        Err(_) => return Ok(Plan::scan(*window)),
    };
    if days_in.is_some_and(|asked| !same_zone(asked, &state.zone)) {
        return Ok(Plan::scan(*window));
    }
    Ok(plan(
        *window,
        zone,
        state.today,
        state.first_day,
        &state.rolled.into_iter().collect(),
        &state.noted.into_iter().collect(),
    ))
}

/// Whether two IANA names cut days alike: the same name, or both UTC.
fn same_zone(a: &str, b: &str) -> bool {
    let utc = |z: &str| {
        matches!(
            z,
            "UTC" | "Etc/UTC" | "Etc/UCT" | "UCT" | "Zulu" | "Etc/Zulu"
        )
    };
    a == b || (utc(a) && utc(b))
}

/// Makes `zone` (an IANA name) the rollups' time zone, the server's `--kpi-time-zone`. When it
/// changes, every rollup is dropped and rolled up again in the background (reads scan
/// meanwhile). Idempotent.
pub async fn apply_zone(pool: &PgPool, zone: &str) -> sqlx::Result<()> {
    let mut tx = crate::db::begin(pool).await?;
    let changed = store::set_rollup_zone(&mut tx, ROLLUP_LOCK, zone).await?;
    tx.commit().await?;
    if changed {
        tracing::info!(
            zone,
            "KPI rollup time zone changed; rolling every day up again"
        );
    }
    Ok(())
}

/// What a pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Days rolled up, and more may be due.
    More,
    /// Nothing left that may be rolled up now.
    Done,
    /// Nothing left but days behind the barrier: transactions that began before midnight run.
    Waiting,
}

/// Rolls up every closed day due, changed days at once (no spacing), waiting for a pass running
/// elsewhere, and for the transactions that may still write the day that just closed.
pub async fn catch_up(pool: &PgPool) -> sqlx::Result<()> {
    loop {
        match pass(pool, true, 0.0).await? {
            Pass::More => {}
            Pass::Waiting => tokio::time::sleep(Duration::from_millis(20)).await,
            Pass::Done => return Ok(()),
        }
    }
}

/// What the background task does each round: passes until no day is due, changed days spaced
/// by [`RECOUNT_SPACING`]; none when another instance is in a pass. Stops early when `halt`
/// turns true.
pub async fn roll_up_due(pool: &PgPool, halt: &watch::Receiver<bool>) -> sqlx::Result<()> {
    while pass(pool, false, RECOUNT_SPACING).await? == Pass::More && !*halt.borrow() {}
    Ok(())
}

/// One pass over at most `MAX_DAYS` days; without `wait`, none when another instance is in a
/// pass. A changed day is due once `spacing` times its last rollup's duration has passed.
async fn pass(pool: &PgPool, wait: bool, spacing: f64) -> sqlx::Result<Pass> {
    let mut tx = crate::db::begin(pool).await?;
    if !store::lock_pass(&mut tx, ROLLUP_LOCK, wait).await? {
        return Ok(Pass::Done);
    }
    let (zone, safe_through, waiting) = store::advance_barrier(&mut tx).await?;
    let zone = zone
        .parse::<Tz>()
        .map_err(|_| sqlx::Error::Protocol(format!("unknown KPI time zone {zone}")))?;
    let days = store::take_rollup_days(&mut tx, MAX_DAYS, safe_through, spacing).await?;
    if !days.is_empty() {
        // A month of calls is planned like the KPI read: no JIT, a plan for these rows.
        crate::db::set_transaction(&mut tx, crate::db::TransactionMode::WorkMem128Mb).await?;
        crate::db::set_transaction(&mut tx, crate::db::TransactionMode::NoJit).await?;
        crate::db::set_transaction(&mut tx, crate::db::TransactionMode::CustomPlans).await?;
    }
    for &day in &days {
        let window = Window {
            start: midnight(day, zone),
            end: midnight(day + Days::new(1), zone),
        };
        store::roll_up_day(&mut tx, &Query::rollup(window, zone.name()), &window, day).await?;
    }
    tx.commit().await?;
    Ok(match (days.len() as i64 == MAX_DAYS, waiting) {
        (true, _) => Pass::More,
        (false, true) => Pass::Waiting,
        (false, false) => Pass::Done,
    })
}

/// Applies the KPI time zone, then runs passes every `every` until `stop` turns true.
pub fn spawn(
    pool: PgPool,
    every: Duration,
    zone: String,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    // A year to roll up is about a hundred passes: a shutdown stops between two.
    let halt = stop.clone();
    let zone_applied = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    super::spawn_rounds(every, stop, "KPI rollups", move || {
        let (pool, halt, zone, zone_applied) = (
            pool.clone(),
            halt.clone(),
            zone.clone(),
            zone_applied.clone(),
        );
        async move {
            if !zone_applied.load(std::sync::atomic::Ordering::Relaxed) {
                apply_zone(&pool, &zone).await?;
                zone_applied.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            roll_up_due(&pool, &halt).await
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0)
            .single()
            .expect("time")
    }

    fn date(day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, day).expect("date")
    }

    fn days(list: &[u32]) -> BTreeSet<NaiveDate> {
        list.iter().map(|&d| date(d)).collect()
    }

    fn window(start: DateTime<Utc>, end: DateTime<Utc>) -> Window {
        Window { start, end }
    }

    #[test]
    fn whole_closed_current_days_come_from_the_rollups_and_the_rest_is_scanned() {
        // 1 05:00 to 10 05:00, today the 9th, the 4th changed since its rollup.
        let plan = plan(
            window(at(1, 5), at(10, 5)),
            Tz::UTC,
            date(9),
            date(1),
            &days(&[1, 2, 3, 4, 5, 6, 7, 8]),
            &days(&[4]),
        );
        assert_eq!(
            plan.rolled,
            days(&[2, 3, 5, 6, 7, 8]).into_iter().collect::<Vec<_>>()
        );
        assert_eq!(
            plan.scanned,
            [
                window(at(1, 5), at(2, 0)),
                window(at(4, 0), at(5, 0)),
                window(at(9, 0), at(10, 5)),
            ],
            "the partial first day, the noted day, and today with the partial last day"
        );
    }

    #[test]
    fn a_day_not_yet_rolled_up_is_scanned_unless_it_precedes_every_data() {
        let plan = plan(
            window(at(1, 0), at(5, 0)),
            Tz::UTC,
            date(20),
            date(3),
            &days(&[4]),
            &BTreeSet::new(),
        );
        // The 1st and 2nd are before the first day with data; the 3rd was never rolled up.
        assert_eq!(plan.rolled, [date(1), date(2), date(4)]);
        assert_eq!(plan.scanned, [window(at(3, 0), at(4, 0))]);
        // A note on a day before the first day means data came later: scanned.
        let plan = plan_noted(&[2]);
        assert_eq!(plan.rolled, [date(1), date(4)]);
        assert_eq!(plan.scanned, [window(at(2, 0), at(4, 0))], "one stretch");
    }

    fn plan_noted(noted: &[u32]) -> Plan {
        plan(
            window(at(1, 0), at(5, 0)),
            Tz::UTC,
            date(20),
            date(3),
            &days(&[4]),
            &days(noted),
        )
    }

    #[test]
    fn a_period_within_one_day_or_today_is_all_scanned() {
        let everything = days(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        let inside = window(at(3, 1), at(3, 23));
        assert_eq!(
            plan(
                inside,
                Tz::UTC,
                date(9),
                date(1),
                &everything,
                &BTreeSet::new()
            ),
            Plan::scan(inside)
        );
        let today = window(at(9, 0), at(10, 0));
        assert_eq!(
            plan(
                today,
                Tz::UTC,
                date(9),
                date(1),
                &everything,
                &BTreeSet::new()
            ),
            Plan::scan(today)
        );
    }

    #[test]
    fn days_are_cut_in_the_rollups_zone_across_a_clock_change() {
        let zone: Tz = "America/New_York".parse().expect("zone");
        // New York's clocks went back at 2026-11-01 02:00 EDT: that day lasts 25 hours.
        assert_eq!(midnight(date(1), zone), at(1, 4));
        assert_eq!(midnight(date(2), zone), at(2, 5));
        let all = days(&[1, 2, 3]);
        let plan = plan(
            window(at(1, 0), at(4, 0)),
            zone,
            date(20),
            date(1),
            &all,
            &BTreeSet::new(),
        );
        assert_eq!(plan.rolled, [date(1), date(2)]);
        assert_eq!(
            plan.scanned,
            [window(at(1, 0), at(1, 4)), window(at(3, 5), at(4, 0))],
            "before New York's first midnight, and after its last"
        );
        // Santiago skips its midnight on 2026-09-06 (00:00 becomes 01:00): the day starts at
        // the change, 04:00 UTC, as PostgreSQL reads the missing local time.
        let santiago: Tz = "America/Santiago".parse().expect("zone");
        let sept6 = NaiveDate::from_ymd_opt(2026, 9, 6).expect("date");
        let change = Utc
            .with_ymd_and_hms(2026, 9, 6, 4, 0, 0)
            .single()
            .expect("time");
        assert_eq!(midnight(sept6, santiago), change);
    }

    #[test]
    fn utc_has_several_names() {
        assert!(same_zone("UTC", "Etc/UTC"));
        assert!(same_zone("Europe/Paris", "Europe/Paris"));
        assert!(!same_zone("UTC", "Europe/London"));
    }
}

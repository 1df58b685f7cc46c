//! `google.protobuf.Timestamp` <-> `chrono::DateTime<Utc>`, for every gRPC adapter.
//!
//! One parser for every request field and filter ([`from_timestamp`], and
//! [`crate::validation::Violations::time`] on top of it). A timestamp is valid only in the range
//! the protobuf spec gives `Timestamp` (`google/protobuf/timestamp.proto`): 0001-01-01T00:00:00Z
//! to 9999-12-31T23:59:59.999999999Z, with nanos in 0..=999,999,999. Chrono and PostgreSQL each
//! accept more (PostgreSQL's `timestamptz` from 4713 BC), but not the same more, so a value outside
//! the spec's range would reach the database as a different instant, or be refused there.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

/// 0001-01-01T00:00:00Z, the earliest valid `Timestamp`.
const MIN_SECONDS: i64 = -62_135_596_800;
/// 9999-12-31T23:59:59Z, the last whole second of the latest valid `Timestamp`.
const MAX_SECONDS: i64 = 253_402_300_799;

/// What a client is told about a timestamp [`from_timestamp`] refuses.
pub const OUT_OF_RANGE: &str =
    "must be a valid time from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z";

pub fn to_timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

/// `None` for a timestamp outside the protobuf range or with negative or too many nanoseconds.
pub fn from_timestamp(timestamp: &Timestamp) -> Option<DateTime<Utc>> {
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&timestamp.seconds) {
        return None;
    }
    let nanos = u32::try_from(timestamp.nanos)
        .ok()
        .filter(|n| *n <= 999_999_999)?;
    DateTime::<Utc>::from_timestamp(timestamp.seconds, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(seconds: i64, nanos: i32) -> Timestamp {
        Timestamp { seconds, nanos }
    }

    #[test]
    fn timestamps_round_trip_and_bad_ones_are_refused() {
        let now = Utc::now();
        assert_eq!(from_timestamp(&to_timestamp(now)), Some(now));
        assert_eq!(from_timestamp(&ts(0, -1)), None);
        assert_eq!(from_timestamp(&ts(0, 1_000_000_000)), None);
        assert_eq!(from_timestamp(&ts(i64::MAX, 0)), None);
        assert_eq!(from_timestamp(&ts(i64::MIN, 0)), None);
    }

    #[test]
    fn the_range_is_the_protobuf_specs_to_the_nanosecond() {
        let first = from_timestamp(&ts(MIN_SECONDS, 0)).expect("year 1 is valid");
        assert_eq!(first.to_rfc3339(), "0001-01-01T00:00:00+00:00");
        assert_eq!(from_timestamp(&ts(MIN_SECONDS - 1, 999_999_999)), None);
        let last = from_timestamp(&ts(MAX_SECONDS, 999_999_999)).expect("9999 is valid");
        assert_eq!(
            last.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            "9999-12-31T23:59:59.999999999Z"
        );
        assert_eq!(from_timestamp(&ts(MAX_SECONDS + 1, 0)), None);
    }

    proptest! {
        #[test]
        fn accepted_timestamps_round_trip(seconds in any::<i64>(), nanos in any::<i32>()) {
            if let Some(time) = from_timestamp(&ts(seconds, nanos)) {
                prop_assert_eq!(to_timestamp(time), ts(seconds, nanos));
                prop_assert!((1..=9999).contains(&chrono::Datelike::year(&time)));
            }
        }
    }
}

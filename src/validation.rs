//! Field violations collected while parsing a request at the edge.
//!
//! Parsing code adds one violation per bad field and keeps going, so a client learns about every
//! problem at once. The gRPC layer turns the list into `INVALID_ARGUMENT` with a
//! `google.rpc.BadRequest` detail (see `crate::grpc_status`).

use std::fmt;

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use uuid::Uuid;

use crate::proto_time::{OUT_OF_RANGE, from_timestamp};

/// One bad field: its path in the request (`contact_points[1].value`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

/// Every violation found in one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    /// A list holding a single violation.
    pub fn single(field: impl Into<String>, description: impl Into<String>) -> Self {
        let mut violations = Self::new();
        violations.add(field, description);
        violations
    }

    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// Records the error of `result` under `field` and returns the value when there was none.
    pub fn check<T, E: fmt::Display>(&mut self, field: &str, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.add(field, error.to_string());
                None
            }
        }
    }

    /// Parses a UUID field: "is required" when it is empty (and `required`), "must be a UUID" when
    /// it is not one.
    pub fn uuid(&mut self, field: &str, value: &str, required: bool) -> Option<Uuid> {
        if value.is_empty() {
            if required {
                self.add(field, "is required");
            }
            return None;
        }
        self.check(field, Uuid::parse_str(value).map_err(|_| "must be a UUID"))
    }

    /// Parses a timestamp field (the one parser for every request field and filter, see
    /// [`crate::proto_time`]): "is required" when it is absent (and `required`), out of range when
    /// it is outside 0001-01-01 to 9999-12-31.
    pub fn time(
        &mut self,
        field: &str,
        value: Option<&Timestamp>,
        required: bool,
    ) -> Option<DateTime<Utc>> {
        match value {
            None => {
                if required {
                    self.add(field, "is required");
                }
                None
            }
            Some(ts) => self.check(field, from_timestamp(ts).ok_or(OUT_OF_RANGE)),
        }
    }

    /// A request's only UUID field: its value, or its one violation.
    pub fn single_uuid(field: &str, value: &str) -> Result<Uuid, Violations> {
        let mut violations = Self::new();
        violations.uuid(field, value, true).ok_or(violations)
    }

    /// Trims `value` and checks it is at most `max` characters, without control characters, and
    /// non-empty when `required`.
    pub fn text(&mut self, field: &str, value: &str, max: usize, required: bool) -> String {
        let trimmed = value.trim();
        if required && trimmed.is_empty() {
            self.add(field, "is required");
        } else if trimmed.chars().count() > max {
            self.add(field, format!("must be at most {max} characters"));
        } else if trimmed.chars().any(char::is_control) {
            self.add(field, "must not contain control characters");
        }
        trimmed.to_owned()
    }

    /// [`Self::text`], then card numbers and security codes masked ([`crate::card_data::mask`]):
    /// for one-line free text that is stored (names, labels, subjects, reasons).
    pub fn masked_text(&mut self, field: &str, value: &str, max: usize, required: bool) -> String {
        let text = self.text(field, value, max, required);
        crate::card_data::mask(&text).into_owned()
    }

    /// Checks multi-line free text (notes, comments, descriptions): at most `max` characters, and
    /// no control character but tab, newline and carriage return (NUL among them: PostgreSQL
    /// refuses it in text). Returned as sent, not trimmed.
    pub fn free_text(&mut self, field: &str, value: &str, max: usize) -> String {
        if value.chars().count() > max {
            self.add(field, format!("must be at most {max} characters"));
        } else if value
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        {
            self.add(
                field,
                "must not contain control characters other than tab and newline",
            );
        }
        value.to_owned()
    }

    /// An IANA time zone's name; empty means UTC. An unknown zone is a violation (and "" back).
    pub fn time_zone(&mut self, field: &str, value: &str) -> String {
        match value {
            "" => "UTC".to_owned(),
            zone if zone.parse::<chrono_tz::Tz>().is_ok() => zone.to_owned(),
            _ => {
                self.add(field, "must be an IANA time zone");
                String::new()
            }
        }
    }

    /// A list of at most `max_items` names, each required and at most `max` characters; the
    /// violations name the list (`field`) or the item (`field[i]`).
    pub fn texts(
        &mut self,
        field: &str,
        values: &[String],
        max_items: usize,
        max: usize,
    ) -> Vec<String> {
        if values.len() > max_items {
            self.add(field, format!("at most {max_items} {field}"));
        }
        values
            .iter()
            .enumerate()
            .map(|(i, value)| self.text(&format!("{field}[{i}]"), value, max, true))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &FieldViolation> {
        self.0.iter()
    }

    /// `Ok(value)` when nothing was recorded, the violations otherwise.
    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, Violations> {
        if self.is_empty() {
            Ok(value())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields: Vec<&str> = self.0.iter().map(|v| v.field.as_str()).collect();
        write!(f, "invalid fields: {}", fields.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_fields_say_whether_they_are_missing_or_malformed() {
        let mut v = Violations::new();
        let id = Uuid::new_v4();
        assert_eq!(v.uuid("a", &id.to_string(), true), Some(id));
        assert_eq!(v.uuid("b", "", false), None);
        assert!(v.is_empty());
        assert_eq!(v.uuid("c", "", true), None);
        assert_eq!(v.uuid("d", "nope", false), None);
        let found: Vec<(&str, &str)> = v
            .iter()
            .map(|f| (f.field.as_str(), f.description.as_str()))
            .collect();
        assert_eq!(found, [("c", "is required"), ("d", "must be a UUID")]);
        let lone = Violations::single_uuid("id", "x").expect_err("malformed");
        assert_eq!(lone.iter().count(), 1);
    }

    #[test]
    fn text_reports_missing_long_and_control_characters() {
        let mut v = Violations::new();
        assert_eq!(v.text("a", "  x  ", 5, true), "x");
        v.text("b", "   ", 5, true);
        v.text("c", "abcdef", 5, false);
        v.text("d", "a\u{7}b", 5, false);
        v.text("e", "a\u{0}b", 5, false);
        v.text("f", "a\tb", 5, false);
        let fields: Vec<_> = v.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["b", "c", "d", "e", "f"]);
        assert!(v.finish(|| ()).is_err());
    }

    #[test]
    fn free_text_keeps_lines_and_tabs_but_refuses_nul_and_other_controls() {
        let mut v = Violations::new();
        assert_eq!(v.free_text("a", " one\n\ttwo\r\n", 20), " one\n\ttwo\r\n");
        assert!(v.is_empty());
        v.free_text("b", "x\u{0}y", 20);
        v.free_text("c", "x\u{1b}[2J", 20);
        v.free_text("d", "\u{85}", 20);
        v.free_text("e", "abcdef", 5);
        let fields: Vec<_> = v.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["b", "c", "d", "e"]);
    }

    #[test]
    fn times_outside_the_protobuf_range_are_named() {
        let mut v = Violations::new();
        let year_zero = Timestamp {
            seconds: -62_135_596_801,
            nanos: 0,
        };
        let year_10000 = Timestamp {
            seconds: 253_402_300_800,
            nanos: 0,
        };
        assert!(v.time("a", Some(&year_zero), true).is_none());
        assert!(v.time("b", Some(&year_10000), false).is_none());
        assert!(v.time("c", None, false).is_none());
        assert!(v.time("d", None, true).is_none());
        let found: Vec<_> = v
            .iter()
            .map(|f| (f.field.as_str(), f.description.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("a", OUT_OF_RANGE),
                ("b", OUT_OF_RANGE),
                ("d", "is required")
            ]
        );
    }

    #[test]
    fn finish_without_violations_returns_the_value() {
        assert_eq!(Violations::new().finish(|| 7), Ok(7));
    }
}

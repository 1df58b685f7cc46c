//! The pure rules of cases: which status changes are legal, and when a case is due.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::text_enum::text_enum;

text_enum!(CaseStatus { New => "new", Open => "open", Pending => "pending", Resolved => "resolved", Closed => "closed" });

impl CaseStatus {
    /// NEW -> OPEN -> PENDING -> RESOLVED -> CLOSED; PENDING -> OPEN; OPEN -> RESOLVED;
    /// RESOLVED -> OPEN (reopen).
    pub fn can_become(self, next: CaseStatus) -> bool {
        use CaseStatus::*;
        matches!(
            (self, next),
            (New, Open)
                | (Open, Pending)
                | (Pending, Open)
                | (Open, Resolved)
                | (Pending, Resolved)
                | (Resolved, Closed)
                | (Resolved, Open)
        )
    }

    /// Still being worked on: counts for SLA and shows on the screen pop.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            CaseStatus::New | CaseStatus::Open | CaseStatus::Pending
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    Low = 1,
    Normal = 2,
    High = 3,
    Urgent = 4,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }

    pub fn rank(self) -> i16 {
        self as i16
    }

    pub fn from_rank(rank: i16) -> Option<Self> {
        [
            Priority::Low,
            Priority::Normal,
            Priority::High,
            Priority::Urgent,
        ]
        .into_iter()
        .find(|p| p.rank() == rank)
    }
}

/// Time to resolve per priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlaPolicy {
    pub low: Duration,
    pub normal: Duration,
    pub high: Duration,
    pub urgent: Duration,
}

impl Default for SlaPolicy {
    fn default() -> Self {
        let hours = |h: u64| Duration::from_secs(h * 3600);
        Self {
            low: hours(72),
            normal: hours(24),
            high: hours(8),
            urgent: hours(4),
        }
    }
}

impl SlaPolicy {
    /// Parses `urgent=4h,high=8h,normal=24h,low=72h` (units `m`, `h`, `d`); unnamed priorities keep
    /// their defaults.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut policy = Self::default();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?}: expected priority=duration"))?;
            let value = value.trim();
            let (number, unit) = value.split_at(value.len().saturating_sub(1));
            let number: u64 = number
                .parse()
                .map_err(|_| format!("{value:?} is not a duration like 8h"))?;
            let seconds = match unit {
                "m" => number * 60,
                "h" => number * 3600,
                "d" => number * 86_400,
                _ => return Err(format!("{value:?}: the unit must be m, h or d")),
            };
            let slot = match name.trim() {
                "low" => &mut policy.low,
                "normal" => &mut policy.normal,
                "high" => &mut policy.high,
                "urgent" => &mut policy.urgent,
                other => return Err(format!("unknown priority {other:?}")),
            };
            *slot = Duration::from_secs(seconds);
        }
        Ok(policy)
    }

    pub fn due(&self, created_at: DateTime<Utc>, priority: Priority) -> DateTime<Utc> {
        let window = match priority {
            Priority::Low => self.low,
            Priority::Normal => self.normal,
            Priority::High => self.high,
            Priority::Urgent => self.urgent,
        };
        created_at + chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_documented_status_changes_are_legal() {
        use CaseStatus::*;
        let all = [New, Open, Pending, Resolved, Closed];
        let legal: Vec<(CaseStatus, CaseStatus)> = all
            .iter()
            .flat_map(|a| all.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a.can_become(*b))
            .collect();
        assert_eq!(
            legal,
            [
                (New, Open),
                (Open, Pending),
                (Open, Resolved),
                (Pending, Open),
                (Pending, Resolved),
                (Resolved, Open),
                (Resolved, Closed)
            ]
        );
        assert!(!Closed.can_become(Open), "closed is final");
    }

    #[test]
    fn the_policy_parses_and_sets_due_times() {
        let policy = SlaPolicy::parse("urgent=30m, high=2h,low=3d").expect("valid");
        let t = Utc::now();
        assert_eq!(
            policy.due(t, Priority::Urgent) - t,
            chrono::Duration::minutes(30)
        );
        assert_eq!(
            policy.due(t, Priority::Normal) - t,
            chrono::Duration::hours(24)
        );
        assert_eq!(policy.due(t, Priority::Low) - t, chrono::Duration::days(3));
        assert!(SlaPolicy::parse("urgent=soon").is_err());
        assert!(SlaPolicy::parse("critical=1h").is_err());
    }
}

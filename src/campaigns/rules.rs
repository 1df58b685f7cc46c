//! The dialing rules that need no database: status changes, what an outcome does to a member,
//! and which time zones are inside a calling window right now.

use chrono::{DateTime, Duration, Timelike, Utc};

use crate::text_enum::text_enum;

text_enum!(CampaignStatus { Draft => "draft", Active => "active", Paused => "paused", Completed => "completed" });

text_enum!(Channel {
    OutboundCall => "outbound_call",
    InboundCall => "inbound_call",
    Email => "email",
    Sms => "sms",
});

text_enum!(MemberState { Pending => "pending", Leased => "leased", Done => "done" });

text_enum!(Outcome {
    Reached => "reached",
    NoAnswer => "no_answer",
    Busy => "busy",
    Voicemail => "voicemail",
    Converted => "converted",
    Declined => "declined",
    CallbackRequested => "callback_requested",
    WrongNumber => "wrong_number",
    DoNotCall => "do_not_call",
});

impl CampaignStatus {
    /// DRAFT -> ACTIVE <-> PAUSED -> COMPLETED, and DRAFT -> COMPLETED.
    pub fn can_become(self, next: CampaignStatus) -> bool {
        use CampaignStatus::*;
        matches!(
            (self, next),
            (Draft, Active)
                | (Draft, Completed)
                | (Active, Paused)
                | (Paused, Active)
                | (Active, Completed)
                | (Paused, Completed)
        )
    }
}

impl Outcome {
    /// Outcomes that use up one of the member's attempts: nobody was reached.
    pub fn is_counted_attempt(self) -> bool {
        matches!(self, Outcome::NoAnswer | Outcome::Busy | Outcome::Voicemail)
    }

    /// Outcomes where the customer was spoken to.
    pub fn reached_customer(self) -> bool {
        matches!(
            self,
            Outcome::Reached | Outcome::Converted | Outcome::Declined
        )
    }
}

/// How a campaign spaces and limits attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptPolicy {
    pub max_attempts: i32,
    pub retry_after: Duration,
}

/// Where a member stands after an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterOutcome {
    pub state: MemberState,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// How far ahead a callback may be booked.
pub const MAX_CALLBACK_DAYS: i64 = 90;

/// Whether a callback at `at`, booked at `now`, is allowed: in the future and within
/// [`MAX_CALLBACK_DAYS`].
pub fn callback_allowed(at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    at > now && at <= now + chrono::Duration::days(MAX_CALLBACK_DAYS)
}

/// What `outcome` does to a member that had made `attempts` counted attempts.
///
/// - no answer, busy, voicemail: one more attempt; again after `retry_after`, or done once the
///   limit is reached;
/// - callback requested: again from `callback_at`, without using an attempt;
/// - anything else (reached, converted, declined, wrong number, do not call): done.
pub fn after_outcome(
    outcome: Outcome,
    attempts: i32,
    policy: AttemptPolicy,
    now: DateTime<Utc>,
    callback_at: Option<DateTime<Utc>>,
) -> AfterOutcome {
    let done = |attempts| AfterOutcome {
        state: MemberState::Done,
        attempts,
        next_attempt_at: None,
    };
    match outcome {
        _ if outcome.is_counted_attempt() => {
            let attempts = attempts + 1;
            if attempts >= policy.max_attempts {
                done(attempts)
            } else {
                AfterOutcome {
                    state: MemberState::Pending,
                    attempts,
                    next_attempt_at: Some(now + policy.retry_after),
                }
            }
        }
        Outcome::CallbackRequested => AfterOutcome {
            state: MemberState::Pending,
            attempts,
            next_attempt_at: Some(callback_at.unwrap_or(now)),
        },
        _ => done(attempts),
    }
}

/// Local time of day, in minutes after midnight, in which customers may be called:
/// `[start_minute, end_minute)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallingWindow {
    pub start_minute: i32,
    pub end_minute: i32,
}

impl Default for CallingWindow {
    /// 09:00 to 20:00 local time.
    fn default() -> Self {
        Self {
            start_minute: 9 * 60,
            end_minute: 20 * 60,
        }
    }
}

impl CallingWindow {
    pub fn is_valid(self) -> bool {
        (0..1440).contains(&self.start_minute)
            && (1..=1440).contains(&self.end_minute)
            && self.end_minute > self.start_minute
    }

    pub fn contains(self, minute_of_day: i32) -> bool {
        (self.start_minute..self.end_minute).contains(&minute_of_day)
    }

    /// The IANA time zones whose local time is inside the window at `now`. The database then
    /// only compares a customer's zone with this list, so an unknown zone is simply never
    /// callable instead of an error.
    pub fn zones_open_at(self, now: DateTime<Utc>) -> Vec<&'static str> {
        chrono_tz::TZ_VARIANTS
            .iter()
            .filter(|zone| {
                let local = now.with_timezone(*zone);
                self.contains((local.hour() * 60 + local.minute()) as i32)
            })
            .map(|zone| zone.name())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn policy() -> AttemptPolicy {
        AttemptPolicy {
            max_attempts: 3,
            retry_after: Duration::hours(1),
        }
    }

    #[test]
    fn unanswered_attempts_are_spaced_and_limited() {
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
        let first = after_outcome(Outcome::NoAnswer, 0, policy(), now, None);
        assert_eq!(first.state, MemberState::Pending);
        assert_eq!(first.attempts, 1);
        assert_eq!(first.next_attempt_at, Some(now + Duration::hours(1)));
        let second = after_outcome(Outcome::Busy, 1, policy(), now, None);
        assert_eq!((second.state, second.attempts), (MemberState::Pending, 2));
        let third = after_outcome(Outcome::Voicemail, 2, policy(), now, None);
        assert_eq!((third.state, third.attempts), (MemberState::Done, 3));
        assert_eq!(third.next_attempt_at, None);
    }

    #[test]
    fn callbacks_do_not_use_an_attempt_and_final_outcomes_finish() {
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
        let at = now + Duration::days(1);
        let callback = after_outcome(Outcome::CallbackRequested, 2, policy(), now, Some(at));
        assert_eq!(
            callback,
            AfterOutcome {
                state: MemberState::Pending,
                attempts: 2,
                next_attempt_at: Some(at)
            }
        );
        for outcome in [
            Outcome::Reached,
            Outcome::Converted,
            Outcome::Declined,
            Outcome::WrongNumber,
            Outcome::DoNotCall,
        ] {
            let after = after_outcome(outcome, 1, policy(), now, None);
            assert_eq!((after.state, after.attempts), (MemberState::Done, 1));
        }
    }

    #[test]
    fn status_flow() {
        use CampaignStatus::*;
        assert!(Draft.can_become(Active));
        assert!(Active.can_become(Paused) && Paused.can_become(Active));
        assert!(Paused.can_become(Completed));
        assert!(!Completed.can_become(Active));
        assert!(!Active.can_become(Draft));
        assert!(!Paused.can_become(Draft));
    }

    #[test]
    fn open_zones_follow_local_time() {
        let window = CallingWindow::default();
        // 14:00 UTC is 09:00 in New York (EST) and 23:00 in Tokyo.
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 14, 0, 0).unwrap();
        let open = window.zones_open_at(now);
        assert!(open.contains(&"America/New_York"));
        assert!(open.contains(&"Europe/London"));
        assert!(!open.contains(&"Asia/Tokyo"));
        // One minute earlier New York is still closed (the start is inclusive).
        let before = window.zones_open_at(now - Duration::minutes(1));
        assert!(!before.contains(&"America/New_York"));
        // The end is exclusive: 20:00 in London is closed.
        let evening = Utc.with_ymd_and_hms(2026, 12, 1, 20, 0, 0).unwrap();
        assert!(!window.zones_open_at(evening).contains(&"Europe/London"));
    }

    #[test]
    fn window_validity() {
        assert!(CallingWindow::default().is_valid());
        assert!(
            CallingWindow {
                start_minute: 0,
                end_minute: 1440
            }
            .is_valid()
        );
        assert!(
            !CallingWindow {
                start_minute: 600,
                end_minute: 600
            }
            .is_valid()
        );
        assert!(
            !CallingWindow {
                start_minute: -1,
                end_minute: 60
            }
            .is_valid()
        );
    }

    #[test]
    fn a_callback_is_booked_in_the_future_and_within_ninety_days() {
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
        assert!(callback_allowed(now + chrono::Duration::minutes(1), now));
        assert!(callback_allowed(now + chrono::Duration::days(90), now));
        assert!(!callback_allowed(now, now));
        assert!(!callback_allowed(now + chrono::Duration::days(91), now));
    }
}

//! The per-call state machine: a call record is the fold of its accepted events sorted by
//! (occurred_at, sequence, event_id), so it never depends on the order events arrived in.
//!
//! Gateways lose and reorder events, so the machine tolerates gaps (HELD without a seen ANSWERED
//! means the ANSWERED is missing, not that the call is impossible). It rejects only what no missing
//! event could explain:
//! - any event after the call ended (ENDED or ABANDONED);
//! - OFFERED anywhere but first;
//! - ABANDONED after the call was answered.
//!
//! Each rule is about the order of two events, so every subset of a possible history is possible
//! too: an event accepted on arrival is never made impossible by one that arrives later (a later
//! arrival that would be is itself rejected).

use chrono::{DateTime, Utc};

pub use crate::call_model::CallState;
use crate::text_enum::text_enum;

text_enum!(
    #[derive(Hash)]
    EventType {
        Offered => "offered",
        Queued => "queued",
        Ringing => "ringing",
        Answered => "answered",
        Held => "held",
        Resumed => "resumed",
        Transferred => "transferred",
        Conferenced => "conferenced",
        Ended => "ended",
        Abandoned => "abandoned",
    }
);

/// Where a transfer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTarget {
    Agent(String),
    Queue(String),
}

impl TransferTarget {
    /// (target agent, target queue) of an optional target, as the event's two fields hold them.
    pub fn columns(target: Option<&Self>) -> (Option<&str>, Option<&str>) {
        match target {
            Some(Self::Agent(agent)) => (Some(agent), None),
            Some(Self::Queue(queue)) => (None, Some(queue)),
            None => (None, None),
        }
    }
}

/// The part of an event the machine reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub event_id: String,
    pub kind: EventType,
    pub occurred_at: DateTime<Utc>,
    pub sequence: i64,
    pub caller_number: Option<String>,
    pub dialed_number: Option<String>,
    pub queue: Option<String>,
    pub agent_id: Option<String>,
    pub target: Option<TransferTarget>,
}

impl Step {
    /// The order events are applied in.
    pub fn sort_key(&self) -> (DateTime<Utc>, i64, &str) {
        (self.occurred_at, self.sequence, &self.event_id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    InProgress,
    /// Answered, then ended.
    Completed,
    /// The caller hung up before an answer.
    Abandoned,
    /// Ended without an answer and without an abandon (overflow, IVR, error).
    Unanswered,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::InProgress => "in_progress",
            Outcome::Completed => "completed",
            Outcome::Abandoned => "abandoned",
            Outcome::Unanswered => "unanswered",
        }
    }
}

/// A call as folded from its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub state: CallState,
    pub outcome: Outcome,
    pub caller_number: Option<String>,
    pub dialed_number: Option<String>,
    pub queue: Option<String>,
    /// The agent the call is with now (ringing, connected or held).
    pub current_agent: Option<String>,
    /// Agents who joined by conference, besides the current one.
    pub participants: Vec<String>,
    pub handled_by: Vec<String>,
    pub transfers: i32,
    pub offered_at: DateTime<Utc>,
    pub queued_at: Option<DateTime<Utc>>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub hold_ms: i64,
    pub held_since: Option<DateTime<Utc>>,
    /// After the first answer, time spent between a transfer and the next agent on the line:
    /// ringing a target agent, and waiting again in a queue (its ringing included). Neither is
    /// talk time (docs/KPIS.md).
    pub transfer_ring_ms: i64,
    pub requeue_wait_ms: i64,
    /// The transfer gap open now: since when, and whether it went to a queue.
    pub transfer_since: Option<(DateTime<Utc>, bool)>,
    pub event_count: i32,
    /// When the latest of its events occurred (a call with none for long is stale on the board).
    pub last_event_at: DateTime<Utc>,
}

impl CallRecord {
    /// Agents who see this call on their softphone now.
    pub fn on_call_agents(&self) -> Vec<String> {
        let mut agents: Vec<String> = self.current_agent.iter().cloned().collect();
        for agent in &self.participants {
            if !agents.contains(agent) {
                agents.push(agent.clone());
            }
        }
        agents
    }
}

/// Why an event cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Impossible(pub String);

/// Applies one event to a call (`None` before its first event).
pub fn apply(call: Option<CallRecord>, step: &Step) -> Result<CallRecord, Impossible> {
    let mut call = match call {
        None => CallRecord {
            state: CallState::Offered,
            outcome: Outcome::InProgress,
            caller_number: None,
            dialed_number: None,
            queue: None,
            current_agent: None,
            participants: Vec::new(),
            handled_by: Vec::new(),
            transfers: 0,
            offered_at: step.occurred_at,
            queued_at: None,
            answered_at: None,
            ended_at: None,
            hold_ms: 0,
            held_since: None,
            transfer_ring_ms: 0,
            requeue_wait_ms: 0,
            transfer_since: None,
            event_count: 0,
            last_event_at: step.occurred_at,
        },
        Some(call) => {
            if call.state.is_terminal() {
                return Err(Impossible(format!(
                    "{} after the call {}",
                    step.kind.as_str().to_uppercase(),
                    call.state.as_str()
                )));
            }
            if step.kind == EventType::Offered {
                return Err(Impossible(
                    "OFFERED must be the first event of a call".into(),
                ));
            }
            call
        }
    };
    let at = step.occurred_at;
    call.event_count += 1;
    call.last_event_at = call.last_event_at.max(at);
    if call.caller_number.is_none() {
        call.caller_number.clone_from(&step.caller_number);
    }
    if call.dialed_number.is_none() {
        call.dialed_number.clone_from(&step.dialed_number);
    }
    if step.queue.is_some() {
        call.queue.clone_from(&step.queue);
    }
    let end_hold = |call: &mut CallRecord| {
        if let Some(since) = call.held_since.take() {
            call.hold_ms += (at - since).num_milliseconds().max(0);
        }
    };
    // An agent is on the line again (or the call ended): a transfer gap closes.
    let end_transfer = |call: &mut CallRecord| {
        if let Some((since, to_queue)) = call.transfer_since.take() {
            let gap = (at - since).num_milliseconds().max(0);
            match to_queue {
                true => call.requeue_wait_ms += gap,
                false => call.transfer_ring_ms += gap,
            }
        }
    };
    match step.kind {
        EventType::Offered => call.state = CallState::Offered,
        EventType::Queued => {
            call.state = CallState::Queued;
            call.queued_at.get_or_insert(at);
            call.current_agent = None;
        }
        EventType::Ringing => {
            call.state = CallState::Ringing;
            call.current_agent.clone_from(&step.agent_id);
        }
        EventType::Answered => {
            end_hold(&mut call);
            end_transfer(&mut call);
            call.state = CallState::Connected;
            call.answered_at.get_or_insert(at);
            // Gateways name the answering agent (checked at the edge); without one the ringing
            // agent is assumed.
            if let Some(agent) = step.agent_id.clone().or_else(|| call.current_agent.clone()) {
                if !call.handled_by.contains(&agent) {
                    call.handled_by.push(agent.clone());
                }
                call.current_agent = Some(agent);
            }
        }
        EventType::Held => {
            call.state = CallState::Held;
            // Nobody holds a caller who is between agents: that time is the transfer's.
            if call.transfer_since.is_none() {
                call.held_since.get_or_insert(at);
            }
        }
        EventType::Resumed => {
            end_hold(&mut call);
            end_transfer(&mut call);
            call.state = CallState::Connected;
        }
        EventType::Conferenced => {
            end_hold(&mut call);
            end_transfer(&mut call);
            call.state = CallState::Connected;
            if let Some(agent) = &step.agent_id {
                if !call.handled_by.contains(agent) {
                    call.handled_by.push(agent.clone());
                }
                if call.current_agent.as_ref() != Some(agent) && !call.participants.contains(agent)
                {
                    call.participants.push(agent.clone());
                }
            }
        }
        EventType::Transferred => {
            end_hold(&mut call);
            end_transfer(&mut call);
            call.transfers += 1;
            call.participants.clear();
            // Before any answer a transfer is routing, and the wait is the queue's (ASA).
            if call.answered_at.is_some() {
                let to_queue = matches!(step.target, Some(TransferTarget::Queue(_)));
                call.transfer_since = Some((at, to_queue));
            }
            match &step.target {
                Some(TransferTarget::Agent(agent)) => {
                    call.state = CallState::Ringing;
                    call.current_agent = Some(agent.clone());
                }
                Some(TransferTarget::Queue(queue)) => {
                    call.state = CallState::Queued;
                    call.queue = Some(queue.clone());
                    call.queued_at.get_or_insert(at);
                    call.current_agent = None;
                }
                None => return Err(Impossible("TRANSFERRED without a target".into())),
            }
        }
        EventType::Ended | EventType::Abandoned => {
            if step.kind == EventType::Abandoned && call.answered_at.is_some() {
                return Err(Impossible("ABANDONED after the call was answered".into()));
            }
            end_hold(&mut call);
            end_transfer(&mut call);
            call.ended_at = Some(at);
            call.current_agent = None;
            call.participants.clear();
            (call.state, call.outcome) = match (step.kind, call.answered_at) {
                (EventType::Abandoned, _) => (CallState::Abandoned, Outcome::Abandoned),
                (_, Some(_)) => (CallState::Ended, Outcome::Completed),
                (_, None) => (CallState::Ended, Outcome::Unanswered),
            };
        }
    }
    Ok(call)
}

/// Folds events already sorted by [`Step::sort_key`]; the error names the first impossible one.
pub fn fold<'a>(
    steps: impl IntoIterator<Item = &'a Step>,
) -> Result<Option<CallRecord>, (String, Impossible)> {
    let mut call = None;
    for step in steps {
        call = Some(apply(call, step).map_err(|reason| (step.event_id.clone(), reason))?);
    }
    Ok(call)
}

/// Adds `step` to a call's accepted history (sorted), or says why it is impossible there.
/// Returns the history with the step in place and the new record.
pub fn admit(mut accepted: Vec<Step>, step: Step) -> Result<(Vec<Step>, CallRecord), Impossible> {
    let position = accepted.partition_point(|s| s.sort_key() < step.sort_key());
    accepted.insert(position, step);
    match fold(&accepted) {
        Ok(Some(record)) => Ok((accepted, record)),
        Ok(None) => Err(Impossible("no events".into())),
        Err((_, reason)) => Err(reason),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    fn at(second: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + second, 0)
            .single()
            .expect("valid time")
    }

    fn step(n: i64, kind: EventType) -> Step {
        Step {
            event_id: format!("e{n:03}"),
            kind,
            occurred_at: at(n),
            sequence: 0,
            caller_number: (kind == EventType::Offered).then(|| "+14155550100".to_owned()),
            dialed_number: None,
            queue: (kind == EventType::Queued).then(|| "billing".to_owned()),
            agent_id: matches!(
                kind,
                EventType::Ringing | EventType::Answered | EventType::Conferenced
            )
            .then(|| format!("a-{n}")),
            target: (kind == EventType::Transferred).then(|| TransferTarget::Agent("a-22".into())),
        }
    }

    fn fold_all(steps: &[Step]) -> CallRecord {
        fold(steps).expect("possible").expect("some events")
    }

    #[test]
    fn a_full_call_is_folded() {
        use EventType::*;
        let steps: Vec<Step> = [
            Offered,
            Queued,
            Ringing,
            Answered,
            Held,
            Resumed,
            Transferred,
            Answered,
            Ended,
        ]
        .into_iter()
        .enumerate()
        .map(|(i, kind)| step(i as i64 * 10, kind))
        .collect();
        let call = fold_all(&steps);
        assert_eq!(
            (call.state, call.outcome),
            (CallState::Ended, Outcome::Completed)
        );
        assert_eq!(call.handled_by, ["a-30", "a-70"]);
        assert_eq!(call.transfers, 1);
        assert_eq!(call.hold_ms, 10_000);
        assert_eq!((call.transfer_ring_ms, call.requeue_wait_ms), (10_000, 0));
        assert_eq!(call.queue.as_deref(), Some("billing"));
        assert_eq!(call.answered_at, Some(at(30)));
        assert_eq!(call.ended_at, Some(at(80)));
        assert!(call.on_call_agents().is_empty());
    }

    #[test]
    fn transfer_gaps_are_ring_or_queue_time_never_hold_and_routing_is_neither() {
        use EventType::*;
        let to_queue = |n: i64| Step {
            target: Some(TransferTarget::Queue("sales".into())),
            ..step(n, Transferred)
        };
        // Answered at 2; a-22 rings 10 s and never answers; the call goes to a queue at 12,
        // is held there (no agent holds it) at 15, rings a-25 at 25 and is answered at 32.
        let call = fold_all(&[
            step(0, Offered),
            step(1, Ringing),
            step(2, Answered),
            step(2, Transferred),
            to_queue(12),
            step(15, Held),
            step(25, Ringing),
            step(32, Answered),
            step(40, Ended),
        ]);
        assert_eq!(call.transfer_ring_ms, 10_000);
        assert_eq!(call.requeue_wait_ms, 20_000);
        assert_eq!(call.hold_ms, 0);
        assert_eq!(call.transfers, 2);

        // A caller who hangs up while the target rings: the ringing is the transfer's too.
        let hung_up = fold_all(&[
            step(0, Offered),
            step(2, Answered),
            step(5, Transferred),
            step(9, Ended),
        ]);
        assert_eq!(
            (hung_up.transfer_ring_ms, hung_up.requeue_wait_ms),
            (4_000, 0)
        );

        // Before the first answer a transfer routes the call; its wait is the queue's (ASA).
        let routed = fold_all(&[
            step(0, Offered),
            to_queue(3),
            step(8, Ringing),
            step(9, Answered),
            step(20, Ended),
        ]);
        assert_eq!((routed.transfer_ring_ms, routed.requeue_wait_ms), (0, 0));
        assert_eq!(routed.queued_at, Some(at(3)));
    }

    #[test]
    fn impossible_events_are_rejected_with_a_reason() {
        use EventType::*;
        let ended = fold_all(&[
            step(0, Offered),
            step(1, Ringing),
            step(2, Answered),
            step(3, Ended),
        ]);
        assert_eq!(
            apply(Some(ended.clone()), &step(4, Answered)).map(|_| ()),
            Err(Impossible("ANSWERED after the call ended".into()))
        );
        let answered = fold_all(&[step(0, Offered), step(1, Ringing), step(2, Answered)]);
        assert!(apply(Some(answered.clone()), &step(3, Abandoned)).is_err());
        assert!(apply(Some(answered), &step(3, Offered)).is_err());
    }

    #[test]
    fn a_late_event_is_placed_by_its_gateway_time() {
        use EventType::*;
        let (history, _) = admit(Vec::new(), step(30, Ended)).expect("end first");
        let (history, _) = admit(history, step(10, Ringing)).expect("ring before the end");
        let (history, call) = admit(history, step(20, Answered)).expect("answer before the end");
        assert_eq!(
            (call.state, call.outcome),
            (CallState::Ended, Outcome::Completed)
        );
        let late = admit(history, step(40, Answered));
        assert_eq!(
            late.map(|_| ()),
            Err(Impossible("ANSWERED after the call ended".into()))
        );
    }

    fn script() -> impl Strategy<Value = Vec<Step>> {
        use EventType::*;
        let middle = prop::collection::vec(
            prop::sample::select(vec![
                Queued,
                Ringing,
                Answered,
                Held,
                Resumed,
                Transferred,
                Conferenced,
            ]),
            0..12,
        );
        (middle, prop::bool::ANY).prop_map(|(middle, abandon)| {
            let mut kinds = vec![Offered, Ringing];
            kinds.extend(middle);
            let answered = kinds.contains(&Answered) || kinds.contains(&Conferenced);
            kinds.push(if abandon && !answered {
                Abandoned
            } else {
                Ended
            });
            kinds
                .into_iter()
                .enumerate()
                .map(|(i, kind)| step(i as i64, kind))
                .collect()
        })
    }

    proptest! {
        /// Whatever order a possible history arrives in, every event is accepted and the record is
        /// the one folded from the sorted history.
        #[test]
        fn arrival_order_does_not_matter(script in script(), seed in any::<u64>()) {
            prop_assume!(fold(&script).is_ok());
            let mut arrivals = script.clone();
            let mut rng = seed;
            for i in (1..arrivals.len()).rev() {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                arrivals.swap(i, (rng >> 33) as usize % (i + 1));
            }
            let mut history = Vec::new();
            let mut last = None;
            for step in arrivals {
                let (next, record) = admit(history, step).expect("a subset of a possible history is possible");
                history = next;
                last = Some(record);
            }
            prop_assert_eq!(last, Some(fold_all(&script)));
        }

        /// The accepted history is always possible, even when impossible events are mixed in.
        #[test]
        fn accepted_histories_stay_possible(script in script(), extra in prop::collection::vec((0i64..40, 0usize..10), 0..8)) {
            use EventType::*;
            let kinds = [Offered, Queued, Ringing, Answered, Held, Resumed, Transferred, Conferenced, Ended, Abandoned];
            let mut arrivals = script;
            for (second, kind) in extra {
                let mut noise = step(second, kinds[kind]);
                noise.event_id = format!("x{second:03}{kind}");
                arrivals.push(noise);
            }
            let mut history: Vec<Step> = Vec::new();
            for step in arrivals {
                if let Ok((next, _)) = admit(history.clone(), step) {
                    history = next;
                }
                prop_assert!(fold(&history).is_ok());
            }
        }
    }
}

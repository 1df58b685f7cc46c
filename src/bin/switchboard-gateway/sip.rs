//! SIP dialog events, as the shipped Kamailio configuration relays them over `evapi`, and the call
//! events each one means (docs/INTEGRATIONS.md has the table):
//!
//! | SIP | call event |
//! |---|---|
//! | initial INVITE (caller from P-Asserted-Identity, else From; dialed from the R-URI, else To) | OFFERED, then QUEUED when the dialed number maps to a queue |
//! | 180 or 183 to the initial INVITE, from an agent's phone | RINGING, with the agent |
//! | 200 to the initial INVITE | ANSWERED, with the agent |
//! | re-INVITE with `a=sendonly` or `a=inactive`, then with `a=sendrecv` | HELD, then RESUMED |
//! | REFER | TRANSFERRED, to the agent or queue of the Refer-To user |
//! | the transferee's new INVITE to the Refer-To target, its 180 and 200 | RINGING and ANSWERED of the same call (Kamailio ties the dialogs together) |
//! | the transferor's BYE after a REFER | nothing: the call goes on |
//! | CANCEL before an answer | ABANDONED |
//! | BYE | ENDED |
//!
//! A 487 (the answer to that CANCEL) adds nothing: the CANCEL already said it. Event ids are stable
//! per SIP transaction and outcome (Call-ID, CSeq, method or status, and the agent for replies from
//! forked branches), so Kamailio relaying the same message again, or the adapter replaying its
//! spool after a restart, has one effect.

use std::collections::HashMap;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use switchboard::proto::v1;

/// One message of the Kamailio configuration's evapi stream (`integrations/kamailio/`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct SipEvent {
    /// `request` or `reply`.
    pub kind: String,
    /// The request's method, or for a reply the method of the request it answers.
    pub method: String,
    /// A reply's status code (0 for requests).
    pub status: u16,
    pub call_id: String,
    /// The CSeq number.
    pub cseq: String,
    /// Whether the request (or the request a reply answers) was outside a dialog: no To tag.
    pub initial: bool,
    pub from_user: String,
    pub pai_user: String,
    pub ruri_user: String,
    pub to_user: String,
    /// A reply's Contact user: which agent's phone answered.
    pub contact_user: String,
    /// The SDP's direction attribute, when the message has one: sendrecv, sendonly, recvonly,
    /// inactive.
    pub sdp_direction: String,
    pub refer_to_user: String,
    /// For a blind transfer's new INVITE (and everything in its dialog): the Call-ID of the call it
    /// continues, which Kamailio remembered from the REFER. The events go to that call.
    pub transfer_of: String,
    /// A BYE from the transferor after a blind transfer: the call goes on with the transferee.
    pub after_transfer: bool,
    /// When Kamailio handled the message: seconds since the epoch, with microseconds ("1.5").
    pub time: String,
}

/// Who is who: SIP users (or AOR users) to agent ids, dialed numbers to queues.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mapping {
    pub agents: HashMap<String, String>,
    pub queues: HashMap<String, String>,
}

impl Mapping {
    /// The agent a SIP user is; an unmapped user is taken as the agent id itself (Switchboard
    /// learns agents it was never told about from the events).
    fn agent(&self, sip_user: &str) -> String {
        self.agents
            .get(sip_user)
            .cloned()
            .unwrap_or_else(|| sip_user.to_owned())
    }
}

/// The call events `event` means for `gateway_id` (none for messages that change nothing).
pub fn call_events(gateway_id: &str, event: &SipEvent, mapping: &Mapping) -> Vec<v1::CallEvent> {
    let occurred_at = timestamp(&event.time);
    // A transfer's new dialog continues the call it came from; its ids stay its own.
    let call_id = if event.transfer_of.is_empty() {
        &event.call_id
    } else {
        &event.transfer_of
    };
    let make = |tag: &str, kind: v1::CallEventType, sequence: i64| v1::CallEvent {
        gateway_id: gateway_id.to_owned(),
        event_id: event_id(&event.call_id, &event.cseq, tag),
        call_id: call_id.clone(),
        r#type: kind.into(),
        occurred_at: Some(occurred_at),
        sequence,
        ..Default::default()
    };
    use v1::CallEventType as T;
    match (event.kind.as_str(), event.method.as_str(), event.status) {
        // The transferee's INVITE to the target: Switchboard already rings the target (the
        // REFER's TRANSFERRED); its 180 and 200 say who rang and answered.
        ("request", "INVITE", _) if event.initial && !event.transfer_of.is_empty() => Vec::new(),
        ("request", "INVITE", _) if event.initial => {
            let caller = first(&event.pai_user, &event.from_user);
            let dialed = first(&event.ruri_user, &event.to_user);
            let mut events = vec![v1::CallEvent {
                caller_number: caller.to_owned(),
                dialed_number: dialed.to_owned(),
                ..make("INVITE", T::Offered, 0)
            }];
            if let Some(queue) = mapping.queues.get(dialed) {
                events.push(v1::CallEvent {
                    queue: queue.clone(),
                    ..make("INVITE/queued", T::Queued, 1)
                });
            }
            events
        }
        ("request", "INVITE", _) => match event.sdp_direction.as_str() {
            "sendonly" | "inactive" => vec![make("INVITE/hold", T::Held, 0)],
            "sendrecv" => vec![make("INVITE/resume", T::Resumed, 0)],
            _ => Vec::new(),
        },
        ("reply", "INVITE", 180 | 183) if event.initial && !event.contact_user.is_empty() => {
            let agent = mapping.agent(&event.contact_user);
            vec![v1::CallEvent {
                agent_id: agent.clone(),
                ..make(&format!("ring/{agent}"), T::Ringing, 0)
            }]
        }
        ("reply", "INVITE", 200) if event.initial => {
            let agent = mapping.agent(&event.contact_user);
            vec![v1::CallEvent {
                agent_id: agent,
                ..make("200", T::Answered, 0)
            }]
        }
        ("request", "REFER", _) if !event.refer_to_user.is_empty() => {
            let target = &event.refer_to_user;
            let mut transfer = make("REFER", T::Transferred, 0);
            match mapping.queues.get(target) {
                Some(queue) => transfer.target_queue = queue.clone(),
                None => transfer.target_agent_id = mapping.agent(target),
            }
            vec![transfer]
        }
        ("request", "CANCEL", _) => vec![make("CANCEL", T::Abandoned, 0)],
        ("request", "BYE", _) if event.after_transfer => Vec::new(),
        ("request", "BYE", _) => vec![make("BYE", T::Ended, 0)],
        _ => Vec::new(),
    }
}

fn first<'a>(preferred: &'a str, fallback: &'a str) -> &'a str {
    if preferred.is_empty() {
        fallback
    } else {
        preferred
    }
}

/// `{Call-ID}/{CSeq}/{what}`, or its SHA-256 when longer than an event id may be (128).
pub fn event_id(call_id: &str, cseq: &str, what: &str) -> String {
    let id = format!("{call_id}/{cseq}/{what}");
    if id.len() <= 128 {
        return id;
    }
    let digest = Sha256::digest(id.as_bytes());
    format!(
        "sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// "seconds.micros" (Kamailio's `$TV(Sn)`); now when missing or malformed.
fn timestamp(text: &str) -> prost_types::Timestamp {
    let parsed = text.split_once('.').and_then(|(s, us)| {
        let seconds: i64 = s.parse().ok()?;
        let micros: i32 = format!("{us:0<6}").get(..6)?.parse().ok()?;
        Some(prost_types::Timestamp {
            seconds,
            nanos: micros * 1000,
        })
    });
    parsed.unwrap_or_else(|| {
        let now = chrono::Utc::now();
        prost_types::Timestamp {
            seconds: now.timestamp(),
            nanos: now.timestamp_subsec_nanos() as i32,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> Mapping {
        Mapping {
            agents: [("1001".to_owned(), "ana".to_owned())].into(),
            queues: [("8005550199".to_owned(), "support".to_owned())].into(),
        }
    }

    fn invite() -> SipEvent {
        SipEvent {
            kind: "request".into(),
            method: "INVITE".into(),
            call_id: "abc@host".into(),
            cseq: "1".into(),
            initial: true,
            from_user: "+14155550100".into(),
            ruri_user: "8005550199".into(),
            time: "1765000000.250000".into(),
            ..Default::default()
        }
    }

    fn kinds(events: &[v1::CallEvent]) -> Vec<v1::CallEventType> {
        events.iter().map(|e| e.r#type()).collect()
    }

    #[test]
    fn an_initial_invite_is_offered_then_queued_with_the_asserted_caller_first() {
        let mut event = invite();
        event.pai_user = "+14155550111".into();
        let events = call_events("kam", &event, &mapping());
        assert_eq!(
            kinds(&events),
            [v1::CallEventType::Offered, v1::CallEventType::Queued]
        );
        assert_eq!(events[0].caller_number, "+14155550111");
        assert_eq!(events[0].dialed_number, "8005550199");
        assert_eq!(events[1].queue, "support");
        assert_eq!(
            events[0].occurred_at,
            Some(prost_types::Timestamp {
                seconds: 1_765_000_000,
                nanos: 250_000_000
            })
        );
        assert_ne!(events[0].event_id, events[1].event_id);
        // The same message relayed again means the same events, ids included.
        assert_eq!(call_events("kam", &event, &mapping()), events);
    }

    #[test]
    fn replies_ring_and_answer_the_mapped_agent_and_forked_branches_stay_apart() {
        let ring = |user: &str| SipEvent {
            kind: "reply".into(),
            method: "INVITE".into(),
            status: 180,
            contact_user: user.into(),
            ..invite()
        };
        let ana = call_events("kam", &ring("1001"), &mapping());
        let bob = call_events("kam", &ring("bob"), &mapping());
        assert_eq!(kinds(&ana), [v1::CallEventType::Ringing]);
        assert_eq!(
            (ana[0].agent_id.as_str(), bob[0].agent_id.as_str()),
            ("ana", "bob")
        );
        assert_ne!(ana[0].event_id, bob[0].event_id);
        let answered = call_events(
            "kam",
            &SipEvent {
                status: 200,
                ..ring("1001")
            },
            &mapping(),
        );
        assert_eq!(kinds(&answered), [v1::CallEventType::Answered]);
        assert_eq!(answered[0].agent_id, "ana");
    }

    #[test]
    fn in_dialog_requests_hold_resume_transfer_and_end() {
        let in_dialog = |method: &str, cseq: &str| SipEvent {
            method: method.into(),
            cseq: cseq.into(),
            initial: false,
            ..invite()
        };
        let hold = SipEvent {
            sdp_direction: "sendonly".into(),
            ..in_dialog("INVITE", "2")
        };
        let resume = SipEvent {
            sdp_direction: "sendrecv".into(),
            ..in_dialog("INVITE", "3")
        };
        let refer = SipEvent {
            refer_to_user: "1001".into(),
            ..in_dialog("REFER", "4")
        };
        let m = mapping();
        assert_eq!(
            kinds(&call_events("kam", &hold, &m)),
            [v1::CallEventType::Held]
        );
        assert_eq!(
            kinds(&call_events("kam", &resume, &m)),
            [v1::CallEventType::Resumed]
        );
        let transfer = call_events("kam", &refer, &m);
        assert_eq!(transfer[0].target_agent_id, "ana");
        assert_eq!(
            kinds(&call_events("kam", &in_dialog("BYE", "5"), &m)),
            [v1::CallEventType::Ended]
        );
        assert_eq!(
            kinds(&call_events("kam", &in_dialog("CANCEL", "1"), &m)),
            [v1::CallEventType::Abandoned]
        );
        // A re-INVITE without SDP (a session refresh) and an ACK change nothing.
        assert!(call_events("kam", &in_dialog("INVITE", "6"), &m).is_empty());
        assert!(call_events("kam", &in_dialog("ACK", "1"), &m).is_empty());
    }

    #[test]
    fn a_blind_transfer_continues_the_call_in_the_new_dialog() {
        let m = mapping();
        let bye_after_refer = SipEvent {
            method: "BYE".into(),
            cseq: "102".into(),
            initial: false,
            after_transfer: true,
            ..invite()
        };
        assert!(call_events("kam", &bye_after_refer, &m).is_empty());
        let new_dialog = SipEvent {
            call_id: "xfer@host".into(),
            transfer_of: "abc@host".into(),
            ruri_user: "1002".into(),
            ..invite()
        };
        assert!(
            call_events("kam", &new_dialog, &m).is_empty(),
            "no second OFFERED"
        );
        let answered = call_events(
            "kam",
            &SipEvent {
                kind: "reply".into(),
                status: 200,
                contact_user: "1002".into(),
                ..new_dialog.clone()
            },
            &m,
        );
        assert_eq!(answered[0].call_id, "abc@host", "the call it continues");
        assert_eq!(answered[0].agent_id, "1002");
        assert!(
            answered[0].event_id.starts_with("xfer@host/"),
            "ids of its own dialog"
        );
        let ended = call_events(
            "kam",
            &SipEvent {
                method: "BYE".into(),
                cseq: "2".into(),
                initial: false,
                ..new_dialog
            },
            &m,
        );
        assert_eq!(kinds(&ended), [v1::CallEventType::Ended]);
        assert_eq!(ended[0].call_id, "abc@host");
    }

    #[test]
    fn long_call_ids_make_ids_within_the_limit() {
        let id = event_id(&"x".repeat(200), "1", "INVITE");
        assert!(id.len() <= 128 && id.starts_with("sha256:"));
        assert_eq!(id, event_id(&"x".repeat(200), "1", "INVITE"));
    }
}

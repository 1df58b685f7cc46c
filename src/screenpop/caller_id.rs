//! What a dialplan gets for a caller (`CallerIdService`, and `GET /v1/cid`, `/v1/pop`): the same
//! pop `Lookup` answers, projected to a display name or to the hints an IVR routes on. Nothing
//! else of the card leaves: no contacts, orders, offers or feedback.

use crate::proto::v1;

/// The caller-ID name: the customer's display name (or company); for a shared number, the
/// company all candidates share, or else the first candidate's name with "(1 of N)"; empty when
/// nobody is known.
pub fn caller_name(pop: &v1::ScreenPop) -> String {
    match pop.r#match() {
        v1::MatchKind::Exact => pop.card.as_ref().map(name_of).unwrap_or_default(),
        v1::MatchKind::Multiple => {
            let Some(first) = pop.candidates.first() else {
                return String::new();
            };
            let company = first.company.trim();
            if !company.is_empty() && pop.candidates.iter().all(|c| c.company.trim() == company) {
                return company.to_owned();
            }
            let count = pop.candidate_count.max(pop.candidates.len() as i32);
            format!("{} (1 of {count})", name_of(first))
        }
        v1::MatchKind::None | v1::MatchKind::Unspecified => String::new(),
    }
}

fn name_of(card: &v1::CustomerCard) -> String {
    let name = card.display_name.trim();
    if name.is_empty() {
        card.company.trim().to_owned()
    } else {
        name.to_owned()
    }
}

/// The routing hints for a pop. For a shared number they summarize the candidates: a flag holds
/// when it holds for any of them, the tier is the highest, language and segment are given only
/// when all agree, and the last agent is the one of the most recent contact among them.
pub fn routing(pop: &v1::ScreenPop, source: v1::PopSource) -> v1::GetCallerRoutingResponse {
    let cards: Vec<&v1::CustomerCard> = pop.card.iter().chain(pop.candidates.iter()).collect();
    let (dialed_campaign_id, dialed_campaign_name) = pop
        .dialed_campaign
        .as_ref()
        .map(|offer| (offer.campaign_id.clone(), offer.campaign_name.clone()))
        .unwrap_or_default();
    let candidate_count = match pop.r#match() {
        v1::MatchKind::Exact => 1,
        v1::MatchKind::Multiple => pop.candidate_count.max(cards.len() as i32),
        _ => 0,
    };
    v1::GetCallerRoutingResponse {
        r#match: pop.r#match,
        caller_kind: pop.caller_kind,
        normalized_number: pop.normalized_number.clone(),
        customer_id: match (pop.r#match(), &pop.card) {
            (v1::MatchKind::Exact, Some(card)) => card.customer_id.clone(),
            _ => String::new(),
        },
        display_name: caller_name(pop),
        tier: cards.iter().map(|c| c.tier).max().unwrap_or_default(),
        vip: cards.iter().any(|c| c.vip),
        preferred_language: agreed(&cards, |c| &c.preferred_language),
        segment: agreed(&cards, |c| &c.segment),
        do_not_call: cards.iter().any(|c| c.do_not_call),
        urgent_case_open: open_cases(&cards)
            .any(|case| case.priority() == v1::CasePriority::Urgent),
        overdue_case_open: open_cases(&cards).any(|case| case.overdue),
        repeat_contact: cards.iter().any(|c| c.repeat_contact),
        last_agent_id: last_agent(&cards),
        dialed_campaign_id,
        dialed_campaign_name,
        candidate_count,
        source: source.into(),
    }
}

fn open_cases<'a>(cards: &'a [&'a v1::CustomerCard]) -> impl Iterator<Item = &'a v1::CardCase> {
    cards.iter().flat_map(|card| card.open_cases.iter())
}

/// The value every card has, or empty when they differ (or there are none).
fn agreed(cards: &[&v1::CustomerCard], field: fn(&v1::CustomerCard) -> &String) -> String {
    let mut values = cards.iter().map(|card| field(card));
    match values.next() {
        Some(first) if values.all(|v| v == first) => first.clone(),
        _ => String::new(),
    }
}

/// The agent of the most recent contact with an agent among the cards.
fn last_agent(cards: &[&v1::CustomerCard]) -> String {
    cards
        .iter()
        .flat_map(|card| card.recent_interactions.iter())
        .filter(|contact| !contact.agent_id.is_empty())
        .max_by_key(|contact| contact.started_at.as_ref().map(|at| (at.seconds, at.nanos)))
        .map(|contact| contact.agent_id.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(id: &str, name: &str, company: &str) -> v1::CustomerCard {
        v1::CustomerCard {
            customer_id: id.into(),
            display_name: name.into(),
            company: company.into(),
            ..Default::default()
        }
    }

    fn contact(agent: &str, seconds: i64) -> v1::CardInteraction {
        v1::CardInteraction {
            agent_id: agent.into(),
            started_at: Some(prost_types::Timestamp { seconds, nanos: 0 }),
            ..Default::default()
        }
    }

    fn shared(cards: Vec<v1::CustomerCard>, count: i32) -> v1::ScreenPop {
        v1::ScreenPop {
            r#match: v1::MatchKind::Multiple.into(),
            candidates: cards,
            candidate_count: count,
            ..Default::default()
        }
    }

    #[test]
    fn a_known_caller_is_named_and_an_unknown_one_is_not() {
        let exact = v1::ScreenPop {
            r#match: v1::MatchKind::Exact.into(),
            card: Some(card("c1", "Ada Lovelace", "Analytical Engines")),
            ..Default::default()
        };
        assert_eq!(caller_name(&exact), "Ada Lovelace");
        let company_only = v1::ScreenPop {
            card: Some(card("c1", " ", "Analytical Engines")),
            ..exact
        };
        assert_eq!(caller_name(&company_only), "Analytical Engines");
        let none = v1::ScreenPop {
            r#match: v1::MatchKind::None.into(),
            ..Default::default()
        };
        assert_eq!(caller_name(&none), "");
    }

    #[test]
    fn a_shared_number_is_named_by_its_company_or_as_one_of_several() {
        let office = shared(vec![card("a", "Ann", "Acme"), card("b", "Bob", "Acme")], 2);
        assert_eq!(caller_name(&office), "Acme");
        let household = shared(vec![card("a", "Ann", ""), card("b", "Bob", "")], 12);
        assert_eq!(caller_name(&household), "Ann (1 of 12)");
    }

    #[test]
    fn routing_hints_summarize_a_shared_number() {
        let mut ann = card("a", "Ann", "");
        ann.vip = true;
        ann.tier = v1::Tier::Silver.into();
        ann.preferred_language = "de".into();
        ann.recent_interactions = vec![contact("agent-old", 100)];
        let mut bob = card("b", "Bob", "");
        bob.tier = v1::Tier::Gold.into();
        bob.preferred_language = "fr".into();
        bob.recent_interactions = vec![contact("", 300), contact("agent-new", 200)];
        bob.open_cases = vec![v1::CardCase {
            priority: v1::CasePriority::Urgent.into(),
            ..Default::default()
        }];
        let hints = routing(&shared(vec![ann, bob], 2), v1::PopSource::Cache);
        assert!(hints.vip);
        assert_eq!(hints.tier(), v1::Tier::Gold);
        assert_eq!(hints.preferred_language, "", "the candidates disagree");
        assert_eq!(hints.last_agent_id, "agent-new");
        assert!(hints.urgent_case_open);
        assert!(!hints.overdue_case_open);
        assert_eq!(hints.customer_id, "");
        assert_eq!(hints.candidate_count, 2);
    }

    #[test]
    fn routing_hints_of_one_customer_are_theirs() {
        let mut ada = card("c1", "Ada", "");
        ada.preferred_language = "pt-BR".into();
        ada.do_not_call = true;
        ada.open_cases = vec![v1::CardCase {
            priority: v1::CasePriority::Low.into(),
            overdue: true,
            ..Default::default()
        }];
        let pop = v1::ScreenPop {
            r#match: v1::MatchKind::Exact.into(),
            caller_kind: v1::CallerKind::Number.into(),
            normalized_number: "+14155550100".into(),
            card: Some(ada),
            dialed_campaign: Some(v1::CardOffer {
                campaign_id: "camp-1".into(),
                campaign_name: "Spring".into(),
                offer_text: "not shown".into(),
            }),
            ..Default::default()
        };
        let hints = routing(&pop, v1::PopSource::Database);
        assert_eq!(hints.customer_id, "c1");
        assert_eq!(hints.preferred_language, "pt-BR");
        assert!(hints.do_not_call && hints.overdue_case_open && !hints.urgent_case_open);
        assert_eq!(
            (
                hints.dialed_campaign_id.as_str(),
                hints.dialed_campaign_name.as_str()
            ),
            ("camp-1", "Spring")
        );
        assert_eq!(hints.candidate_count, 1);
        assert_eq!(hints.source(), v1::PopSource::Database);
    }
}

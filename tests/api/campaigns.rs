//! CampaignService: campaigns, outbound lists under the dialing rules, outcomes, attribution.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use switchboard::auth::Role;
use switchboard::campaigns::CallingWindow;
use switchboard::proto::v1;
use switchboard::proto::v1::campaign_service_client::CampaignServiceClient;
use tonic::Code;

use crate::calls::{CallScript, report};
use crate::helpers::{Authed, TestApp, authed, phone, spawn_app, token, violated_fields};

fn ts(at: chrono::DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(switchboard::proto_time::to_timestamp(at))
}

fn campaigns(app: &TestApp) -> CampaignServiceClient<Authed> {
    CampaignServiceClient::new(app.channel.clone())
}

fn as_agent(app: &TestApp, agent: &str) -> CampaignServiceClient<Authed> {
    CampaignServiceClient::new(authed(
        app.raw_channel.clone(),
        &token(Role::Agent, agent, None),
    ))
}

/// An active outbound campaign running from yesterday to 2028, callable all day in every zone.
pub fn outbound(name: &str) -> v1::Campaign {
    v1::Campaign {
        name: name.into(),
        channel: v1::CampaignChannel::OutboundCall.into(),
        status: v1::CampaignStatus::Active.into(),
        starts_at: ts(Utc::now() - chrono::Duration::days(1)),
        ends_at: ts(chrono::DateTime::parse_from_rfc3339("2028-01-01T00:00:00Z")
            .expect("answered")
            .with_timezone(&Utc)),
        offer_text: format!("{name}: 20% off the annual plan"),
        calling_window: Some(v1::CallingWindow {
            start_minute: 0,
            end_minute: 1440,
        }),
        ..Default::default()
    }
}

pub async fn create(app: &TestApp, campaign: v1::Campaign) -> v1::Campaign {
    campaigns(app)
        .create_campaign(v1::CreateCampaignRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            campaign: Some(campaign),
        })
        .await
        .expect("campaign created")
        .into_inner()
        .campaign
        .expect("campaign")
}

/// A customer with the given consent, zone and phone (empty: no phone).
async fn customer(
    app: &TestApp,
    name: &str,
    number: &str,
    consent: bool,
    dnc: bool,
    zone: &str,
) -> String {
    app.customers
        .clone()
        .create_customer(v1::CreateCustomerRequest {
            display_name: name.into(),
            time_zone: zone.into(),
            consent: Some(v1::Consent {
                marketing: consent,
                do_not_call: dnc,
            }),
            contact_points: if number.is_empty() {
                vec![]
            } else {
                vec![phone(number)]
            },
            ..Default::default()
        })
        .await
        .expect("customer created")
        .into_inner()
        .customer
        .expect("customer")
        .id
}

async fn add(
    app: &TestApp,
    campaign: &v1::Campaign,
    ids: &[String],
) -> v1::AddCampaignMembersResponse {
    campaigns(app)
        .add_campaign_members(v1::AddCampaignMembersRequest {
            campaign_id: campaign.id.clone(),
            members: Some(v1::add_campaign_members_request::Members::CustomerIds(
                v1::CustomerIds { ids: ids.to_vec() },
            )),
        })
        .await
        .expect("members added")
        .into_inner()
}

async fn next(
    client: &mut CampaignServiceClient<Authed>,
    campaign: &v1::Campaign,
    agent: &str,
) -> v1::NextOutboundContactResponse {
    client
        .next_outbound_contact(v1::NextOutboundContactRequest {
            campaign_id: campaign.id.clone(),
            agent_id: agent.into(),
        })
        .await
        .expect("next contact")
        .into_inner()
}

async fn stats_of(app: &TestApp, campaign: &v1::Campaign) -> v1::GetCampaignStatsResponse {
    campaigns(app)
        .get_campaign_stats(v1::GetCampaignStatsRequest {
            campaign_id: campaign.id.clone(),
        })
        .await
        .expect("stats")
        .into_inner()
}

async fn record(
    app: &TestApp,
    lease_id: &str,
    outcome: v1::OutboundOutcome,
) -> Result<v1::RecordOutcomeResponse, tonic::Status> {
    campaigns(app)
        .record_outcome(v1::RecordOutcomeRequest {
            lease_id: lease_id.into(),
            outcome: outcome.into(),
            callback_at: None,
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn campaigns_are_validated_idempotent_and_own_their_dialed_numbers() {
    let app = spawn_app().await;
    let mut client = campaigns(&app);

    let mut bad = outbound("");
    bad.ends_at = bad.starts_at;
    bad.channel = 0;
    bad.dialed_numbers = vec!["not a number".into()];
    bad.default_time_zone = "Mars/Olympus".into();
    bad.calling_window = Some(v1::CallingWindow {
        start_minute: 600,
        end_minute: 500,
    });
    let status = client
        .create_campaign(v1::CreateCampaignRequest {
            request_id: "bad".into(),
            campaign: Some(bad),
        })
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields = violated_fields(&status);
    for field in [
        "campaign.name",
        "campaign.channel",
        "campaign.ends_at",
        "campaign.dialed_numbers[0]",
        "campaign.default_time_zone",
        "campaign.calling_window",
    ] {
        assert!(fields.contains(&field.to_owned()), "{field} in {fields:?}");
    }

    let mut spring = outbound("Spring");
    spring.dialed_numbers = vec!["(800) 555-0199".into()];
    let request = v1::CreateCampaignRequest {
        request_id: "spring-1".into(),
        campaign: Some(spring.clone()),
    };
    let first = client
        .create_campaign(request.clone())
        .await
        .expect("answered")
        .into_inner()
        .campaign
        .expect("answered");
    let again = client
        .create_campaign(request)
        .await
        .expect("answered")
        .into_inner()
        .campaign
        .expect("answered");
    assert_eq!(first.id, again.id, "a retry returns the first campaign");
    assert_eq!(first.dialed_numbers, vec!["+18005550199".to_owned()]);
    assert_eq!(
        (
            first.max_attempts,
            first.retry_after_seconds,
            first.lease_seconds
        ),
        (3, 3600, 300)
    );
    assert_eq!(first.default_time_zone, "UTC");

    // The number belongs to Spring until Spring completes.
    let mut summer = outbound("Summer");
    summer.dialed_numbers = vec!["+1 800 555 0199".into()];
    let taken = client
        .create_campaign(v1::CreateCampaignRequest {
            request_id: "summer-1".into(),
            campaign: Some(summer.clone()),
        })
        .await
        .expect_err("number taken");
    assert_eq!(taken.code(), Code::AlreadyExists);

    let update = |campaign: &v1::Campaign, status: v1::CampaignStatus| v1::UpdateCampaignRequest {
        campaign: Some(v1::Campaign {
            id: campaign.id.clone(),
            version: campaign.version,
            status: status.into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["status".into()],
        }),
    };
    let illegal = client
        .update_campaign(update(&first, v1::CampaignStatus::Draft))
        .await
        .expect_err("active cannot go back to draft");
    assert_eq!(illegal.code(), Code::FailedPrecondition);
    let completed = client
        .update_campaign(update(&first, v1::CampaignStatus::Completed))
        .await
        .expect("answered")
        .into_inner()
        .campaign
        .expect("answered");
    assert_eq!(completed.version, first.version + 1);
    let stale = client
        .update_campaign(update(&first, v1::CampaignStatus::Paused))
        .await
        .expect_err("stale version");
    assert_eq!(stale.code(), Code::Aborted);
    let frozen = client
        .update_campaign(update(&completed, v1::CampaignStatus::Active))
        .await
        .expect_err("completed is final");
    assert_eq!(frozen.code(), Code::FailedPrecondition);
    let summer = client
        .create_campaign(v1::CreateCampaignRequest {
            request_id: "summer-2".into(),
            campaign: Some(summer),
        })
        .await
        .expect("the number was released")
        .into_inner()
        .campaign
        .expect("answered");

    let listed = client
        .list_campaigns(v1::ListCampaignsRequest {
            status: v1::CampaignStatus::Active.into(),
            ..Default::default()
        })
        .await
        .expect("answered")
        .into_inner();
    let ids: Vec<&str> = listed.campaigns.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, vec![summer.id.as_str()]);
}

#[tokio::test]
async fn the_list_skips_whoever_must_not_be_called_now() {
    let app = spawn_app().await;
    // Zones well inside and well outside 09:00-20:00 local time, so that the test cannot straddle
    // a window edge.
    let now = Utc::now();
    let window = CallingWindow::default();
    let inner = CallingWindow {
        start_minute: window.start_minute + 30,
        end_minute: window.end_minute - 30,
    };
    let outer = CallingWindow {
        start_minute: window.start_minute - 30,
        end_minute: window.end_minute + 30,
    };
    let open_zone = inner.zones_open_at(now)[0];
    let nearly_open = outer.zones_open_at(now);
    let closed_zone = chrono_tz::TZ_VARIANTS
        .iter()
        .map(|z| z.name())
        .find(|z| !nearly_open.contains(z))
        .expect("some zone is far outside 09:00 to 20:00");
    let mut campaign = outbound("Rules");
    campaign.calling_window = Some(v1::CallingWindow {
        start_minute: window.start_minute,
        end_minute: window.end_minute,
    });
    campaign.default_time_zone = open_zone.into();
    let campaign = create(&app, campaign).await;

    let callable = customer(&app, "Callable", "415-555-0101", true, false, open_zone).await;
    let dnc = customer(&app, "Do Not Call", "415-555-0102", true, true, open_zone).await;
    let no_consent = customer(&app, "No Consent", "415-555-0103", false, false, open_zone).await;
    let asleep = customer(&app, "Asleep", "415-555-0104", true, false, closed_zone).await;
    let no_phone = customer(&app, "No Phone", "", true, false, open_zone).await;
    let default_zone = customer(&app, "Default Zone", "415-555-0106", true, false, "").await;
    let all = vec![
        callable.clone(),
        dnc,
        no_consent,
        asleep,
        no_phone,
        default_zone.clone(),
    ];
    let added = add(&app, &campaign, &all).await;
    assert_eq!((added.added, added.already_members), (6, 0));
    let again = add(&app, &campaign, &all).await;
    assert_eq!(
        (again.added, again.already_members),
        (0, 6),
        "adding is idempotent"
    );

    let mut client = campaigns(&app);
    let mut leased = Vec::new();
    loop {
        let answer = next(&mut client, &campaign, "a-1").await;
        match answer.contact {
            Some(contact) => leased.push(contact),
            None => break,
        }
    }
    let ids: Vec<&str> = leased.iter().map(|c| c.customer_id.as_str()).collect();
    assert_eq!(
        ids,
        vec![callable.as_str(), default_zone.as_str()],
        "list order, rules applied"
    );
    assert_eq!(leased[0].phone_number, "+14155550101");
    assert_eq!(leased[0].offer_text, "Rules: 20% off the annual plan");

    let stats = stats_of(&app, &campaign).await;
    assert_eq!(
        (stats.members, stats.leased, stats.pending, stats.done),
        (6, 2, 4, 0)
    );
}

#[tokio::test]
async fn outcomes_space_retries_limit_attempts_and_honor_do_not_call() {
    let app = spawn_app().await;
    let mut campaign = outbound("Retries");
    campaign.max_attempts = 2;
    campaign.retry_after_seconds = 1;
    let campaign = create(&app, campaign).await;
    let ada = customer(&app, "Ada", "415-555-0111", true, false, "").await;
    let bob = customer(&app, "Bob", "415-555-0112", true, false, "").await;
    add(&app, &campaign, &[ada.clone(), bob.clone()]).await;
    let mut client = campaigns(&app);

    let first = next(&mut client, &campaign, "a-1")
        .await
        .contact
        .expect("ada");
    assert_eq!(first.customer_id, ada);
    let after = record(&app, &first.lease_id, v1::OutboundOutcome::NoAnswer)
        .await
        .expect("answered");
    assert_eq!(
        (after.member_state(), after.attempts),
        (v1::MemberState::Pending, 1)
    );
    assert!(after.next_attempt_at.is_some());
    // Recording the same lease again answers the same; a different outcome is refused.
    let retry = record(&app, &first.lease_id, v1::OutboundOutcome::NoAnswer)
        .await
        .expect("answered");
    assert_eq!(retry, after);
    let conflict = record(&app, &first.lease_id, v1::OutboundOutcome::Reached)
        .await
        .expect_err("refused");
    assert_eq!(conflict.code(), Code::FailedPrecondition);

    // Ada waits out the spacing; Bob is next, and asks never to be called again.
    let second = next(&mut client, &campaign, "a-1")
        .await
        .contact
        .expect("bob");
    assert_eq!(second.customer_id, bob);
    let dnc = record(&app, &second.lease_id, v1::OutboundOutcome::DoNotCall)
        .await
        .expect("answered");
    assert_eq!(dnc.member_state(), v1::MemberState::Done);
    let bob_now = app
        .customers
        .clone()
        .get_customer(v1::GetCustomerRequest { id: bob.clone() })
        .await
        .expect("answered")
        .into_inner()
        .customer
        .expect("answered");
    assert!(
        bob_now.consent.expect("answered").do_not_call,
        "the flag is on the record"
    );

    let empty = next(&mut client, &campaign, "a-1").await;
    assert!(empty.contact.is_none(), "Ada's retry is spaced");
    assert!(empty.retry_after_seconds <= 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let third = next(&mut client, &campaign, "a-1")
        .await
        .contact
        .expect("ada again");
    assert_eq!(
        (third.customer_id.as_str(), third.attempts),
        (ada.as_str(), 1)
    );
    let last = record(&app, &third.lease_id, v1::OutboundOutcome::Busy)
        .await
        .expect("answered");
    assert_eq!(
        (last.member_state(), last.attempts),
        (v1::MemberState::Done, 2),
        "limit reached"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let exhausted = next(&mut client, &campaign, "a-1").await;
    assert!(exhausted.contact.is_none());
    assert_eq!(exhausted.retry_after_seconds, 0);

    // A second campaign never leases Bob either: do-not-call holds everywhere.
    let other = create(&app, outbound("Other")).await;
    add(&app, &other, &[bob]).await;
    assert!(next(&mut client, &other, "a-1").await.contact.is_none());

    let stats = stats_of(&app, &campaign).await;
    assert_eq!((stats.attempts, stats.done, stats.conversions), (3, 2, 0));
    let counts: Vec<(v1::OutboundOutcome, i64)> = stats
        .outcomes
        .iter()
        .map(|o| (o.outcome(), o.count))
        .collect();
    assert!(counts.contains(&(v1::OutboundOutcome::NoAnswer, 1)));
    assert!(counts.contains(&(v1::OutboundOutcome::DoNotCall, 1)));
}

#[tokio::test]
async fn callbacks_come_back_at_their_time_and_need_one() {
    let app = spawn_app().await;
    let campaign = create(&app, outbound("Callbacks")).await;
    let ada = customer(&app, "Ada", "415-555-0121", true, false, "").await;
    add(&app, &campaign, std::slice::from_ref(&ada)).await;
    let mut client = campaigns(&app);
    let lease = next(&mut client, &campaign, "a-1")
        .await
        .contact
        .expect("answered");

    let missing = record(
        &app,
        &lease.lease_id,
        v1::OutboundOutcome::CallbackRequested,
    )
    .await
    .expect_err("refused");
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&missing), vec!["callback_at".to_owned()]);

    let at = Utc::now() + chrono::Duration::milliseconds(1500);
    let after = client
        .record_outcome(v1::RecordOutcomeRequest {
            lease_id: lease.lease_id.clone(),
            outcome: v1::OutboundOutcome::CallbackRequested.into(),
            callback_at: ts(at),
        })
        .await
        .expect("answered")
        .into_inner();
    assert_eq!(
        (after.member_state(), after.attempts),
        (v1::MemberState::Pending, 0)
    );
    assert!(next(&mut client, &campaign, "a-1").await.contact.is_none());
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let callback = next(&mut client, &campaign, "a-2")
        .await
        .contact
        .expect("the callback");
    assert_eq!(callback.customer_id, ada);
    assert!(callback.callback_at.is_some());
}

#[tokio::test]
async fn an_expired_lease_returns_the_member_and_the_late_outcome_is_refused() {
    let app = spawn_app().await;
    let mut campaign = outbound("Leases");
    campaign.lease_seconds = 1;
    let campaign = create(&app, campaign).await;
    let ada = customer(&app, "Ada", "415-555-0131", true, false, "").await;
    add(&app, &campaign, std::slice::from_ref(&ada)).await;
    let mut client = campaigns(&app);
    let first = next(&mut client, &campaign, "a-1")
        .await
        .contact
        .expect("answered");
    assert!(
        next(&mut client, &campaign, "a-2").await.contact.is_none(),
        "held by a-1"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let second = next(&mut client, &campaign, "a-2")
        .await
        .contact
        .expect("back on the list");
    assert_eq!(second.customer_id, ada);
    assert_ne!(second.lease_id, first.lease_id);
    let late = record(&app, &first.lease_id, v1::OutboundOutcome::Reached)
        .await
        .expect_err("refused");
    assert_eq!(late.code(), Code::FailedPrecondition);
    record(&app, &second.lease_id, v1::OutboundOutcome::Converted)
        .await
        .expect("answered");
    let unknown = record(
        &app,
        &uuid::Uuid::new_v4().to_string(),
        v1::OutboundOutcome::Reached,
    )
    .await
    .expect_err("refused");
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn concurrent_agents_never_get_the_same_member() {
    let app = spawn_app().await;
    let campaign = create(&app, outbound("Rush")).await;
    let mut ids = Vec::new();
    for i in 0..60 {
        ids.push(
            customer(
                &app,
                &format!("Member {i}"),
                &format!("415-555-{:04}", 2000 + i),
                true,
                false,
                "",
            )
            .await,
        );
    }
    add(&app, &campaign, &ids).await;
    let agents: Vec<_> = (0..16)
        .map(|a| {
            let mut client = campaigns(&app);
            let campaign = campaign.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(contact) = next(&mut client, &campaign, &format!("agent-{a}"))
                    .await
                    .contact
                {
                    got.push(contact.customer_id);
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    for agent in agents {
        all.extend(agent.await.expect("agent task"));
    }
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 60, "every member leased once");
    assert_eq!(distinct.len(), 60, "no member leased twice");
}

#[tokio::test]
async fn segment_filters_run_in_the_database_and_agents_act_for_themselves() {
    let app = spawn_app().await;
    let campaign = create(&app, outbound("Gold")).await;
    let mut gold_ids = Vec::new();
    for (i, tier) in [v1::Tier::Gold, v1::Tier::Gold, v1::Tier::Standard]
        .into_iter()
        .enumerate()
    {
        let customer = app
            .customers
            .clone()
            .create_customer(v1::CreateCustomerRequest {
                display_name: format!("Tier {i}"),
                tier: tier.into(),
                consent: Some(v1::Consent {
                    marketing: true,
                    do_not_call: false,
                }),
                contact_points: vec![phone(&format!("415-555-03{i:02}"))],
                ..Default::default()
            })
            .await
            .expect("answered")
            .into_inner()
            .customer
            .expect("answered");
        if tier == v1::Tier::Gold {
            gold_ids.push(customer.id);
        }
    }
    let by_segment = |has_open_case: Option<bool>| v1::AddCampaignMembersRequest {
        campaign_id: campaign.id.clone(),
        members: Some(v1::add_campaign_members_request::Members::Segment(
            v1::SegmentFilter {
                tiers: vec![v1::Tier::Gold.into()],
                has_open_case,
                ..Default::default()
            },
        )),
    };
    let mut client = campaigns(&app);
    let with_case = client
        .add_campaign_members(by_segment(Some(true)))
        .await
        .expect("answered")
        .into_inner();
    assert_eq!(
        (with_case.added, with_case.already_members),
        (0, 0),
        "no gold customer has a case"
    );
    let added = client
        .add_campaign_members(by_segment(None))
        .await
        .expect("answered")
        .into_inner();
    assert_eq!((added.added, added.already_members), (2, 0));
    let again = client
        .add_campaign_members(by_segment(None))
        .await
        .expect("answered")
        .into_inner();
    assert_eq!((again.added, again.already_members), (0, 2));

    let mut agent = as_agent(&app, "a-7");
    let denied = agent
        .next_outbound_contact(v1::NextOutboundContactRequest {
            campaign_id: campaign.id.clone(),
            agent_id: "a-8".into(),
        })
        .await
        .expect_err("refused");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let mine = next(&mut agent, &campaign, "a-7")
        .await
        .contact
        .expect("answered");
    assert!(gold_ids.contains(&mine.customer_id));
    let theirs = next(&mut client, &campaign, "a-8")
        .await
        .contact
        .expect("answered");
    let not_mine = agent
        .record_outcome(v1::RecordOutcomeRequest {
            lease_id: theirs.lease_id,
            outcome: v1::OutboundOutcome::Reached.into(),
            callback_at: None,
        })
        .await
        .expect_err("refused");
    assert_eq!(not_mine.code(), Code::PermissionDenied);
    let forbidden = agent
        .create_campaign(v1::CreateCampaignRequest {
            request_id: "agent".into(),
            campaign: Some(outbound("Mine")),
        })
        .await
        .expect_err("refused");
    assert_eq!(forbidden.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn pops_show_offers_and_inbound_calls_are_attributed() {
    let app = spawn_app().await;
    let mut campaign = outbound("Loyalty");
    campaign.dialed_numbers = vec!["+1 800 555 0199".into()];
    let campaign = create(&app, campaign).await;
    let ada = customer(&app, "Ada", "(415) 555-0100", true, false, "").await;

    let (before, _) = app.pop("(415) 555-0100").await;
    assert!(before.card.expect("answered").offers.is_empty());
    add(&app, &campaign, std::slice::from_ref(&ada)).await;
    let (after, _) = app.pop("(415) 555-0100").await;
    let offers = after.card.expect("answered").offers;
    assert_eq!(offers.len(), 1, "the cached pop was invalidated by the add");
    assert_eq!(offers[0].campaign_id, campaign.id);
    assert_eq!(offers[0].offer_text, "Loyalty: 20% off the annual plan");

    // A caller dialing the campaign's number gets its offer, whoever they are.
    let dialed = app
        .pops
        .clone()
        .lookup(v1::LookupRequest {
            caller_number: "(212) 555-0199".into(),
            dialed_number: "800-555-0199".into(),
            ..Default::default()
        })
        .await
        .expect("answered")
        .into_inner()
        .pop
        .expect("answered");
    assert_eq!(dialed.r#match(), v1::MatchKind::None);
    assert_eq!(
        dialed.dialed_campaign.expect("answered").campaign_id,
        campaign.id
    );

    // The call itself counts for the campaign.
    use v1::CallEventType::Offered;
    for event in CallScript::new("loyalty-1").event(Offered, "").events {
        report(&app, event).await;
    }
    let stats = stats_of(&app, &campaign).await;
    assert_eq!(stats.inbound_calls, 1);

    // Converted: the offer leaves Ada's pop. a-1 works in the outbound team then.
    crate::analytics::set_team(&app, "a-1", "outbound").await;
    let lease = next(&mut campaigns(&app), &campaign, "a-1")
        .await
        .contact
        .expect("answered");
    record(&app, &lease.lease_id, v1::OutboundOutcome::Converted)
        .await
        .expect("answered");
    let (done, _) = app.pop("(415) 555-0100").await;
    assert!(done.card.expect("answered").offers.is_empty());
    let stats = stats_of(&app, &campaign).await;
    assert_eq!((stats.conversions, stats.conversion_rate), (1, 1.0));

    // The KPIs by campaign count the inbound call and the outbound conversion for it.
    let kpis = switchboard::proto::v1::analytics_service_client::AnalyticsServiceClient::new(
        app.channel.clone(),
    )
    .get_kpis(v1::GetKpisRequest {
        period: Some(v1::Period {
            start: ts(Utc::now() - chrono::Duration::days(1)),
            end: ts(chrono::DateTime::parse_from_rfc3339("2028-01-01T00:00:00Z")
                .expect("time")
                .with_timezone(&Utc)),
        }),
        group_by: v1::KpiGrouping::Campaign.into(),
        ..Default::default()
    })
    .await
    .expect("kpis")
    .into_inner();
    let groups: Vec<(String, [Option<f64>; 3])> = kpis
        .groups
        .iter()
        .map(|g| {
            let k = g.kpis.as_ref().expect("kpis");
            let value = |v: &Option<v1::KpiValue>| v.as_ref().and_then(|v| v.value);
            (
                g.key.clone(),
                [
                    value(&k.offered),
                    value(&k.conversions),
                    value(&k.conversion_rate),
                ],
            )
        })
        .collect();
    assert_eq!(
        groups,
        [(campaign.id.clone(), [Some(1.0), Some(1.0), Some(1.0)])]
    );

    // By team, the conversion stays with the team a-1 was in when it was recorded.
    crate::analytics::set_team(&app, "a-1", "inbound").await;
    let by_team = switchboard::proto::v1::analytics_service_client::AnalyticsServiceClient::new(
        app.channel.clone(),
    )
    .get_kpis(v1::GetKpisRequest {
        period: Some(v1::Period {
            start: ts(Utc::now() - chrono::Duration::days(1)),
            end: ts(Utc::now() + chrono::Duration::days(1)),
        }),
        group_by: v1::KpiGrouping::Team.into(),
        ..Default::default()
    })
    .await
    .expect("kpis")
    .into_inner();
    let conversions: Vec<(String, Option<f64>)> = by_team
        .groups
        .iter()
        .map(|g| {
            let k = g.kpis.as_ref().expect("kpis");
            (g.key.clone(), k.conversions.as_ref().and_then(|v| v.value))
        })
        .collect();
    assert_eq!(conversions, [("outbound".into(), Some(1.0))], "not inbound");
}

#[tokio::test]
async fn every_segment_condition_filters() {
    let app = spawn_app().await;
    let days_ago = |n: i64| ts(Utc::now() - chrono::Duration::days(n));
    // (name, language, segment, USD lifetime value in cents, last contact days ago)
    let people = [
        ("Anna", "de", "smb", Some(5_000), Some(10)),
        ("Ben", "en", "smb", None, None),
        ("Clara", "de", "enterprise", Some(50_000), Some(1)),
    ];
    for (i, (name, language, segment, value, contacted)) in people.into_iter().enumerate() {
        let id = app
            .customers
            .clone()
            .create_customer(v1::CreateCustomerRequest {
                display_name: name.into(),
                preferred_language: language.into(),
                segment: segment.into(),
                contact_points: vec![phone(&format!("415-555-04{i:02}"))],
                ..Default::default()
            })
            .await
            .expect("customer")
            .into_inner()
            .customer
            .expect("customer")
            .id;
        if let Some(amount) = value {
            app.activity()
                .record_order(v1::RecordOrderRequest {
                    system: "shop".into(),
                    order_id: format!("o-{i}"),
                    customer: Some(v1::CustomerRef {
                        r#ref: Some(v1::customer_ref::Ref::CustomerId(id.clone())),
                    }),
                    amount: Some(v1::Money {
                        currency: "USD".into(),
                        amount_minor: amount,
                    }),
                    status: v1::OrderStatus::Paid.into(),
                    ordered_at: days_ago(30),
                })
                .await
                .expect("order");
        }
        if let Some(days) = contacted {
            app.interactions()
                .log_interaction(v1::LogInteractionRequest {
                    request_id: format!("i-{i}"),
                    customer_id: id,
                    channel: v1::Channel::Voice.into(),
                    direction: v1::Direction::Inbound.into(),
                    started_at: days_ago(days),
                    ..Default::default()
                })
                .await
                .expect("interaction");
        }
    }
    let cases = [
        (
            v1::SegmentFilter {
                languages: vec!["de".into()],
                ..Default::default()
            },
            2,
        ),
        (
            v1::SegmentFilter {
                segments: vec!["smb".into()],
                currency: "USD".into(),
                min_lifetime_value_minor: Some(1_000),
                ..Default::default()
            },
            1,
        ),
        (
            v1::SegmentFilter {
                currency: "usd".into(),
                max_lifetime_value_minor: Some(10_000),
                ..Default::default()
            },
            2,
        ),
        (
            v1::SegmentFilter {
                last_contact_before: days_ago(3),
                ..Default::default()
            },
            2,
        ),
        (
            v1::SegmentFilter {
                last_contact_after: days_ago(3),
                ..Default::default()
            },
            1,
        ),
    ];
    for (i, (filter, expected)) in cases.into_iter().enumerate() {
        let campaign = create(&app, outbound(&format!("Segment {i}"))).await;
        let added = campaigns(&app)
            .add_campaign_members(v1::AddCampaignMembersRequest {
                campaign_id: campaign.id,
                members: Some(v1::add_campaign_members_request::Members::Segment(filter)),
            })
            .await
            .expect("added")
            .into_inner();
        assert_eq!(added.added, expected, "filter {i}");
    }
}

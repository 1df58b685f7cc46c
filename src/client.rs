//! Client subcommands for people at a terminal: `switchboard pop`, `customer`, `kpis`,
//! `queues`, `segment` and `scorecard`.
//! They print to stdout for the person who asked; nothing here is logged.

use std::fmt::Write as _;

use anyhow::Context as _;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::config::{CreateCustomerArgs, KpisArgs, PopArgs, QueuesArgs, SegmentArgs, ServerArgs};
use crate::proto::v1;
use crate::proto::v1::customer_service_client::CustomerServiceClient;
use crate::proto::v1::screen_pop_service_client::ScreenPopServiceClient;

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl BearerToken {
    pub fn new(token: Option<&str>) -> anyhow::Result<Self> {
        let value = token
            .map(|t| MetadataValue::try_from(format!("Bearer {}", t.trim())))
            .transpose()
            .context("the token is not a valid header value")?;
        Ok(Self(value))
    }
}

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type AuthedChannel = InterceptedService<Channel, BearerToken>;

/// The token from `--token`/`SWITCHBOARD_TOKEN`, or the dev token `.data/dev-token` if present.
pub fn token(explicit: Option<&str>) -> Option<String> {
    explicit
        .map(str::to_owned)
        .or_else(|| std::fs::read_to_string(".data/dev-token").ok())
        .filter(|t| !t.trim().is_empty())
}

pub(crate) async fn channel(server: &ServerArgs) -> anyhow::Result<AuthedChannel> {
    let channel = Channel::from_shared(server.server.clone())
        .context("invalid --server URL")?
        .connect()
        .await
        .with_context(|| format!("cannot reach {}", server.server))?;
    Ok(InterceptedService::new(
        channel,
        BearerToken::new(token(server.token.as_deref()).as_deref())?,
    ))
}

pub(crate) fn describe(status: tonic::Status) -> anyhow::Error {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    use tonic_types::StatusExt as _;
    if let Some(bad) = status.get_details_bad_request() {
        for v in bad.field_violations {
            let _ = write!(text, "\n  {}: {}", v.field, v.description);
        }
    }
    anyhow::anyhow!(text)
}

pub async fn segment(args: SegmentArgs) -> anyhow::Result<()> {
    let mut client = crate::proto::v1::segmentation_service_client::SegmentationServiceClient::new(
        channel(&args.server).await?,
    );
    let response = client
        .segment_customers(v1::SegmentCustomersRequest {
            as_of: None,
            window_days: args.window_days,
            currency: args.currency,
        })
        .await
        .map_err(describe)?
        .into_inner();
    println!(
        "{} customers scored, {} changed segment, {} ms",
        response.customers_scored, response.customers_changed, response.took_ms
    );
    for count in response.segments {
        println!("  {:<20} {}", count.segment, count.customers);
    }
    Ok(())
}

pub async fn kpis(args: KpisArgs) -> anyhow::Result<()> {
    let group_by = match args.group_by.as_deref() {
        None => v1::KpiGrouping::Unspecified,
        Some("team") => v1::KpiGrouping::Team,
        Some("campaign") => v1::KpiGrouping::Campaign,
        Some("queue") => v1::KpiGrouping::Queue,
        Some("agent") => v1::KpiGrouping::Agent,
        Some("day") => v1::KpiGrouping::Day,
        Some("hour") => v1::KpiGrouping::Hour,
        Some("month") => v1::KpiGrouping::Month,
        Some(other) => {
            anyhow::bail!(
                "unknown grouping {other}: team, queue, agent, campaign, day, hour or month"
            )
        }
    };
    let mut client = crate::proto::v1::analytics_service_client::AnalyticsServiceClient::new(
        channel(&args.server).await?,
    );
    let started = std::time::Instant::now();
    let response = client
        .get_kpis(v1::GetKpisRequest {
            period: Some(v1::Period {
                start: Some(crate::proto_time::to_timestamp(args.from)),
                end: Some(crate::proto_time::to_timestamp(args.to)),
            }),
            group_by: group_by.into(),
            time_zone: args.time_zone,
            ..Default::default()
        })
        .await
        .map_err(describe)?
        .into_inner();
    let elapsed = started.elapsed();
    let value = |v: &Option<v1::KpiValue>| {
        v.as_ref()
            .and_then(|v| v.value)
            .map_or("-".to_owned(), |v| format!("{v:.3}"))
    };
    let count = |v: &Option<v1::KpiValue>| {
        v.as_ref()
            .and_then(|v| v.value)
            .map_or("-".to_owned(), |v| format!("{v:.0}"))
    };
    println!(
        "{:<14} {:>9} {:>9} {:>8} {:>7} {:>6} {:>7} {:>8} {:>6} {:>9}",
        "group",
        "offered",
        "answered",
        "abandon",
        "ASA(s)",
        "SL",
        "AHT(s)",
        "transfer",
        "FCR",
        "occupancy"
    );
    for group in response.total.iter().chain(&response.groups) {
        let k = group.kpis.unwrap_or_default();
        let key = if group.key.is_empty() {
            "(total)"
        } else {
            &group.key
        };
        println!(
            "{key:<14} {:>9} {:>9} {:>8} {:>7} {:>6} {:>7} {:>8} {:>6} {:>9}",
            count(&k.offered),
            count(&k.answered),
            value(&k.abandonment_rate),
            value(&k.average_speed_of_answer),
            value(&k.service_level),
            value(&k.average_handle_time),
            value(&k.transfer_rate),
            value(&k.first_contact_resolution),
            value(&k.occupancy)
        );
    }
    println!(
        "({} groups, {} ms round trip)",
        response.groups.len(),
        elapsed.as_millis()
    );
    Ok(())
}

/// Prints the live queue board once.
pub async fn queues(args: QueuesArgs) -> anyhow::Result<()> {
    let mut client = crate::proto::v1::analytics_service_client::AnalyticsServiceClient::new(
        channel(&args.server).await?,
    );
    let response = client
        .get_live_queue_stats(v1::GetLiveQueueStatsRequest {
            queues: args.queues,
        })
        .await
        .map_err(describe)?
        .into_inner();
    println!(
        "{:<16} {:>7} {:>11} {:>10} {:>9} {:>5} {:>8} {:>5}",
        "queue", "waiting", "longest(s)", "in service", "available", "busy", "wrap-up", "away"
    );
    for q in &response.queues {
        let a = q.agents.unwrap_or_default();
        println!(
            "{:<16} {:>7} {:>11.0} {:>10} {:>9} {:>5} {:>8} {:>5}",
            q.queue,
            q.calls_waiting,
            q.longest_wait_seconds,
            q.calls_in_service,
            a.available,
            a.busy,
            a.after_call_work,
            a.away
        );
    }
    let a = response.agents.unwrap_or_default();
    println!(
        "all agents: {} available, {} busy, {} wrap-up, {} away, {} offline (from {})",
        a.available,
        a.busy,
        a.after_call_work,
        a.away,
        a.offline,
        match response.source() {
            v1::LiveSource::Redis => "Redis",
            _ => "PostgreSQL",
        }
    );
    Ok(())
}

pub async fn pop(args: PopArgs) -> anyhow::Result<()> {
    let mut client = ScreenPopServiceClient::new(channel(&args.server).await?);
    let started = std::time::Instant::now();
    let response = client
        .lookup(v1::LookupRequest {
            caller_number: args.caller_number,
            dialed_number: args.dialed.unwrap_or_default(),
            call_id: args.call_id.unwrap_or_default(),
        })
        .await
        .map_err(describe)?
        .into_inner();
    let elapsed = started.elapsed();
    let source = response.source();
    let pop = response.pop.unwrap_or_default();
    match pop.caller_kind() {
        v1::CallerKind::Withheld => {
            println!("Withheld number ({} µs round trip)", elapsed.as_micros());
            return Ok(());
        }
        v1::CallerKind::NotANumber => {
            println!(
                "Not a phone number: a SIP user ({} µs round trip)",
                elapsed.as_micros()
            );
            return Ok(());
        }
        _ => {}
    }
    println!(
        "{} {:?} ({:?}, {} µs round trip)",
        pop.normalized_number,
        pop.r#match(),
        source,
        elapsed.as_micros()
    );
    for card in pop.card.iter().chain(pop.candidates.iter()) {
        print!("{}", card_text(card));
    }
    if pop.r#match() == v1::MatchKind::Multiple {
        println!("  ({} customers share this number)", pop.candidate_count);
    }
    Ok(())
}

fn card_text(card: &v1::CustomerCard) -> String {
    let mut out = String::new();
    let _ = write!(out, "  {}", card.display_name);
    if !card.company.is_empty() {
        let _ = write!(out, " — {}", card.company);
    }
    let _ = writeln!(
        out,
        "  [{:?}{}]",
        card.tier(),
        if card.vip { ", VIP" } else { "" }
    );
    let _ = writeln!(
        out,
        "    id {}  language {}  time zone {}",
        card.customer_id,
        or_dash(&card.preferred_language),
        or_dash(&card.time_zone)
    );
    if card.do_not_call {
        let _ = writeln!(out, "    DO NOT CALL");
    }
    for contact in &card.primary_contacts {
        let _ = writeln!(out, "    {:?}: {}", contact.kind(), contact.value);
    }
    for reference in &card.external_references {
        let _ = writeln!(out, "    {}: {}", reference.system, reference.external_id);
    }
    out
}

fn or_dash(value: &str) -> &str {
    if value.is_empty() { "-" } else { value }
}

fn customer_text(customer: &v1::Customer) -> String {
    let mut out = format!(
        "{}  {} (version {})\n",
        customer.id, customer.display_name, customer.version
    );
    for cp in &customer.contact_points {
        let _ = writeln!(
            out,
            "  {:?} {}{}{}",
            cp.kind(),
            cp.value,
            if cp.extension.is_empty() {
                String::new()
            } else {
                format!(" ext. {}", cp.extension)
            },
            if cp.primary { " (primary)" } else { "" }
        );
    }
    for r in &customer.external_references {
        let _ = writeln!(out, "  {}: {}", r.system, r.external_id);
    }
    out
}

pub async fn create_customer(args: CreateCustomerArgs) -> anyhow::Result<()> {
    let mut client = CustomerServiceClient::new(channel(&args.server).await?);
    let tier = match args.tier.to_ascii_lowercase().as_str() {
        "standard" => v1::Tier::Standard,
        "silver" => v1::Tier::Silver,
        "gold" => v1::Tier::Gold,
        "platinum" => v1::Tier::Platinum,
        other => anyhow::bail!("unknown tier {other:?}: standard, silver, gold or platinum"),
    };
    let contact = |kind: v1::ContactKind, value: &String| v1::NewContactPoint {
        kind: kind.into(),
        value: value.clone(),
        ..Default::default()
    };
    let contact_points = args
        .phones
        .iter()
        .map(|p| contact(v1::ContactKind::Phone, p))
        .chain(
            args.emails
                .iter()
                .map(|e| contact(v1::ContactKind::Email, e)),
        )
        .collect();
    let customer = client
        .create_customer(v1::CreateCustomerRequest {
            display_name: args.name,
            company: args.company,
            tier: tier.into(),
            vip: args.vip,
            contact_points,
            ..Default::default()
        })
        .await
        .map_err(describe)?
        .into_inner()
        .customer
        .unwrap_or_default();
    print!("created {}", customer_text(&customer));
    Ok(())
}

pub async fn get_customer(server: &ServerArgs, id: String) -> anyhow::Result<()> {
    let mut client = CustomerServiceClient::new(channel(server).await?);
    let customer = client
        .get_customer(v1::GetCustomerRequest { id })
        .await
        .map_err(describe)?
        .into_inner()
        .customer
        .unwrap_or_default();
    print!("{}", customer_text(&customer));
    Ok(())
}

/// `FROM..TO`, each an RFC 3339 time or a date (midnight UTC).
fn parse_period(text: &str) -> anyhow::Result<v1::Period> {
    let time = |part: &str| -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
        if let Ok(at) = chrono::DateTime::parse_from_rfc3339(part) {
            return Ok(at.to_utc());
        }
        let day = chrono::NaiveDate::parse_from_str(part, "%Y-%m-%d")
            .with_context(|| format!("{part:?} is neither an RFC 3339 time nor a date"))?;
        Ok(day.and_time(chrono::NaiveTime::MIN).and_utc())
    };
    let (from, to) = text
        .split_once("..")
        .with_context(|| format!("{text:?} is not FROM..TO"))?;
    Ok(v1::Period {
        start: Some(crate::proto_time::to_timestamp(time(from)?)),
        end: Some(crate::proto_time::to_timestamp(time(to)?)),
    })
}

pub async fn scorecard(args: crate::config::ScorecardArgs) -> anyhow::Result<()> {
    let group_by = match args.group_by.as_str() {
        "team" => v1::ScorecardGrouping::Team,
        "queue" => v1::ScorecardGrouping::Queue,
        other => anyhow::bail!("unknown grouping {other}: team or queue"),
    };
    let mut client = crate::proto::v1::scorecard_service_client::ScorecardServiceClient::new(
        channel(&args.server).await?,
    );
    let response = client
        .get_scorecard(v1::GetScorecardRequest {
            period: Some(parse_period(&args.period)?),
            baseline_period: Some(parse_period(&args.baseline)?),
            group_by: group_by.into(),
        })
        .await
        .map_err(describe)?
        .into_inner();
    print!(
        "Roll-out scorecard, {} against {} (by {}; intervals at {:.2}%)\n\n{}",
        args.period,
        args.baseline,
        args.group_by,
        100.0 * response.confidence,
        render_scorecard(&response)
    );
    Ok(())
}

fn percent(share: &Option<v1::Share>) -> String {
    match share {
        Some(v1::Share {
            count,
            of,
            share: Some(s),
        }) => format!("{:.0}% ({count}/{of})", 100.0 * s),
        _ => "-".to_owned(),
    }
}

/// The scorecard as text: each group (the total first) with its adoption, efficiency against the
/// baseline, coordination and agents; then the feedback loop.
pub fn render_scorecard(card: &v1::GetScorecardResponse) -> String {
    let mut out = String::new();
    if let Some(group) = &card.total {
        render_group(&mut out, "(total)", group);
    }
    for group in &card.groups {
        let title = match group.key.as_str() {
            "" => "(none)",
            key => key,
        };
        render_group(&mut out, title, group);
    }
    if let Some(f) = &card.feedback {
        let median = f
            .median_hours_to_resolution
            .map_or("-".to_owned(), |h| format!("{h:.1} h"));
        let _ = writeln!(
            out,
            "== Feedback loop ==\n  resolved {}   median time to resolution {median}   past due {}   \
             negative with its case resolved {}",
            percent(&f.resolved),
            f.past_due,
            percent(&f.negative_with_case_resolved)
        );
        for c in &f.by_source_and_category {
            let source = c
                .source()
                .as_str_name()
                .trim_start_matches("FEEDBACK_SOURCE_");
            let _ = writeln!(
                out,
                "  {:<12} {:<20} {:>6} items {:>6} resolved {:>6} past due",
                source.to_lowercase(),
                c.category,
                c.items,
                c.resolved,
                c.past_due
            );
        }
    }
    out
}

fn render_group(out: &mut String, title: &str, group: &v1::ScorecardGroup) {
    let _ = writeln!(out, "== {title} ==");
    if let Some(a) = &group.adoption {
        let _ = writeln!(
            out,
            "  Adoption: pop delivered {}   interaction logged {}   disposition {}   notes {}   \
             cases updated within SLA {}",
            percent(&a.pop_delivered),
            percent(&a.interaction_logged),
            percent(&a.disposition_set),
            percent(&a.notes_written),
            percent(&a.cases_updated_within_sla)
        );
        let names: Vec<String> = a
            .silent_agents
            .iter()
            .map(|s| {
                format!(
                    "{} ({}, {} calls)",
                    s.agent_id, s.display_name, s.calls_answered
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "  Agents who logged nothing: {}{}",
            a.silent_agent_count,
            match names.is_empty() {
                true => String::new(),
                false => format!(": {}", names.join(", ")),
            }
        );
    }
    if let Some(e) = &group.efficiency {
        let _ = writeln!(
            out,
            "  {:<28} {:>9} {:>9} {:>9}  {:<22} verdict",
            "efficiency", "now", "before", "change", "interval"
        );
        for (name, c, scale) in [
            ("AHT (s)", &e.average_handle_time, 1.0),
            ("ASA (s)", &e.average_speed_of_answer, 1.0),
            ("service level (%)", &e.service_level, 100.0),
            (
                "first-contact resolution (%)",
                &e.first_contact_resolution,
                100.0,
            ),
            ("repeat contacts (%)", &e.repeat_contact_rate, 100.0),
            ("transfers (%)", &e.transfer_rate, 100.0),
            ("after-call work (s)", &e.average_after_call_work, 1.0),
        ] {
            let Some(c) = c else { continue };
            let number = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.1}", v * scale));
            let interval = match (c.change_low, c.change_high) {
                (Some(low), Some(high)) => {
                    format!("[{}, {}]", number(Some(low)), number(Some(high)))
                }
                _ => "-".to_owned(),
            };
            let verdict = c.verdict().as_str_name().trim_start_matches("VERDICT_");
            let _ = writeln!(
                out,
                "  {name:<28} {:>9} {:>9} {:>9}  {interval:<22} {}",
                number(c.value),
                number(c.baseline),
                number(c.change),
                verdict.replace('_', " ").to_lowercase()
            );
        }
    }
    if let Some(c) = &group.coordination {
        let spread = c.handle_time_spread.unwrap_or_default();
        let _ = writeln!(
            out,
            "  Coordination: transfers resolved in the team {}   cases resolved by a teammate {}   \
             AHT across {} agents {}",
            percent(&c.transfers_resolved_in_team),
            percent(&c.cases_resolved_by_teammate),
            spread.agents,
            match (
                spread.lowest,
                spread.highest,
                spread.coefficient_of_variation
            ) {
                (Some(low), Some(high), Some(cv)) => {
                    format!("{low:.0} to {high:.0} s (coefficient of variation {cv:.2})")
                }
                _ => "-".to_owned(),
            }
        );
    }
    for agent in &group.agents {
        let _ = writeln!(
            out,
            "    {:<16} {:<20} {:>5} calls   pop {}   logged {}   disposition {}   notes {}   AHT {}",
            agent.agent_id,
            agent.display_name,
            agent.calls_answered,
            percent(&agent.pop_delivered),
            percent(&agent.interaction_logged),
            percent(&agent.disposition_set),
            percent(&agent.notes_written),
            agent
                .average_handle_time
                .map_or("-".to_owned(), |s| format!("{s:.0} s"))
        );
    }
    out.push('\n');
}

#[cfg(test)]
mod scorecard_tests {
    use super::*;

    #[test]
    fn periods_are_dates_or_times_and_a_bad_one_says_why() {
        let p = parse_period("2026-11-01..2026-12-01T12:00:00Z").expect("a period");
        assert_eq!(p.start.map(|t| t.seconds), Some(1_793_491_200));
        assert_eq!(p.end.map(|t| t.seconds), Some(1_796_126_400));
        let error = parse_period("2026-11-01")
            .expect_err("no range")
            .to_string();
        assert!(error.contains("FROM..TO"), "{error}");
        assert!(parse_period("yesterday..today").is_err());
    }

    #[test]
    fn the_terminal_scorecard_shows_verdicts_shares_and_the_feedback_loop() {
        let share = |count, of| {
            Some(v1::Share {
                count,
                of,
                share: Some(count as f64 / of as f64),
            })
        };
        let card = v1::GetScorecardResponse {
            groups: vec![v1::ScorecardGroup {
                key: "north".into(),
                adoption: Some(v1::Adoption {
                    pop_delivered: share(21, 41),
                    silent_agent_count: 1,
                    silent_agents: vec![v1::SilentAgent {
                        agent_id: "a-2".into(),
                        display_name: "Ben".into(),
                        calls_answered: 20,
                    }],
                    ..Default::default()
                }),
                efficiency: Some(v1::Efficiency {
                    average_speed_of_answer: Some(v1::Comparison {
                        value: Some(9.9),
                        baseline: Some(40.0),
                        change: Some(-30.1),
                        change_low: Some(-34.9),
                        change_high: Some(-25.3),
                        verdict: v1::Verdict::Improved.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            feedback: Some(v1::FeedbackLoop {
                resolved: share(1, 4),
                past_due: 1,
                by_source_and_category: vec![v1::FeedbackCount {
                    source: v1::FeedbackSource::Shareholder.into(),
                    category: "strategy".into(),
                    items: 1,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = render_scorecard(&card);
        assert!(text.contains("== north =="), "{text}");
        assert!(text.contains("pop delivered 51% (21/41)"), "{text}");
        assert!(
            text.contains("Agents who logged nothing: 1: a-2 (Ben, 20 calls)"),
            "{text}"
        );
        assert!(text.contains("[-34.9, -25.3]"), "{text}");
        assert!(text.contains("improved"), "{text}");
        assert!(text.contains("resolved 25% (1/4)"), "{text}");
        assert!(text.contains("shareholder"), "{text}");
    }
}

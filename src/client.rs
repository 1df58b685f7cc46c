//! Client subcommands for people at a terminal: `switchboard pop` and `switchboard customer`.
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

async fn channel(server: &ServerArgs) -> anyhow::Result<AuthedChannel> {
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

fn describe(status: tonic::Status) -> anyhow::Error {
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
        Some(other) => {
            anyhow::bail!("unknown grouping {other}: team, queue, agent, campaign, day or hour")
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

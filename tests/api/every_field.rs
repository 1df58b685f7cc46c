//! Random values in every field of every RPC, generated from the descriptor set (as the
//! permission and masking tests walk it): NUL and control characters, huge strings, card numbers,
//! out-of-range timestamps, unknown enums, extreme integers, and real ids of rows that exist so
//! that requests also get past the first check.
//!
//! The property, for every request: the answer is never INTERNAL, UNKNOWN or DATA_LOSS, and a
//! refused request (any error status) changes no stored row (for a client stream of several
//! messages, whose answered messages are committed one by one, only the first half holds). The generator is seeded; a failure
//! prints the seed, and `EVERY_FIELD_SEED=<seed>` replays it.

use std::str::FromStr as _;
use std::time::Duration;

use futures::StreamExt as _;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    MethodDescriptor, Value,
};
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use switchboard::proto::v1;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::helpers::{TestApp, spawn_app};

/// Requests per RPC (`EVERY_FIELD_CASES` for a longer hunt).
fn cases() -> usize {
    std::env::var("EVERY_FIELD_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(32)
}

/// Tables background tasks write on their own (the feed sequencer, the chain stamper, the KPI
/// rollup pass, the pop invalidation relay, the stored-card builder) or that record every
/// request (the audit trail): left out of the "a refused request writes nothing" comparison.
const MOVING_TABLES: &[&str] = &[
    "_sqlx_migrations",
    "audit_events",
    "calls",
    "contact_chains_dirty",
    "customer_cards",
    "feed_events",
    "feed_head",
    "feed_positions",
    "kpi_call_rollups",
    "kpi_conversion_rollups",
    "kpi_occupancy_rollups",
    "kpi_rollup_days",
    "kpi_rollup_notes",
    "kpi_rollup_state",
    "pop_invalidations",
];

#[derive(Clone)]
struct DynCodec(MessageDescriptor);

struct DynEncoder;
struct DynDecoder(MessageDescriptor);

impl Codec for DynCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynEncoder;
    type Decoder = DynDecoder;

    fn encoder(&mut self) -> DynEncoder {
        DynEncoder
    }

    fn decoder(&mut self) -> DynDecoder {
        DynDecoder(self.0.clone())
    }
}

impl Encoder for DynEncoder {
    type Item = DynamicMessage;
    type Error = tonic::Status;

    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(dst)
            .map_err(|e| tonic::Status::internal(format!("test encoder: {e}")))
    }
}

impl Decoder for DynDecoder {
    type Item = DynamicMessage;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Self::Error> {
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("test decoder: {e}")))
    }
}

/// Values that real rows have, so that requests reach past "not found" to where data is stored.
struct Palette {
    customer: String,
    case: String,
    interaction: String,
}

/// How likely each leaf of a request is to get a bad value rather than a plausible one.
const BAD: f64 = 0.12;

impl Palette {
    /// A value a real client could send in a field of this name.
    fn plausible(&self, name: &str, rng: &mut SmallRng) -> String {
        let fresh = || uuid::Uuid::new_v4().to_string();
        let ids = [&self.customer, &self.case, &self.interaction];
        match name {
            "customer_id" | "survivor_id" | "duplicate_id" | "ids" => self.customer.clone(),
            "case_id" => self.case.clone(),
            "interaction_id" => self.interaction.clone(),
            "id" => ids[rng.random_range(0..ids.len())].clone(),
            "actor" | "agent_id" | "assignee_agent_id" | "target_agent_id" | "owner" | "agents" => {
                "a-17".into()
            }
            "gateway_id" => "pbx-1".into(),
            "call_id" => "call-1".into(),
            "request_id" | "event_id" | "order_id" | "external_id" => fresh(),
            "campaign_id" | "lease_id" | "contact_point_id" => fresh(),
            "email" | "emails" => "ada@example.com".into(),
            "time_zone" | "default_time_zone" => "Europe/London".into(),
            "currency" => "EUR".into(),
            "preferred_language" | "languages" => "en".into(),
            "disposition_code" | "code" => "resolved".into(),
            "page_token" | "after_cursor" => String::new(),
            "paths" => {
                ["subject", "status", "display_name", "priority"][rng.random_range(0..4)].into()
            }
            name if name.contains("number") || name.contains("phone") || name == "value" => {
                "+14155550100".into()
            }
            _ => "some text".into(),
        }
    }

    fn bad_string(rng: &mut SmallRng) -> String {
        match rng.random_range(0..7) {
            0 => ["\0", "a\u{0}b", "\u{1b}[2J", "\u{85}x", "\u{7f}"][rng.random_range(0..5)]
                .to_owned(),
            1 => "x".repeat(rng.random_range(65..5000)),
            2 => "💥".repeat(rng.random_range(1..300)),
            3 => "4111.1111.1111.1111 cvv 123".to_owned(),
            4 => "not-a-uuid".to_owned(),
            5 => " ".to_owned(),
            _ => String::new(),
        }
    }
}

fn bad_integer(rng: &mut SmallRng) -> i64 {
    [
        0,
        -1,
        i64::from(i32::MAX),
        i64::from(i32::MIN),
        i64::MAX,
        i64::MIN,
    ][rng.random_range(0..6)]
}

fn timestamp(message: &MessageDescriptor, rng: &mut SmallRng) -> DynamicMessage {
    let now = chrono::Utc::now().timestamp();
    let (seconds, nanos): (i64, i32) = if rng.random_bool(BAD) {
        [
            (-62_135_596_801, 0), // before year 1
            (253_402_300_800, 0), // year 10000
            (now, -1),            // negative nanos
            (now, 1_000_000_000), // too many nanos
            (i64::MIN, i32::MIN),
        ][rng.random_range(0..5)]
    } else {
        (
            now + rng.random_range(-86_400 * 30..3600),
            rng.random_range(0..999_999_999),
        )
    };
    let mut ts = DynamicMessage::new(message.clone());
    ts.set_field_by_name("seconds", Value::I64(seconds));
    ts.set_field_by_name("nanos", Value::I32(nanos));
    ts
}

fn scalar(field: &FieldDescriptor, rng: &mut SmallRng, palette: &Palette, depth: u32) -> Value {
    let bad = rng.random_bool(BAD);
    match field.kind() {
        Kind::String if bad => Value::String(Palette::bad_string(rng)),
        Kind::String => Value::String(palette.plausible(field.name(), rng)),
        Kind::Bytes => Value::Bytes(vec![0u8; rng.random_range(0..64)].into()),
        Kind::Bool => Value::Bool(rng.random_bool(0.5)),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 if bad => Value::I32(bad_integer(rng) as i32),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 if bad => Value::I64(bad_integer(rng)),
        Kind::Uint32 | Kind::Fixed32 if bad => Value::U32(bad_integer(rng) as u32),
        Kind::Uint64 | Kind::Fixed64 if bad => Value::U64(bad_integer(rng) as u64),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(rng.random_range(1..10)),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(rng.random_range(1..10)),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(rng.random_range(1..10)),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(rng.random_range(1..10)),
        Kind::Float => Value::F32(if bad { f32::NAN } else { 1.5 }),
        Kind::Double => Value::F64(if bad { f64::NAN } else { 1.5 }),
        Kind::Enum(e) => {
            let known: Vec<i32> = e.values().map(|v| v.number()).filter(|n| *n != 0).collect();
            Value::EnumNumber(match (bad, known.is_empty()) {
                (true, _) | (false, true) => [0, 99, -1][rng.random_range(0..3)],
                (false, false) => known[rng.random_range(0..known.len())],
            })
        }
        Kind::Message(m) if m.full_name() == "google.protobuf.Timestamp" => {
            Value::Message(timestamp(&m, rng))
        }
        Kind::Message(m) => Value::Message(message(&m, rng, palette, depth + 1)),
    }
}

/// A plausible request (most fields set, to values a real client could send) with a few leaves
/// bad, to a depth of three.
fn message(
    descriptor: &MessageDescriptor,
    rng: &mut SmallRng,
    palette: &Palette,
    depth: u32,
) -> DynamicMessage {
    let mut message = DynamicMessage::new(descriptor.clone());
    if depth > 3 {
        return message;
    }
    for field in descriptor.fields() {
        if rng.random_bool(0.15) {
            continue;
        }
        let value = if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                continue;
            };
            let (key, value) = (entry.map_entry_key_field(), entry.map_entry_value_field());
            let entries = (0..rng.random_range(0..4))
                .filter_map(|_| match scalar(&key, rng, palette, depth) {
                    Value::String(k) => {
                        Some((MapKey::String(k), scalar(&value, rng, palette, depth)))
                    }
                    _ => None,
                })
                .collect();
            Value::Map(entries)
        } else if field.is_list() {
            Value::List(
                (0..rng.random_range(0..4))
                    .map(|_| scalar(&field, rng, palette, depth))
                    .collect(),
            )
        } else {
            scalar(&field, rng, palette, depth)
        };
        message.set_field(&field, value);
    }
    message
}

/// One statement that fingerprints every row of every table a request may write.
async fn fingerprint_statement(app: &TestApp) -> String {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' \
         AND tablename <> ALL($1) \
         AND NOT (SELECT relispartition FROM pg_class WHERE oid = quote_ident(tablename)::regclass) \
         ORDER BY 1",
    )
    .bind(MOVING_TABLES)
    .fetch_all(&app.db)
    .await
    .expect("tables");
    let parts: Vec<String> = tables
        .iter()
        .map(|t| {
            format!("SELECT '{t}' AS t, md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), '')) AS h FROM {t} r")
        })
        .collect();
    format!(
        "SELECT string_agg(t || ':' || h, ',' ORDER BY t) FROM ({}) x",
        parts.join(" UNION ALL ")
    )
}

async fn fingerprint(app: &TestApp, statement: &str) -> String {
    sqlx::query_scalar(sqlx::AssertSqlSafe(statement.to_owned()))
        .fetch_one(&app.db)
        .await
        .expect("fingerprint")
}

/// The tables whose fingerprints differ.
fn changed(before: &str, after: &str) -> Vec<String> {
    before
        .split(',')
        .zip(after.split(','))
        .filter(|(b, a)| b != a)
        .map(|(b, _)| b.split(':').next().unwrap_or_default().to_owned())
        .collect()
}

/// Sends one request; its status, or OK. A stream's items are read to the end (at most 2 s).
async fn call(
    app: &TestApp,
    method: &MethodDescriptor,
    requests: Vec<DynamicMessage>,
) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_str(&format!(
        "/{}/{}",
        method.parent_service().full_name(),
        method.name()
    ))
    .expect("path");
    let codec = DynCodec(method.output());
    let mut requests = requests.into_iter();
    let first = requests.next().expect("a request");
    match (method.is_client_streaming(), method.is_server_streaming()) {
        (false, false) => grpc
            .unary(tonic::Request::new(first), path, codec)
            .await
            .map(|_| ()),
        (false, true) => {
            let mut stream = grpc
                .server_streaming(tonic::Request::new(first), path, codec)
                .await?
                .into_inner();
            // A live stream never ends: its first items are enough.
            let read = tokio::time::timeout(Duration::from_millis(300), async {
                while let Some(item) = stream.next().await {
                    item?;
                }
                Ok::<(), tonic::Status>(())
            });
            read.await.unwrap_or(Ok(()))
        }
        (true, _) => {
            let all: Vec<DynamicMessage> = std::iter::once(first).chain(requests).collect();
            let mut stream = grpc
                .streaming(tonic::Request::new(tokio_stream::iter(all)), path, codec)
                .await?
                .into_inner();
            let read = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(item) = stream.next().await {
                    item?;
                }
                Ok::<(), tonic::Status>(())
            });
            read.await.unwrap_or(Ok(()))
        }
    }
}

/// Rows to point at: a customer, a case, an interaction, feedback, agents.
async fn palette(app: &TestApp) -> Palette {
    let customer = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    let case = app.open_case(&customer.id, "seed-case").await;
    app.dispositions(&[("resolved", true)]).await;
    let interaction = app
        .interactions()
        .log_interaction(v1::LogInteractionRequest {
            request_id: "seed-interaction".into(),
            customer_id: customer.id.clone(),
            channel: v1::Channel::Voice.into(),
            direction: v1::Direction::Inbound.into(),
            agent_id: "a-17".into(),
            started_at: Some(switchboard::proto_time::to_timestamp(chrono::Utc::now())),
            ..Default::default()
        })
        .await
        .expect("interaction")
        .into_inner()
        .interaction
        .expect("interaction");
    Palette {
        customer: customer.id,
        case: case.id,
        interaction: interaction.id,
    }
}

#[tokio::test]
async fn random_values_in_every_field_of_every_rpc_never_give_internal_and_refusals_write_nothing()
{
    let app = spawn_app().await;
    let palette = palette(&app).await;
    let pool =
        DescriptorPool::decode(switchboard::proto::FILE_DESCRIPTOR_SET).expect("descriptors");
    let seed: u64 = std::env::var("EVERY_FIELD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let mut rng = SmallRng::seed_from_u64(seed);
    let statement = fingerprint_statement(&app).await;
    let mut failures = Vec::new();
    let (mut sent, mut refused, mut methods) = (0, 0, 0);
    let cases = cases();
    for service in pool
        .services()
        .filter(|s| s.package_name() == "switchboard.v1")
    {
        for method in service.methods() {
            methods += 1;
            for _ in 0..cases {
                let count = if method.is_client_streaming() {
                    rng.random_range(1..4)
                } else {
                    1
                };
                let requests: Vec<DynamicMessage> = (0..count)
                    .map(|_| message(&method.input(), &mut rng, &palette, 0))
                    .collect();
                let before = fingerprint(&app, &statement).await;
                let result = call(&app, &method, requests.clone()).await;
                sent += 1;
                let Err(status) = result else { continue };
                refused += 1;
                let name = method.full_name();
                if matches!(
                    status.code(),
                    Code::Internal | Code::Unknown | Code::DataLoss
                ) {
                    let fields: Vec<String> = requests[0]
                        .fields()
                        .map(|(field, value)| format!("{}={value:?}", field.name()))
                        .collect();
                    let mut shown = fields.join(", ");
                    shown.truncate(shown.floor_char_boundary(800));
                    failures.push(format!(
                        "{name}: {:?} {} for {shown}",
                        status.code(),
                        status.message()
                    ));
                }
                // A stream of several messages commits each message it answers (import: "rows
                // already answered stay written"); only a refusal of the whole request must
                // leave nothing behind.
                if count > 1 {
                    continue;
                }
                let after = fingerprint(&app, &statement).await;
                let tables = changed(&before, &after);
                if !tables.is_empty() {
                    failures.push(format!(
                        "{name}: refused with {:?} but wrote {tables:?}",
                        status.code()
                    ));
                }
            }
        }
    }
    println!("every field: {sent} requests, {refused} refused, seed {seed}");
    assert!(methods > 50, "the walk found the RPCs: {methods}");
    assert_eq!(sent, methods * cases, "every RPC was exercised");
    assert!(
        refused < sent,
        "some requests got through: the check is not vacuous"
    );
    assert!(
        failures.is_empty(),
        "seed {seed} (EVERY_FIELD_SEED={seed} replays it): {} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

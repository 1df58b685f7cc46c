//! `switchboard seed`: realistic synthetic customers, deterministic for a given `--seed`.
//!
//! Each batch of customers is generated from its own RNG (derived from the seed and the batch
//! number) on a blocking thread while the previous batch is written with `COPY`, so 1,000,000
//! customers take a few minutes. Raw phone numbers are produced in mixed national and
//! international formats and go through the same parser as the API, so the stored E.164 is what
//! the service itself would store. About 3% of customers share a household number with the
//! customer before them, so MULTIPLE pops exist in the data. Seeding writes straight to
//! PostgreSQL: run it before `serve`, or expect cached pops to catch up within their TTL.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::Context as _;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::config::SeedArgs;
use crate::phone::PhoneParser;

const BATCH: u64 = 20_000;

const FIRST_NAMES: &[&str] = &[
    "Ada",
    "Alan",
    "Amara",
    "Ana",
    "Anders",
    "Aroha",
    "Beatriz",
    "Carlos",
    "Chen",
    "Chloe",
    "Daniel",
    "Deepa",
    "Diego",
    "Elena",
    "Emma",
    "Fatima",
    "Femi",
    "Grace",
    "Hana",
    "Hiro",
    "Ines",
    "Ivan",
    "Jamal",
    "James",
    "Julia",
    "Kai",
    "Karin",
    "Kwame",
    "Laura",
    "Leila",
    "Liam",
    "Lucia",
    "Luis",
    "Maria",
    "Mateo",
    "Mei",
    "Mohammed",
    "Nadia",
    "Noah",
    "Olivia",
    "Omar",
    "Priya",
    "Rafael",
    "Rosa",
    "Sam",
    "Sara",
    "Sofia",
    "Tariq",
    "Thomas",
    "Valentina",
    "Wei",
    "Yara",
    "Yusuf",
    "Zoe",
];
const LAST_NAMES: &[&str] = &[
    "Abe",
    "Adeyemi",
    "Andersson",
    "Bauer",
    "Becker",
    "Brown",
    "Chen",
    "Costa",
    "Da Silva",
    "Dubois",
    "Fischer",
    "Garcia",
    "Gonzalez",
    "Haddad",
    "Hansen",
    "Hernandez",
    "Ivanova",
    "Jensen",
    "Johnson",
    "Kim",
    "Kowalski",
    "Kumar",
    "Lee",
    "Lopez",
    "Martin",
    "Martinez",
    "Meyer",
    "Müller",
    "Nakamura",
    "Nguyen",
    "Novak",
    "O'Brien",
    "Okafor",
    "Patel",
    "Petrov",
    "Rossi",
    "Schmidt",
    "Silva",
    "Singh",
    "Smith",
    "Suzuki",
    "Tanaka",
    "Taylor",
    "Weber",
    "Williams",
    "Wilson",
    "Yilmaz",
    "Zhang",
];
const COMPANIES: &[&str] = &[
    "Acme Logistics",
    "Blue Harbor Foods",
    "Cedar Health",
    "Delta Machining",
    "Evergreen Energy",
    "Fjord Design",
    "Granite Insurance",
    "Harbor Freight Co",
    "Ionic Labs",
    "Juniper Retail",
    "Keystone Legal",
    "Lumen Media",
];
const US_AREA_CODES: &[u16] = &[
    212, 213, 305, 312, 404, 415, 503, 512, 602, 617, 702, 718, 206, 303, 469, 646,
];
const SEGMENTS: &[&str] = &["", "", "new", "loyal", "at-risk", "high-value"];
const LANGUAGES: &[(&str, &str)] = &[
    ("en-US", "America/New_York"),
    ("en-US", "America/Los_Angeles"),
    ("es-US", "America/Chicago"),
    ("en-GB", "Europe/London"),
    ("de-DE", "Europe/Berlin"),
    ("fr-FR", "Europe/Paris"),
];

/// One generated batch, rendered as COPY text for each table.
#[derive(Default)]
struct Batch {
    customers: String,
    contacts: String,
    references: String,
    sample_numbers: Vec<String>,
}

pub async fn run(args: SeedArgs) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(&args.database.database_url)
        .await
        .context("connecting to PostgreSQL")?;
    crate::db::MIGRATOR
        .run(&mut conn)
        .await
        .context("applying migrations")?;
    if args.demo {
        demo_customers(&mut conn).await?;
    }
    let started = Instant::now();
    let batches = args.customers.div_ceil(BATCH);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(2);
    let (seed, total, phones) = (args.seed, args.customers, args.default_region);
    let producer = tokio::task::spawn_blocking(move || {
        for b in 0..batches {
            let count = BATCH.min(total - b * BATCH);
            if tx
                .blocking_send(generate(seed, b, b * BATCH, count, &phones))
                .is_err()
            {
                return;
            }
        }
    });
    let mut written = 0u64;
    let mut samples = Vec::new();
    while let Some(batch) = rx.recv().await {
        let mut tx = conn.begin().await?;
        copy(&mut tx, "COPY customers (id, display_name, company, preferred_language, time_zone, tier, vip, segment, marketing_consent, do_not_call) FROM STDIN", batch.customers).await?;
        copy(&mut tx, "COPY contact_points (id, customer_id, kind, value, extension, label, is_primary) FROM STDIN", batch.contacts).await?;
        copy(
            &mut tx,
            "COPY external_references (system, external_id, customer_id) FROM STDIN",
            batch.references,
        )
        .await?;
        tx.commit()
            .await
            .context("committing a seed batch (same --seed twice? use another seed)")?;
        written += BATCH.min(args.customers - written);
        if samples.len() < 3 {
            samples.extend(batch.sample_numbers.into_iter().take(3 - samples.len()));
        }
        if written.is_multiple_of(100_000) || written == args.customers {
            tracing::info!(
                written,
                elapsed_s = started.elapsed().as_secs_f32(),
                "seeding"
            );
        }
    }
    producer.await?;
    sqlx::query!("ANALYZE customers, contact_points, external_references")
        .execute(&mut conn)
        .await?;
    println!(
        "seeded {written} customers in {:.1} s (seed {})",
        started.elapsed().as_secs_f32(),
        args.seed
    );
    for number in samples {
        println!("  try: switchboard pop {number}");
    }
    Ok(())
}

async fn copy(
    conn: &mut PgConnection,
    statement: &'static str,
    data: String,
) -> anyhow::Result<()> {
    let mut sink = conn.copy_in_raw(statement).await?;
    sink.send(data.into_bytes()).await?;
    sink.finish().await?;
    Ok(())
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn uuid(rng: &mut ChaCha8Rng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.random()).into_uuid()
}

/// A raw phone number as some upstream system might have typed it.
fn raw_phone(rng: &mut ChaCha8Rng) -> String {
    match rng.random_range(0..100) {
        0..70 => {
            let area = pick(rng, US_AREA_CODES);
            let exchange = rng.random_range(200..1000);
            let line = rng.random_range(0..10_000);
            match rng.random_range(0..5) {
                0 => format!("+1{area}{exchange}{line:04}"),
                1 => format!("({area}) {exchange}-{line:04}"),
                2 => format!("{area}-{exchange}-{line:04}"),
                3 => format!("1 {area} {exchange} {line:04}"),
                _ => format!("+1 {area}.{exchange}.{line:04}"),
            }
        }
        70..85 => {
            let (a, b) = (
                rng.random_range(100..1000),
                rng.random_range(100_000..1_000_000),
            );
            match rng.random_bool(0.5) {
                true => format!("+44 7{a} {b}"),
                false => format!("011 44 7{a} {b}"),
            }
        }
        85..95 => format!("+49 30 {}", rng.random_range(1_000_000..100_000_000)),
        _ => format!("+33 6 {:08}", rng.random_range(0..100_000_000)),
    }
}

fn generate(seed: u64, batch: u64, first: u64, count: u64, phones: &PhoneParser) -> Batch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ batch);
    let mut out = Batch::default();
    let mut previous_home: Option<String> = None;
    for n in first..first + count {
        let id = uuid(&mut rng);
        let (first_name, last_name) = (*pick(&mut rng, FIRST_NAMES), *pick(&mut rng, LAST_NAMES));
        let company = if rng.random_bool(0.2) {
            *pick(&mut rng, COMPANIES)
        } else {
            ""
        };
        let (language, zone) = *pick(&mut rng, LANGUAGES);
        let tier = match rng.random_range(0..100) {
            0..70 => "standard",
            70..88 => "silver",
            88..97 => "gold",
            _ => "platinum",
        };
        let vip = tier == "platinum" && rng.random_bool(0.5);
        let segment = *pick(&mut rng, SEGMENTS);
        let (marketing, dnc) = (rng.random_bool(0.6), rng.random_bool(0.05));
        let _ = writeln!(
            out.customers,
            "{id}\t{first_name} {last_name}\t{company}\t{language}\t{zone}\t{tier}\t{vip}\t{segment}\t{marketing}\t{dnc}"
        );

        let mut numbers: Vec<(String, &str)> = Vec::new();
        if let Some(home) = previous_home.take().filter(|_| rng.random_bool(0.03)) {
            numbers.push((home, "home"));
        }
        let wanted = rng.random_range(1..=3);
        while numbers.len() < wanted {
            let label = ["mobile", "home", "work"][numbers.len()];
            if let Ok(parsed) = phones.parse(&raw_phone(&mut rng), "")
                && !numbers.iter().any(|(e164, _)| e164 == parsed.e164())
            {
                numbers.push((parsed.e164().to_owned(), label));
            }
        }
        for (i, (e164, label)) in numbers.iter().enumerate() {
            let _ = writeln!(
                out.contacts,
                "{}\t{id}\tphone\t{e164}\t\t{label}\t{}",
                uuid(&mut rng),
                i == 0
            );
        }
        let email = format!(
            "{}.{}{n}@example.{}",
            first_name.to_lowercase(),
            last_name.to_lowercase().replace([' ', '\''], ""),
            pick(&mut rng, &["com", "org", "net"])
        );
        let _ = writeln!(
            out.contacts,
            "{}\t{id}\temail\t{email}\t\tpersonal\ttrue",
            uuid(&mut rng)
        );
        if rng.random_bool(0.6) {
            let _ = writeln!(out.references, "erp\tC-{seed}-{n:08}\t{id}");
        }
        if out.sample_numbers.len() < 3 && n % 997 == 0 {
            out.sample_numbers.push(numbers[0].0.clone());
        }
        previous_home = numbers.last().map(|(e164, _)| e164.clone());
    }
    out
}

/// The named customers the README's examples use. Idempotent.
async fn demo_customers(conn: &mut PgConnection) -> anyhow::Result<()> {
    let demo = [
        (
            "00000000-0000-4000-8000-000000000001",
            "Ada Lovelace",
            "Analytical Engines Ltd",
            "platinum",
            true,
            "en-GB",
            "Europe/London",
            "+14155550100",
            "ada@example.com",
            Some("C-000001"),
        ),
        (
            "00000000-0000-4000-8000-000000000002",
            "Maria Garcia",
            "",
            "gold",
            false,
            "es-US",
            "America/Chicago",
            "+14155550111",
            "maria.garcia@example.com",
            Some("C-000002"),
        ),
        (
            "00000000-0000-4000-8000-000000000003",
            "Luis Garcia",
            "",
            "standard",
            false,
            "es-US",
            "America/Chicago",
            "+14155550111",
            "luis.garcia@example.com",
            None,
        ),
    ];
    let mut tx = conn.begin().await?;
    for (id, name, company, tier, vip, language, zone, phone, email, erp) in demo {
        let id = Uuid::parse_str(id)?;
        let inserted = sqlx::query!(
        "INSERT INTO customers (id, display_name, company, tier, vip, preferred_language, time_zone, marketing_consent) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, true) ON CONFLICT (id) DO NOTHING",
        id,
        name,
        company,
        tier,
        vip,
        language,
        zone
    )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            continue;
        }
        for (kind, value, label) in [("phone", phone, "mobile"), ("email", email, "personal")] {
            sqlx::query!(
        "INSERT INTO contact_points (id, customer_id, kind, value, label, is_primary) VALUES ($1, $2, $3, $4, $5, true)",
        Uuid::new_v4(),
        id,
        kind,
        value,
        label
    )
            .execute(&mut *tx)
            .await?;
        }
        if let Some(erp) = erp {
            sqlx::query!(
        "INSERT INTO external_references (system, external_id, customer_id) VALUES ('erp', $1, $2)",
        erp,
        id
    )
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    println!("demo customers: Ada Lovelace +14155550100; Maria and Luis Garcia share +14155550111");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_customers() {
        let phones = PhoneParser::for_region("US").expect("US");
        let a = generate(7, 0, 0, 200, &phones);
        let b = generate(7, 0, 0, 200, &phones);
        let c = generate(8, 0, 0, 200, &phones);
        assert_eq!(a.customers, b.customers);
        assert_eq!(a.contacts, b.contacts);
        assert_ne!(a.customers, c.customers);
        assert_eq!(a.customers.lines().count(), 200);
    }

    #[test]
    fn generated_numbers_are_stored_in_e164() {
        let phones = PhoneParser::for_region("US").expect("US");
        let batch = generate(1, 0, 0, 300, &phones);
        for line in batch.contacts.lines().filter(|l| l.contains("\tphone\t")) {
            let number = line.split('\t').nth(3).expect("value column");
            assert!(
                number.starts_with('+') && number[1..].bytes().all(|b| b.is_ascii_digit()),
                "{number}"
            );
            assert_eq!(
                phones
                    .parse(number, "")
                    .map(|p| p.e164().to_owned())
                    .as_deref(),
                Ok(number)
            );
        }
    }
}

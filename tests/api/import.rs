//! ImportService: normalize, match, create/update/skip, dry runs, and re-runs that change nothing.

use switchboard::proto::v1;
use switchboard::proto::v1::import_service_client::ImportServiceClient;
use tonic::Code;

use crate::helpers::{TestApp, spawn_app};

fn row(n: i64, name: &str, phones: &[&str], emails: &[&str]) -> v1::ImportRow {
    v1::ImportRow {
        row_number: n,
        display_name: name.into(),
        phones: phones.iter().map(|p| (*p).to_owned()).collect(),
        emails: emails.iter().map(|e| (*e).to_owned()).collect(),
        ..Default::default()
    }
}

async fn import(
    app: &TestApp,
    chunks: Vec<Vec<v1::ImportRow>>,
    dry_run: bool,
) -> Result<Vec<v1::ImportRowResult>, tonic::Status> {
    let messages: Vec<v1::ImportCustomersRequest> = chunks
        .into_iter()
        .map(|rows| v1::ImportCustomersRequest { rows, dry_run })
        .collect();
    let mut responses = ImportServiceClient::new(app.channel.clone())
        .import_customers(tokio_stream::iter(messages))
        .await?
        .into_inner();
    let mut results = Vec::new();
    while let Some(response) = responses.message().await? {
        results.extend(response.results);
    }
    Ok(results)
}

async fn counts(app: &TestApp) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM contact_points), \
                (SELECT count(*) FROM external_references)",
    )
    .fetch_one(&app.db)
    .await
    .expect("counts")
}

fn outcomes(results: &[v1::ImportRowResult]) -> Vec<(i64, v1::ImportOutcome)> {
    results
        .iter()
        .map(|r| (r.row_number, r.outcome()))
        .collect()
}

#[tokio::test]
async fn an_import_matches_reports_each_row_and_a_rerun_changes_nothing() {
    let app = spawn_app().await;
    let existing = app
        .create_customer("Ada Lovelace", &["(415) 555-0100"])
        .await;
    let linked = app
        .customers
        .clone()
        .create_customer(v1::CreateCustomerRequest {
            display_name: "Charles Babbage".into(),
            external_references: vec![v1::ExternalReference {
                system: "legacy".into(),
                external_id: "C-2".into(),
            }],
            ..Default::default()
        })
        .await
        .expect("linked")
        .into_inner()
        .customer
        .expect("customer");
    app.pop("(415) 555-0100").await; // cached before the import

    let mut by_ref = row(4, "C. Babbage", &["+44 20 7946 0018"], &[]);
    by_ref.external_references = vec![v1::ExternalReference {
        system: "legacy".into(),
        external_id: "C-2".into(),
    }];
    let mut ada = row(2, "Ada King", &["415.555.0100"], &["Ada@Example.com"]);
    ada.do_not_call = Some(true);
    let mut grace = row(1, "Grace Hopper", &["212-555-0199"], &["grace@example.com"]);
    grace.external_references = vec![v1::ExternalReference {
        system: "legacy".into(),
        external_id: "G-1".into(),
    }];
    // Two references of two different customers: which one is it?
    let mut conflicting = row(6, "Someone", &[], &[]);
    conflicting.external_references = vec![
        by_ref.external_references[0].clone(),
        grace.external_references[0].clone(),
    ];
    let first_chunk = vec![
        grace,
        ada,
        row(
            3,
            "G. Hopper",
            &["(212) 555-0199"],
            &["amazing.grace@example.com"],
        ),
        by_ref,
    ];
    let second_chunk = vec![
        row(5, "Bad Phone", &["12"], &[]),
        conflicting,
        row(7, "Grace H.", &[], &["amazing.grace@example.com"]),
        row(8, "  ", &[], &[]),
    ];
    let file = vec![first_chunk, second_chunk];
    let expected = vec![
        (1, v1::ImportOutcome::Created),
        (2, v1::ImportOutcome::Updated),
        (3, v1::ImportOutcome::MergedInto),
        (4, v1::ImportOutcome::Updated),
        (5, v1::ImportOutcome::Rejected),
        (6, v1::ImportOutcome::Rejected),
        (7, v1::ImportOutcome::SkippedDuplicate),
        (8, v1::ImportOutcome::Rejected),
    ];

    let before = counts(&app).await;
    let preview = import(&app, file.clone(), true).await.expect("dry run");
    assert_eq!(outcomes(&preview), expected);
    assert_eq!(counts(&app).await, before, "a dry run writes nothing");

    let results = import(&app, file.clone(), false).await.expect("import");
    assert_eq!(
        outcomes(&results),
        expected,
        "the dry run reported exactly this"
    );
    assert_eq!(results[1].customer_id, existing.id);
    assert_eq!(results[1].matched_by, "phone");
    assert_eq!(results[2].customer_id, results[0].customer_id);
    assert_eq!(results[3].customer_id, linked.id);
    assert_eq!(results[3].matched_by, "external_reference");
    assert_eq!(
        (
            results[4].field.as_str(),
            results[5].field.as_str(),
            results[7].field.as_str()
        ),
        ("phones[0]", "external_references[1]", "display_name")
    );
    assert_eq!(results[6].customer_id, results[0].customer_id);
    assert_eq!(results[6].matched_by, "email");

    let ada_now = app
        .customers
        .clone()
        .get_customer(v1::GetCustomerRequest {
            id: existing.id.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .customer
        .expect("customer");
    assert_eq!(
        ada_now.display_name, "Ada Lovelace",
        "held values are not overwritten"
    );
    assert!(ada_now.consent.expect("consent").do_not_call);
    assert!(
        ada_now
            .contact_points
            .iter()
            .any(|c| c.value == "ada@example.com" && c.primary),
        "her first email became her primary email"
    );
    let grace = app
        .customers
        .clone()
        .get_customer(v1::GetCustomerRequest {
            id: results[0].customer_id.clone(),
        })
        .await
        .expect("grace")
        .into_inner()
        .customer
        .expect("customer");
    let primaries: Vec<&str> = grace
        .contact_points
        .iter()
        .filter(|c| c.primary)
        .map(|c| c.value.as_str())
        .collect();
    assert_eq!(primaries, vec!["+12125550199", "grace@example.com"]);
    let (pop, _) = app.pop("(415) 555-0100").await;
    assert!(
        pop.card.expect("card").do_not_call,
        "the cached pop was invalidated"
    );

    let after = counts(&app).await;
    let rerun = import(&app, file, false).await.expect("re-run");
    for result in &rerun {
        assert!(
            matches!(
                result.outcome(),
                v1::ImportOutcome::SkippedDuplicate | v1::ImportOutcome::Rejected
            ),
            "row {} was {:?} on the re-run",
            result.row_number,
            result.outcome()
        );
    }
    assert_eq!(counts(&app).await, after, "a re-run changes nothing");
}

#[tokio::test]
async fn an_import_refuses_oversized_chunks_and_a_changing_dry_run() {
    let app = spawn_app().await;
    let too_many = (0..1_001).map(|i| row(i, "Someone", &[], &[])).collect();
    let status = import(&app, vec![too_many], false)
        .await
        .expect_err("too many rows");
    assert_eq!(status.code(), Code::InvalidArgument);

    let messages = vec![
        v1::ImportCustomersRequest {
            rows: vec![row(1, "Ada", &["415-555-0100"], &[])],
            dry_run: true,
        },
        v1::ImportCustomersRequest {
            rows: vec![row(2, "Bob", &["415-555-0101"], &[])],
            dry_run: false,
        },
    ];
    let mut responses = ImportServiceClient::new(app.channel.clone())
        .import_customers(tokio_stream::iter(messages))
        .await
        .expect("stream")
        .into_inner();
    let first = responses
        .message()
        .await
        .expect("first chunk")
        .expect("answer");
    assert_eq!(first.results.len(), 1);
    let changed = responses.message().await.expect_err("dry_run changed");
    assert_eq!(changed.code(), Code::InvalidArgument);
    let customers: i64 = sqlx::query_scalar("SELECT count(*) FROM customers")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(customers, 0, "the dry run was rolled back");
}

/// `switchboard import customers`: a legacy CSV streamed in messages of two rows, where the file's
/// own bad rows (too many fields, a yes/no that is neither) are reported by line beside the
/// server's results, in file order; a dry run writes nothing; a re-run changes nothing.
#[tokio::test]
async fn the_import_command_streams_a_csv_and_reports_every_line() {
    use switchboard::config::{ImportCustomersArgs, ServerArgs};
    let app = spawn_app().await;
    app.create_customer("Fay Held", &["+1 415 555 0104"]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("legacy.csv");
    std::fs::write(
        &file,
        "name,phone,email,external_references.legacy,do_not_call\n\
         Ada,+1 415 555 0100,ada@example.com,L-1,no\n\
         Ada Again,(415) 555-0100,ada@work.example,,\n\
         Bob,not a phone,,,\n\
         Cy,+1 415 555 0101,cy@example.com,L-3,no,extra\n\
         Dee,+1 415 555 0102,,,maybe\n\
         \"Eve, Jr.\",+1 415 555 0103,,,\n\
         Fay,+1 415 555 0104,fay@example.com,,\n",
    )
    .expect("written");
    let report = dir.path().join("report.csv");
    let args = |dry_run| ImportCustomersArgs {
        file: file.clone(),
        dry_run,
        mapping: None,
        report: Some(report.clone()),
        batch: 2,
        server: ServerArgs {
            server: app.address.clone(),
            token: Some(crate::helpers::token(
                switchboard::auth::Role::Admin,
                "migration",
                None,
            )),
        },
    };
    let lines = || -> Vec<(String, String, String)> {
        let mut reader = csv::Reader::from_path(&report).expect("report");
        reader
            .records()
            .map(|r| {
                let r = r.expect("record");
                (r[0].to_owned(), r[1].to_owned(), r[4].to_owned())
            })
            .collect()
    };
    let expected = |again: bool| -> Vec<(String, String, String)> {
        let valid = |first: &str| match again {
            true => "SKIPPED_DUPLICATE".to_owned(),
            false => first.to_owned(),
        };
        vec![
            ("2".into(), valid("CREATED"), "".into()),
            ("3".into(), valid("MERGED_INTO"), "".into()),
            ("4".into(), "REJECTED".into(), "phones[0]".into()),
            ("5".into(), "REJECTED".into(), "row".into()),
            ("6".into(), "REJECTED".into(), "do_not_call".into()),
            ("7".into(), valid("CREATED"), "".into()),
            ("8".into(), valid("UPDATED"), "".into()),
        ]
    };
    let customers = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM customers")
            .fetch_one(&app.db)
            .await
            .expect("count")
    };

    let summary = switchboard::import_file::customers(args(true))
        .await
        .expect("dry run");
    assert_eq!(lines(), expected(false));
    assert_eq!(summary.get("REJECTED"), Some(&3));
    assert_eq!(customers().await, 1, "a dry run writes nothing");

    switchboard::import_file::customers(args(false))
        .await
        .expect("import");
    assert_eq!(lines(), expected(false));
    assert_eq!(customers().await, 3);
    let eve = app.pop("+1 415 555 0103").await.0;
    assert_eq!(
        eve.card.map(|c| c.display_name),
        Some("Eve, Jr.".to_owned()),
        "a quoted comma stays in its field"
    );

    let summary = switchboard::import_file::customers(args(false))
        .await
        .expect("re-run");
    assert_eq!(lines(), expected(true));
    assert_eq!(summary.get("SKIPPED_DUPLICATE"), Some(&4));
    assert_eq!(customers().await, 3);
}

//! CustomerService: the integrated record as other systems and agents use it.

use prost_types::FieldMask;
use switchboard::proto::v1;
use tonic::Code;

use crate::helpers::{email, phone, spawn_app, violated_fields};

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

#[tokio::test]
async fn a_created_customer_reads_back_normalized() {
    let app = spawn_app().await;
    let mut client = app.customers.clone();
    let created = client
        .create_customer(v1::CreateCustomerRequest {
            display_name: "  Ada Lovelace ".into(),
            company: "Analytical Engines".into(),
            preferred_language: "en-GB".into(),
            time_zone: "Europe/London".into(),
            tier: v1::Tier::Platinum.into(),
            vip: true,
            consent: Some(v1::Consent {
                marketing: true,
                do_not_call: false,
            }),
            contact_points: vec![
                phone("(415) 555-0100 ext. 12"),
                phone("+44 20 7946 0958"),
                email("Ada@Example.COM"),
            ],
            external_references: vec![v1::ExternalReference {
                system: "erp".into(),
                external_id: "C-1".into(),
            }],
            ..Default::default()
        })
        .await
        .expect("created")
        .into_inner()
        .customer
        .expect("customer");

    assert_eq!(
        uuid::Uuid::parse_str(&created.id)
            .expect("uuid")
            .get_version_num(),
        4
    );
    assert_eq!(created.display_name, "Ada Lovelace");
    assert_eq!(created.version, 1);
    let values: Vec<(&str, &str, bool)> = created
        .contact_points
        .iter()
        .map(|c| (c.value.as_str(), c.extension.as_str(), c.primary))
        .collect();
    assert_eq!(
        values,
        [
            ("+14155550100", "12", true),
            ("+442079460958", "", false),
            ("ada@example.com", "", true)
        ]
    );

    let fetched = client
        .get_customer(v1::GetCustomerRequest {
            id: created.id.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .customer
        .expect("customer");
    assert_eq!(fetched.external_references[0].external_id, "C-1");
    assert_eq!(fetched.tier(), v1::Tier::Platinum);
    assert_eq!(fetched.time_zone, "Europe/London");
    assert!(fetched.consent.expect("consent").marketing);
}

#[tokio::test]
async fn create_with_a_request_id_is_idempotent() {
    let app = spawn_app().await;
    let request = v1::CreateCustomerRequest {
        display_name: "Grace Hopper".into(),
        request_id: "req-1".into(),
        contact_points: vec![phone("+12125550199")],
        ..Default::default()
    };
    let create = |request: v1::CreateCustomerRequest| {
        let mut client = app.customers.clone();
        tokio::spawn(async move {
            client
                .create_customer(request)
                .await
                .map(|r| r.into_inner().customer.expect("customer").id)
        })
    };
    let first = create(request.clone()).await.expect("task").expect("first");
    let retry = create(request.clone()).await.expect("task").expect("retry");
    assert_eq!(first, retry);

    // Concurrent retries of a new request id all get the one customer they created together.
    let racing: Vec<_> = (0..8)
        .map(|_| {
            create(v1::CreateCustomerRequest {
                request_id: "req-2".into(),
                ..request.clone()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for attempt in racing {
        ids.push(
            attempt
                .await
                .expect("task")
                .expect("every concurrent retry succeeds"),
        );
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");

    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM customers")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(count, 2);
}

#[tokio::test]
async fn every_bad_field_is_reported_at_once() {
    let app = spawn_app().await;
    let status = app
        .customers
        .clone()
        .create_customer(v1::CreateCustomerRequest {
            display_name: "   ".into(),
            company: "x".repeat(201),
            preferred_language: "english please".into(),
            time_zone: "Mars/Olympus".into(),
            tier: 99,
            contact_points: vec![
                phone("not a number"),
                email("ada@"),
                v1::NewContactPoint {
                    kind: 42,
                    value: "x".into(),
                    ..Default::default()
                },
            ],
            external_references: vec![v1::ExternalReference {
                system: "".into(),
                external_id: "1".into(),
            }],
            ..Default::default()
        })
        .await
        .expect_err("rejected");
    let mut fields = violated_fields(&status);
    fields.sort();
    assert_eq!(
        fields,
        [
            "company",
            "contact_points[0].value",
            "contact_points[1].value",
            "contact_points[2].kind",
            "display_name",
            "external_references[0].system",
            "preferred_language",
            "tier",
            "time_zone",
        ]
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM customers")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(count, 0, "nothing written");
}

#[tokio::test]
async fn a_create_that_fails_halfway_writes_nothing() {
    let app = spawn_app().await;
    let taken = v1::ExternalReference {
        system: "erp".into(),
        external_id: "C-9".into(),
    };
    app.customers
        .clone()
        .create_customer(v1::CreateCustomerRequest {
            display_name: "First".into(),
            external_references: vec![taken.clone()],
            ..Default::default()
        })
        .await
        .expect("first");
    let status = app
        .customers
        .clone()
        .create_customer(v1::CreateCustomerRequest {
            display_name: "Second".into(),
            contact_points: vec![phone("+14155550123")],
            external_references: vec![taken],
            ..Default::default()
        })
        .await
        .expect_err("conflict");
    assert_eq!(status.code(), Code::AlreadyExists);
    let counts: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM contact_points)",
    )
    .fetch_one(&app.db)
    .await
    .expect("counts");
    assert_eq!(counts, (1, 0));
}

#[tokio::test]
async fn update_changes_only_the_masked_fields_and_bumps_the_version() {
    let app = spawn_app().await;
    let created = app.create_customer("Alan Turing", &["+442079460001"]).await;
    let updated = app
        .customers
        .clone()
        .update_customer(v1::UpdateCustomerRequest {
            customer: Some(v1::Customer {
                id: created.id.clone(),
                version: created.version,
                display_name: "Alan M. Turing".into(),
                company: "ignored: not in the mask".into(),
                tier: v1::Tier::Gold.into(),
                consent: Some(v1::Consent {
                    marketing: false,
                    do_not_call: true,
                }),
                ..Default::default()
            }),
            update_mask: mask(&["display_name", "tier", "consent.do_not_call"]),
        })
        .await
        .expect("updated")
        .into_inner()
        .customer
        .expect("customer");
    assert_eq!(updated.display_name, "Alan M. Turing");
    assert_eq!(updated.company, "");
    assert_eq!(updated.tier(), v1::Tier::Gold);
    assert!(updated.consent.expect("consent").do_not_call);
    assert_eq!(updated.version, created.version + 1);
}

#[tokio::test]
async fn a_stale_version_is_aborted_and_changes_nothing() {
    let app = spawn_app().await;
    let created = app.create_customer("Katherine Johnson", &[]).await;
    let update = |name: &str| v1::UpdateCustomerRequest {
        customer: Some(v1::Customer {
            id: created.id.clone(),
            version: created.version,
            display_name: name.into(),
            ..Default::default()
        }),
        update_mask: mask(&["display_name"]),
    };
    app.customers
        .clone()
        .update_customer(update("First writer"))
        .await
        .expect("first writer wins");
    let status = app
        .customers
        .clone()
        .update_customer(update("Second writer"))
        .await
        .expect_err("stale");
    assert_eq!(status.code(), Code::Aborted);
    let name: String = sqlx::query_scalar("SELECT display_name FROM customers")
        .fetch_one(&app.db)
        .await
        .expect("name");
    assert_eq!(name, "First writer");
}

#[tokio::test]
async fn bad_updates_are_invalid_arguments() {
    let app = spawn_app().await;
    let created = app.create_customer("Dorothy Vaughan", &[]).await;
    let request = |paths: &[&str], name: &str, version: i64| v1::UpdateCustomerRequest {
        customer: Some(v1::Customer {
            id: created.id.clone(),
            version,
            display_name: name.into(),
            ..Default::default()
        }),
        update_mask: mask(paths),
    };
    let mut client = app.customers.clone();
    let no_mask = client
        .update_customer(request(&[], "x", 1))
        .await
        .expect_err("empty mask");
    assert_eq!(violated_fields(&no_mask), ["update_mask"]);
    let unknown = client
        .update_customer(request(&["id"], "x", 1))
        .await
        .expect_err("read-only path");
    assert_eq!(violated_fields(&unknown), ["update_mask"]);
    let contacts = client
        .update_customer(request(&["contact_points"], "x", 1))
        .await
        .expect_err("own RPC");
    assert_eq!(violated_fields(&contacts), ["update_mask"]);
    let empty_name = client
        .update_customer(request(&["display_name"], " ", 1))
        .await
        .expect_err("empty");
    assert_eq!(violated_fields(&empty_name), ["customer.display_name"]);
    let no_version = client
        .update_customer(request(&["display_name"], "y", 0))
        .await
        .expect_err("version");
    assert_eq!(violated_fields(&no_version), ["customer.version"]);
    let unknown_id = client
        .update_customer(v1::UpdateCustomerRequest {
            customer: Some(v1::Customer {
                id: uuid::Uuid::new_v4().to_string(),
                version: 1,
                ..Default::default()
            }),
            update_mask: mask(&["vip"]),
        })
        .await
        .expect_err("unknown");
    assert_eq!(unknown_id.code(), Code::NotFound);
}

#[tokio::test]
async fn delete_is_soft_and_idempotent() {
    let app = spawn_app().await;
    let created = app.create_customer("Hedy Lamarr", &["+13105550142"]).await;
    let mut client = app.customers.clone();
    let delete = v1::DeleteCustomerRequest {
        id: created.id.clone(),
        version: created.version,
    };
    client
        .delete_customer(delete.clone())
        .await
        .expect("deleted");
    client
        .delete_customer(delete)
        .await
        .expect("deleting again succeeds");

    let get = client
        .get_customer(v1::GetCustomerRequest {
            id: created.id.clone(),
        })
        .await
        .expect_err("gone");
    assert_eq!(get.code(), Code::NotFound);
    let found = client
        .search_customers(v1::SearchCustomersRequest {
            query: Some(v1::search_customers_request::Query::Phone(
                "+13105550142".into(),
            )),
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner();
    assert!(found.customers.is_empty());
    let (pop, _) = app.pop("+13105550142").await;
    assert_eq!(pop.r#match(), v1::MatchKind::None);
    let kept: bool =
        sqlx::query_scalar("SELECT deleted_at IS NOT NULL FROM customers WHERE id = $1::uuid")
            .bind(&created.id)
            .fetch_one(&app.db)
            .await
            .expect("row kept");
    assert!(kept);

    let never = client
        .delete_customer(v1::DeleteCustomerRequest {
            id: uuid::Uuid::new_v4().to_string(),
            version: 0,
        })
        .await
        .expect_err("unknown");
    assert_eq!(never.code(), Code::NotFound);
}

#[tokio::test]
async fn search_finds_by_phone_in_any_format_email_name_prefix_and_reference() {
    let app = spawn_app().await;
    let mut client = app.customers.clone();
    let ada = client
        .create_customer(v1::CreateCustomerRequest {
            display_name: "Ada Lovelace".into(),
            contact_points: vec![phone("+1 415 555 0100"), email("ada@example.com")],
            external_references: vec![v1::ExternalReference {
                system: "billing".into(),
                external_id: "B-7".into(),
            }],
            ..Default::default()
        })
        .await
        .expect("ada")
        .into_inner()
        .customer
        .expect("c");
    app.create_customer("Adam Smith", &["+14155550177"]).await;
    app.create_customer("Bob Ada", &[]).await;

    use v1::search_customers_request::Query;
    let search = |query: Query| {
        let mut client = client.clone();
        async move {
            let response = client
                .search_customers(v1::SearchCustomersRequest {
                    query: Some(query),
                    ..Default::default()
                })
                .await
                .expect("search")
                .into_inner();
            response
                .customers
                .into_iter()
                .map(|c| c.display_name)
                .collect::<Vec<_>>()
        }
    };
    for format in [
        "(415) 555-0100",
        "415.555.0100",
        "+14155550100",
        "1 415 555 0100",
    ] {
        assert_eq!(
            search(Query::Phone(format.into())).await,
            ["Ada Lovelace"],
            "{format}"
        );
    }
    assert_eq!(
        search(Query::Email("ADA@example.com".into())).await,
        ["Ada Lovelace"]
    );
    assert_eq!(
        search(Query::NamePrefix("ada".into())).await,
        ["Ada Lovelace", "Adam Smith"]
    );
    assert_eq!(
        search(Query::NamePrefix("ADA L".into())).await,
        ["Ada Lovelace"]
    );
    assert_eq!(
        search(Query::NamePrefix("%".into())).await,
        Vec::<String>::new()
    );
    let by_reference = search(Query::ExternalReference(v1::ExternalReference {
        system: "billing".into(),
        external_id: "B-7".into(),
    }))
    .await;
    assert_eq!(by_reference, ["Ada Lovelace"]);
    assert_eq!(ada.display_name, "Ada Lovelace");

    let no_query = client
        .search_customers(v1::SearchCustomersRequest::default())
        .await
        .expect_err("no query");
    assert_eq!(violated_fields(&no_query), ["query"]);
    let bad_phone = client
        .search_customers(v1::SearchCustomersRequest {
            query: Some(Query::Phone("12".into())),
            page_size: 500,
            ..Default::default()
        })
        .await
        .expect_err("bad phone");
    let mut fields = violated_fields(&bad_phone);
    fields.sort();
    assert_eq!(fields, ["page_size", "phone"]);
}

#[tokio::test]
async fn search_pages_through_every_match_once() {
    let app = spawn_app().await;
    for i in 0..7 {
        app.create_customer(&format!("Zed {i}"), &[]).await;
    }
    use v1::search_customers_request::Query;
    let mut client = app.customers.clone();
    let (mut names, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let page = client
            .search_customers(v1::SearchCustomersRequest {
                query: Some(Query::NamePrefix("zed".into())),
                page_size: 3,
                page_token: token.clone(),
            })
            .await
            .expect("page")
            .into_inner();
        pages += 1;
        names.extend(page.customers.into_iter().map(|c| c.display_name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(
        names,
        (0..7).map(|i| format!("Zed {i}")).collect::<Vec<_>>()
    );

    let first = client
        .search_customers(v1::SearchCustomersRequest {
            query: Some(Query::NamePrefix("zed".into())),
            page_size: 3,
            page_token: String::new(),
        })
        .await
        .expect("page")
        .into_inner();
    let misused = client
        .search_customers(v1::SearchCustomersRequest {
            query: Some(Query::NamePrefix("ze".into())),
            page_size: 3,
            page_token: first.next_page_token,
        })
        .await
        .expect_err("token of another query");
    assert_eq!(violated_fields(&misused), ["page_token"]);
}

#[tokio::test]
async fn each_kind_keeps_exactly_one_primary_contact_point() {
    let app = spawn_app().await;
    let created = app
        .create_customer("Mary Jackson", &["+17575550101", "+17575550102"])
        .await;
    let mut client = app.customers.clone();
    let added = client
        .add_contact_point(v1::AddContactPointRequest {
            customer_id: created.id.clone(),
            contact_point: Some(v1::NewContactPoint {
                primary: true,
                ..phone("757-555-0103")
            }),
        })
        .await
        .expect("added")
        .into_inner()
        .customer
        .expect("c");
    let primaries: Vec<&str> = added
        .contact_points
        .iter()
        .filter(|c| c.primary)
        .map(|c| c.value.as_str())
        .collect();
    assert_eq!(primaries, ["+17575550103"]);
    assert_eq!(added.version, created.version + 1);

    let duplicate = client
        .add_contact_point(v1::AddContactPointRequest {
            customer_id: created.id.clone(),
            contact_point: Some(phone("+1 757 555 0101")),
        })
        .await
        .expect_err("duplicate");
    assert_eq!(duplicate.code(), Code::AlreadyExists);

    let primary_id = added
        .contact_points
        .iter()
        .find(|c| c.primary)
        .expect("primary")
        .id
        .clone();
    let removed = client
        .remove_contact_point(v1::RemoveContactPointRequest {
            customer_id: created.id.clone(),
            contact_point_id: primary_id.clone(),
        })
        .await
        .expect("removed")
        .into_inner()
        .customer
        .expect("c");
    let primaries: Vec<&str> = removed
        .contact_points
        .iter()
        .filter(|c| c.primary)
        .map(|c| c.value.as_str())
        .collect();
    assert_eq!(
        primaries,
        ["+17575550101"],
        "the oldest remaining becomes primary"
    );

    let again = client
        .remove_contact_point(v1::RemoveContactPointRequest {
            customer_id: created.id.clone(),
            contact_point_id: primary_id,
        })
        .await
        .expect_err("already removed");
    assert_eq!(again.code(), Code::NotFound);
    let bad = client
        .add_contact_point(v1::AddContactPointRequest {
            customer_id: "nope".into(),
            contact_point: None,
        })
        .await
        .expect_err("invalid");
    let mut fields = violated_fields(&bad);
    fields.sort();
    assert_eq!(fields, ["contact_point", "customer_id"]);
}

#[tokio::test]
async fn an_external_reference_belongs_to_one_customer() {
    let app = spawn_app().await;
    let first = app.create_customer("First Customer", &[]).await;
    let second = app.create_customer("Second Customer", &[]).await;
    let reference = v1::ExternalReference {
        system: "erp".into(),
        external_id: "C-42".into(),
    };
    let mut client = app.customers.clone();
    let link = |customer_id: &str| v1::LinkExternalReferenceRequest {
        customer_id: customer_id.into(),
        external_reference: Some(reference.clone()),
    };
    let linked = client
        .link_external_reference(link(&first.id))
        .await
        .expect("linked")
        .into_inner();
    let again = client
        .link_external_reference(link(&first.id))
        .await
        .expect("idempotent")
        .into_inner();
    assert_eq!(
        linked.customer.expect("c").version,
        again.customer.expect("c").version
    );
    let taken = client
        .link_external_reference(link(&second.id))
        .await
        .expect_err("taken");
    assert_eq!(taken.code(), Code::AlreadyExists);

    let unknown = client
        .get_customer(v1::GetCustomerRequest {
            id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    let malformed = client
        .get_customer(v1::GetCustomerRequest { id: "42".into() })
        .await
        .expect_err("malformed");
    assert_eq!(violated_fields(&malformed), ["id"]);
}

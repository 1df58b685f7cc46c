//! CaseService: the status flow, SLA due times, history, assignment, and the card.

use prost_types::FieldMask;
use switchboard::cases::SlaPolicy;
use switchboard::proto::v1;
use tonic::Code;

use crate::helpers::{TestApp, TestOptions, spawn_app, spawn_app_with, violated_fields};

async fn open(
    app: &TestApp,
    customer_id: &str,
    request_id: &str,
    priority: v1::CasePriority,
) -> v1::Case {
    app.cases()
        .open_case(v1::OpenCaseRequest {
            request_id: request_id.into(),
            customer_id: customer_id.into(),
            subject: format!("Router down ({request_id})"),
            description: "Paid the visit with 4111 1111 1111 1111".into(),
            priority: priority.into(),
            actor: "a-17".into(),
        })
        .await
        .expect("opened")
        .into_inner()
        .case
        .expect("case")
}

async fn set_status(
    app: &TestApp,
    case: &v1::Case,
    status: v1::CaseStatus,
) -> Result<v1::Case, tonic::Status> {
    app.cases()
        .update_case(v1::UpdateCaseRequest {
            case: Some(v1::Case {
                id: case.id.clone(),
                version: case.version,
                status: status.into(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["status".into()],
            }),
            actor: "sup-1".into(),
        })
        .await
        .map(|r| r.into_inner().case.expect("case"))
}

#[tokio::test]
async fn a_case_moves_through_its_legal_statuses_and_records_who_and_when() {
    let app = spawn_app().await;
    let ada = app.create_customer("Ada Lovelace", &[]).await;
    let case = open(&app, &ada.id, "r1", v1::CasePriority::Normal).await;
    assert_eq!(
        open(&app, &ada.id, "r1", v1::CasePriority::Normal).await.id,
        case.id,
        "idempotent"
    );
    assert_eq!(case.status(), v1::CaseStatus::New);
    assert_eq!(case.description, "Paid the visit with **** **** **** 1111");
    let due = case.sla_due_at.expect("due").seconds - case.create_time.expect("created").seconds;
    assert_eq!(due, 24 * 3600, "normal priority: 24 h");

    let illegal = set_status(&app, &case, v1::CaseStatus::Resolved)
        .await
        .expect_err("NEW cannot be resolved");
    assert_eq!(illegal.code(), Code::FailedPrecondition);
    let mut case = case;
    for status in [
        v1::CaseStatus::Open,
        v1::CaseStatus::Pending,
        v1::CaseStatus::Resolved,
        v1::CaseStatus::Open,
        v1::CaseStatus::Resolved,
        v1::CaseStatus::Closed,
    ] {
        case = set_status(&app, &case, status)
            .await
            .unwrap_or_else(|e| panic!("{status:?}: {e:?}"));
        assert_eq!(case.status(), status);
    }
    assert!(case.closed_at.is_some() && case.resolved_at.is_some());
    let final_state = set_status(&app, &case, v1::CaseStatus::Open)
        .await
        .expect_err("closed is final");
    assert_eq!(final_state.code(), Code::FailedPrecondition);

    let history = app
        .cases()
        .get_case_history(v1::GetCaseHistoryRequest {
            case_id: case.id.clone(),
        })
        .await
        .expect("history")
        .into_inner()
        .changes;
    let steps: Vec<(&str, &str, &str, &str)> = history
        .iter()
        .map(|c| {
            (
                c.action.as_str(),
                c.from.as_str(),
                c.to.as_str(),
                c.actor.as_str(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("opened", "", "new", "a-17"),
            ("status", "new", "open", "sup-1"),
            ("status", "open", "pending", "sup-1"),
            ("status", "pending", "resolved", "sup-1"),
            ("status", "resolved", "open", "sup-1"),
            ("status", "open", "resolved", "sup-1"),
            ("status", "resolved", "closed", "sup-1"),
        ]
    );
    let times: Vec<(i64, i32)> = history
        .iter()
        .map(|c| c.at.map(|t| (t.seconds, t.nanos)).expect("when"))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "in order: {times:?}"
    );
}

#[tokio::test]
async fn a_stale_version_changes_nothing_and_priority_moves_the_due_time() {
    let app = spawn_app().await;
    let ada = app.create_customer("Ada Lovelace", &[]).await;
    let case = open(&app, &ada.id, "r1", v1::CasePriority::Low).await;
    let raise = |version: i64| v1::UpdateCaseRequest {
        case: Some(v1::Case {
            id: case.id.clone(),
            version,
            priority: v1::CasePriority::Urgent.into(),
            subject: "Outage".into(),
            ..Default::default()
        }),
        update_mask: Some(FieldMask {
            paths: vec!["priority".into(), "subject".into()],
        }),
        actor: "sup-1".into(),
    };
    let raised = app
        .cases()
        .update_case(raise(case.version))
        .await
        .expect("raised")
        .into_inner()
        .case
        .expect("case");
    assert_eq!(raised.priority(), v1::CasePriority::Urgent);
    assert_eq!(
        raised.sla_due_at.expect("due").seconds - raised.create_time.expect("created").seconds,
        4 * 3600
    );
    assert_eq!(raised.version, case.version + 1);
    let stale = app
        .cases()
        .update_case(raise(case.version))
        .await
        .expect_err("stale");
    assert_eq!(stale.code(), Code::Aborted);
    let now = app
        .cases()
        .get_case(v1::GetCaseRequest {
            id: case.id.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .case
        .expect("case");
    assert_eq!(
        now.version, raised.version,
        "the stale write changed nothing"
    );
}

#[tokio::test]
async fn assignment_comments_and_listing_by_assignee_status_and_overdue() {
    let app = spawn_app_with(TestOptions {
        case_sla: SlaPolicy::parse("urgent=0m").expect("policy"),
        ..Default::default()
    })
    .await;
    let ada = app.create_customer("Ada Lovelace", &[]).await;
    let bob = app.create_customer("Bob Byte", &[]).await;
    let urgent = open(&app, &ada.id, "u", v1::CasePriority::Urgent).await;
    let normal = open(&app, &ada.id, "n", v1::CasePriority::Normal).await;
    let other = open(&app, &bob.id, "o", v1::CasePriority::High).await;

    let assign =
        |case: &v1::Case, assignee: v1::assign_case_request::Assignee| v1::AssignCaseRequest {
            case_id: case.id.clone(),
            assignee: Some(assignee),
            actor: "sup-1".into(),
        };
    use v1::assign_case_request::Assignee::{AgentId, Team};
    let assigned = app
        .cases()
        .assign_case(assign(&urgent, AgentId("a-17".into())))
        .await
        .expect("assigned")
        .into_inner()
        .case
        .expect("case");
    let again = app
        .cases()
        .assign_case(assign(&urgent, AgentId("a-17".into())))
        .await
        .expect("again")
        .into_inner()
        .case
        .expect("case");
    assert_eq!(
        again.version, assigned.version,
        "assigning the same agent changes nothing"
    );
    app.cases()
        .assign_case(assign(&other, Team("billing".into())))
        .await
        .expect("team");
    let comment = app
        .cases()
        .add_case_comment(v1::AddCaseCommentRequest {
            case_id: normal.id.clone(),
            text: "customer said CVV 999".into(),
            actor: "a-17".into(),
        })
        .await
        .expect("comment")
        .into_inner()
        .comment
        .expect("comment");
    assert_eq!(comment.text, "customer said CVV ***");

    let list = |request: v1::ListCasesRequest| {
        let mut cases = app.cases();
        async move {
            cases
                .list_cases(request)
                .await
                .expect("list")
                .into_inner()
                .cases
                .into_iter()
                .map(|c| c.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(v1::ListCasesRequest {
            customer_id: ada.id.clone(),
            ..Default::default()
        })
        .await,
        [urgent.id.clone(), normal.id.clone()]
    );
    assert_eq!(
        list(v1::ListCasesRequest {
            assignee_agent_id: "a-17".into(),
            ..Default::default()
        })
        .await,
        std::slice::from_ref(&urgent.id)
    );
    assert_eq!(
        list(v1::ListCasesRequest {
            team: "billing".into(),
            ..Default::default()
        })
        .await,
        std::slice::from_ref(&other.id)
    );
    assert_eq!(
        list(v1::ListCasesRequest {
            overdue_only: true,
            ..Default::default()
        })
        .await,
        std::slice::from_ref(&urgent.id),
        "urgent=0m is due at once"
    );
    assert_eq!(
        list(v1::ListCasesRequest {
            status: v1::CaseStatus::New.into(),
            ..Default::default()
        })
        .await
        .len(),
        3
    );

    // Pages of one, most urgent first, each case once.
    let (mut seen, mut token) = (Vec::new(), String::new());
    loop {
        let page = app
            .cases()
            .list_cases(v1::ListCasesRequest {
                page_size: 1,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("page")
            .into_inner();
        seen.extend(page.cases.into_iter().map(|c| c.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, [urgent.id, other.id, normal.id]);
}

#[tokio::test]
async fn open_cases_show_on_the_pop_and_leave_it_when_resolved() {
    let app = spawn_app().await;
    let ada = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    app.pop("+14155550100").await;
    let case = open(&app, &ada.id, "r1", v1::CasePriority::High).await;
    let (pop, source) = app.pop("+14155550100").await;
    assert_eq!(
        source,
        v1::PopSource::Database,
        "opening the case invalidated the card"
    );
    let shown = pop.card.expect("card").open_cases;
    assert_eq!(shown.len(), 1);
    assert_eq!(
        (shown[0].id.as_str(), shown[0].priority()),
        (case.id.as_str(), v1::CasePriority::High)
    );

    let case = set_status(&app, &case, v1::CaseStatus::Open)
        .await
        .expect("open");
    set_status(&app, &case, v1::CaseStatus::Resolved)
        .await
        .expect("resolved");
    let (pop, _) = app.pop("+14155550100").await;
    assert!(pop.card.expect("card").open_cases.is_empty());
}

#[tokio::test]
async fn bad_case_input_is_reported_field_by_field() {
    let app = spawn_app().await;
    let status = app
        .cases()
        .open_case(v1::OpenCaseRequest {
            priority: 9,
            actor: "not an agent!".into(),
            ..Default::default()
        })
        .await
        .expect_err("invalid");
    let mut fields = violated_fields(&status);
    fields.sort();
    assert_eq!(
        fields,
        ["actor", "customer_id", "priority", "request_id", "subject"]
    );
    let unknown = app
        .cases()
        .open_case(v1::OpenCaseRequest {
            request_id: "r".into(),
            customer_id: uuid::Uuid::new_v4().to_string(),
            subject: "s".into(),
            actor: "a-1".into(),
            ..Default::default()
        })
        .await
        .expect_err("no such customer");
    assert_eq!(unknown.code(), Code::NotFound);
    let read_only = app
        .cases()
        .update_case(v1::UpdateCaseRequest {
            case: Some(v1::Case {
                id: uuid::Uuid::new_v4().to_string(),
                version: 1,
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["assignee_agent_id".into()],
            }),
            actor: "a-1".into(),
        })
        .await
        .expect_err("read-only path");
    assert_eq!(violated_fields(&read_only), ["update_mask"]);
}

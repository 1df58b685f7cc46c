//! FeedbackService: every item tracked to a resolution; negative feedback cannot be forgotten.

use chrono::Utc;
use switchboard::auth::Role;
use switchboard::proto::v1;
use switchboard::proto::v1::feedback_service_client::FeedbackServiceClient;
use tonic::Code;

use crate::helpers::{Authed, TestApp, authed, spawn_app, token, violated_fields};

fn desk(app: &TestApp) -> FeedbackServiceClient<Authed> {
    FeedbackServiceClient::new(app.channel.clone())
}

fn ts(at: chrono::DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(switchboard::proto_time::to_timestamp(at))
}

fn csat(n: i32) -> Option<v1::Score> {
    Some(v1::Score {
        kind: Some(v1::score::Kind::Csat(n)),
    })
}

async fn submit(app: &TestApp, request: v1::SubmitFeedbackRequest) -> v1::SubmitFeedbackResponse {
    desk(app)
        .submit_feedback(request)
        .await
        .expect("feedback submitted")
        .into_inner()
}

fn from_customer(request_id: &str, customer_id: &str) -> v1::SubmitFeedbackRequest {
    v1::SubmitFeedbackRequest {
        request_id: request_id.into(),
        source: v1::FeedbackSource::Customer.into(),
        category: "Billing".into(),
        text: "Charged twice on card 4111 1111 1111 1111".into(),
        customer_id: customer_id.into(),
        ..Default::default()
    }
}

async fn set_status(
    app: &TestApp,
    id: &str,
    status: v1::FeedbackStatus,
    resolution: &str,
) -> Result<v1::Feedback, tonic::Status> {
    desk(app)
        .update_feedback_status(v1::UpdateFeedbackStatusRequest {
            id: id.into(),
            status: status.into(),
            resolution: resolution.into(),
            actor: "sup-1".into(),
        })
        .await
        .map(|r| r.into_inner().feedback.expect("feedback"))
}

#[tokio::test]
async fn a_low_score_opens_a_case_once_and_shows_on_the_pop_until_resolved() {
    let app = spawn_app().await;
    let ada = app.create_customer("Ada", &["(415) 555-0100"]).await;
    app.pop("(415) 555-0100").await; // cached before the feedback

    let mut low = from_customer("survey-1", &ada.id);
    low.score = csat(1);
    let first = submit(&app, low.clone()).await;
    let item = first.feedback.expect("feedback");
    assert!(first.case_opened);
    assert_eq!(item.sentiment(), v1::Sentiment::Negative);
    assert_eq!(item.category, "billing");
    assert_eq!(item.text, "Charged twice on card **** **** **** 1111");
    assert_eq!(item.status(), v1::FeedbackStatus::New);
    let again = submit(&app, low).await;
    assert!(!again.case_opened, "a retry opens no second case");
    assert_eq!(again.feedback.expect("feedback").id, item.id);

    let case = app
        .cases()
        .get_case(v1::GetCaseRequest {
            id: item.case_id.clone(),
        })
        .await
        .expect("the case exists")
        .into_inner()
        .case
        .expect("case");
    assert_eq!(case.customer_id, ada.id);
    assert_eq!(case.priority(), v1::CasePriority::High);
    let cases: i64 = sqlx::query_scalar("SELECT count(*) FROM cases")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(cases, 1);

    let (pop, _) = app.pop("(415) 555-0100").await;
    let card = pop.card.expect("card");
    assert_eq!(
        card.open_feedback.len(),
        1,
        "the cached pop was invalidated"
    );
    assert_eq!(card.open_feedback[0].id, item.id);
    assert_eq!(card.open_cases.len(), 1);

    // A positive score opens nothing and does not show.
    let mut happy = from_customer("survey-2", &ada.id);
    happy.score = csat(5);
    let happy = submit(&app, happy).await;
    assert!(!happy.case_opened);
    assert!(happy.feedback.expect("feedback").case_id.is_empty());

    let due = Utc::now() + chrono::Duration::days(2);
    desk(&app)
        .triage_feedback(v1::TriageFeedbackRequest {
            id: item.id.clone(),
            owner: "billing-team".into(),
            due_at: ts(due),
            actor: "sup-1".into(),
        })
        .await
        .expect("triaged");
    set_status(&app, &item.id, v1::FeedbackStatus::InProgress, "")
        .await
        .expect("in progress");
    let resolved = set_status(
        &app,
        &item.id,
        v1::FeedbackStatus::Resolved,
        "Refunded the duplicate charge",
    )
    .await
    .expect("resolved");
    assert!(resolved.resolved_at.is_some());
    let (pop, _) = app.pop("(415) 555-0100").await;
    assert!(pop.card.expect("card").open_feedback.is_empty());

    let history = desk(&app)
        .get_feedback(v1::GetFeedbackRequest {
            id: item.id.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .history;
    let actions: Vec<&str> = history.iter().map(|c| c.action.as_str()).collect();
    assert_eq!(
        actions,
        vec!["submitted", "linked_case", "triaged", "status", "status"]
    );
}

#[tokio::test]
async fn nothing_closes_without_a_resolution() {
    let app = spawn_app().await;
    let item = submit(
        &app,
        v1::SubmitFeedbackRequest {
            request_id: "supplier-1".into(),
            source: v1::FeedbackSource::Supplier.into(),
            sentiment: v1::Sentiment::Neutral.into(),
            category: "delivery".into(),
            text: "Labels changed next month".into(),
            ..Default::default()
        },
    )
    .await
    .feedback
    .expect("feedback");
    let early = set_status(&app, &item.id, v1::FeedbackStatus::Closed, "")
        .await
        .expect_err("new cannot close");
    assert_eq!(early.code(), Code::FailedPrecondition);
    desk(&app)
        .triage_feedback(v1::TriageFeedbackRequest {
            id: item.id.clone(),
            owner: "ops".into(),
            due_at: ts(Utc::now() - chrono::Duration::hours(1)),
            actor: "sup-1".into(),
        })
        .await
        .expect("triaged");
    let overdue = desk(&app)
        .list_feedback(v1::ListFeedbackRequest {
            overdue_only: true,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .items;
    assert_eq!(overdue.len(), 1);
    assert!(overdue[0].overdue);
    set_status(&app, &item.id, v1::FeedbackStatus::InProgress, "")
        .await
        .expect("in progress");
    let no_text = set_status(&app, &item.id, v1::FeedbackStatus::Resolved, "  ")
        .await
        .expect_err("resolution required");
    assert_eq!(no_text.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&no_text), vec!["resolution".to_owned()]);
    set_status(
        &app,
        &item.id,
        v1::FeedbackStatus::Resolved,
        "Updated the label spec",
    )
    .await
    .expect("resolved");
    let closed = set_status(&app, &item.id, v1::FeedbackStatus::Closed, "")
        .await
        .expect("closed");
    assert_eq!(closed.resolution, "Updated the label spec");
    let open = desk(&app)
        .list_feedback(v1::ListFeedbackRequest {
            open_only: true,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .items;
    assert!(open.is_empty());
}

#[tokio::test]
async fn bad_feedback_is_refused_whole_and_agents_act_as_themselves() {
    let app = spawn_app().await;
    let status = desk(&app)
        .submit_feedback(v1::SubmitFeedbackRequest {
            request_id: "".into(),
            score: Some(v1::Score {
                kind: Some(v1::score::Kind::Nps(11)),
            }),
            customer_id: "nope".into(),
            gateway_id: "pbx-1".into(),
            ..Default::default()
        })
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields = violated_fields(&status);
    for field in [
        "request_id",
        "source",
        "score",
        "category",
        "customer_id",
        "call_id",
    ] {
        assert!(fields.contains(&field.to_owned()), "{field} in {fields:?}");
    }
    let mut unknown = from_customer("x", &uuid::Uuid::new_v4().to_string());
    unknown.sentiment = v1::Sentiment::Negative.into();
    let missing = desk(&app)
        .submit_feedback(unknown)
        .await
        .expect_err("unknown customer");
    assert_eq!(missing.code(), Code::NotFound);
    let mut bad_case = from_customer("y", "");
    bad_case.sentiment = v1::Sentiment::Negative.into();
    bad_case.case_id = uuid::Uuid::new_v4().to_string();
    let missing_case = desk(&app)
        .submit_feedback(bad_case)
        .await
        .expect_err("unknown case");
    assert_eq!(missing_case.code(), Code::NotFound);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM feedback")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(rows, 0, "nothing half-written");

    let mut ok = from_customer("z", "");
    ok.sentiment = v1::Sentiment::Positive.into();
    let item = submit(&app, ok).await.feedback.expect("feedback");
    let mut agent = FeedbackServiceClient::new(authed(
        app.raw_channel.clone(),
        &token(Role::Agent, "a-1", None),
    ));
    let denied = agent
        .triage_feedback(v1::TriageFeedbackRequest {
            id: item.id,
            owner: "a-1".into(),
            due_at: ts(Utc::now()),
            actor: "a-2".into(),
        })
        .await
        .expect_err("not as another agent");
    assert_eq!(denied.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn the_summary_counts_and_times_resolutions() {
    let app = spawn_app().await;
    let since = Utc::now() - chrono::Duration::minutes(1);
    let sources = [
        (
            v1::FeedbackSource::Customer,
            v1::Sentiment::Negative,
            "billing",
        ),
        (
            v1::FeedbackSource::Customer,
            v1::Sentiment::Positive,
            "billing",
        ),
        (v1::FeedbackSource::Agent, v1::Sentiment::Neutral, "tools"),
        (
            v1::FeedbackSource::Partner,
            v1::Sentiment::Negative,
            "billing",
        ),
    ];
    let mut ids = Vec::new();
    for (i, (source, sentiment, category)) in sources.into_iter().enumerate() {
        let item = submit(
            &app,
            v1::SubmitFeedbackRequest {
                request_id: format!("s-{i}"),
                source: source.into(),
                sentiment: sentiment.into(),
                category: category.into(),
                ..Default::default()
            },
        )
        .await
        .feedback
        .expect("feedback");
        ids.push(item.id);
    }
    // One resolved, two hours after it was submitted (the clock moved back on the row).
    let id = &ids[0];
    desk(&app)
        .triage_feedback(v1::TriageFeedbackRequest {
            id: id.clone(),
            owner: "ops".into(),
            due_at: ts(Utc::now()),
            actor: "sup-1".into(),
        })
        .await
        .expect("triaged");
    set_status(&app, id, v1::FeedbackStatus::InProgress, "")
        .await
        .expect("started");
    set_status(
        &app,
        id,
        v1::FeedbackStatus::Resolved,
        "Explained the invoice",
    )
    .await
    .expect("resolved");
    sqlx::query(
        "UPDATE feedback SET created_at = resolved_at - interval '2 hours' WHERE id = $1::uuid",
    )
    .bind(id)
    .execute(&app.db)
    .await
    .expect("backdated");
    let summary = desk(&app)
        .get_feedback_summary(v1::GetFeedbackSummaryRequest {
            since: ts(since - chrono::Duration::hours(3)),
            until: ts(Utc::now() + chrono::Duration::minutes(1)),
        })
        .await
        .expect("summary")
        .into_inner();
    assert_eq!(summary.total, 4);
    let count =
        |rows: &[v1::Count], key: &str| rows.iter().find(|c| c.key == key).map_or(0, |c| c.count);
    assert_eq!(count(&summary.by_source, "customer"), 2);
    assert_eq!(count(&summary.by_source, "partner"), 1);
    assert_eq!(count(&summary.by_sentiment, "negative"), 2);
    assert_eq!(count(&summary.by_category, "billing"), 3);
    assert!((summary.share_resolved - 0.25).abs() < 1e-9);
    assert!((summary.median_hours_to_resolution - 2.0).abs() < 1e-6);
}

#[tokio::test]
async fn feedback_lists_page_newest_first_and_tokens_belong_to_their_query() {
    let app = spawn_app().await;
    for i in 0..3 {
        submit(
            &app,
            v1::SubmitFeedbackRequest {
                request_id: format!("p-{i}"),
                source: v1::FeedbackSource::Internal.into(),
                sentiment: v1::Sentiment::Neutral.into(),
                category: format!("topic-{i}"),
                ..Default::default()
            },
        )
        .await;
    }
    let list = |page_token: String, category: &str| v1::ListFeedbackRequest {
        page_size: 2,
        page_token,
        category: category.into(),
        ..Default::default()
    };
    let first = desk(&app)
        .list_feedback(list(String::new(), ""))
        .await
        .expect("first page")
        .into_inner();
    let categories: Vec<&str> = first.items.iter().map(|f| f.category.as_str()).collect();
    assert_eq!(categories, vec!["topic-2", "topic-1"]);
    assert!(!first.next_page_token.is_empty());
    let second = desk(&app)
        .list_feedback(list(first.next_page_token.clone(), ""))
        .await
        .expect("second page")
        .into_inner();
    assert_eq!(second.items.len(), 1);
    assert_eq!(second.items[0].category, "topic-0");
    assert!(second.next_page_token.is_empty());
    let other = desk(&app)
        .list_feedback(list(first.next_page_token, "topic-0"))
        .await
        .expect_err("a token from another query");
    assert_eq!(other.code(), Code::InvalidArgument);
}

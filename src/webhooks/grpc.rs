//! `switchboard.v1.WebhookService`: proto <-> domain and `WebhookError` -> `Status`.

use std::time::Duration;

use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use super::signing::Secret;
use super::{
    Change, DEFAULT_OVERLAP, Delivery, MAX_DESCRIPTION, NewWebhook, ReplayFrom, Sink, State,
    WebhookError, Webhooks, check_topics,
};
use crate::grpc_status;
use crate::page_token::{LONG_PAGES, PageRequest, SHORT_PAGES};
use crate::proto::v1;
use crate::proto::v1::webhook_service_server::WebhookService;
use crate::proto_time::to_timestamp;
use crate::validation::Violations;

pub struct WebhookGrpc {
    webhooks: Webhooks,
}

impl WebhookGrpc {
    pub fn new(webhooks: Webhooks) -> Self {
        Self { webhooks }
    }
}

impl From<WebhookError> for Status {
    fn from(error: WebhookError) -> Self {
        match &error {
            WebhookError::Invalid(violations) => grpc_status::invalid_argument(violations),
            WebhookError::NotFound => Status::not_found(error.to_string()),
            WebhookError::Expired { oldest } => {
                let details = ErrorDetails::with_error_info(
                    "CURSOR_EXPIRED",
                    "switchboard.v1.WebhookService",
                    [("oldest_cursor".to_owned(), oldest.to_string())],
                );
                Status::with_error_details(Code::OutOfRange, error.to_string(), details)
            }
            WebhookError::Unavailable(source) => grpc_status::unavailable(source),
            WebhookError::Database(source) => grpc_status::internal(source),
        }
    }
}

fn state_to_proto(state: State) -> v1::WebhookState {
    match state {
        State::Active => v1::WebhookState::Active,
        State::Paused => v1::WebhookState::Paused,
        State::Failing => v1::WebhookState::Failing,
    }
}

fn to_proto(sink: Sink) -> v1::Webhook {
    v1::Webhook {
        id: sink.id.to_string(),
        url: sink.url,
        topics: sink.topics,
        description: sink.description,
        state: state_to_proto(sink.state).into(),
        cursor: sink.cursor.to_string(),
        attempts: sink.attempts,
        next_attempt_at: (sink.attempts > 0 && sink.state == State::Active)
            .then(|| to_timestamp(sink.next_attempt_at)),
        last_error: sink.last_error,
        failing_since: sink.failing_since.map(to_timestamp),
        previous_secret_valid_until: sink.previous_secret_until.map(to_timestamp),
        created_at: Some(to_timestamp(sink.created_at)),
        updated_at: Some(to_timestamp(sink.updated_at)),
    }
}

fn delivery_to_proto(d: Delivery) -> v1::WebhookDelivery {
    v1::WebhookDelivery {
        cursor: d.position.to_string(),
        through_cursor: d.through_position.to_string(),
        events: d.events,
        attempt: d.attempt,
        status_code: d.status_code,
        error: d.error,
        duration_ms: d.duration_ms,
        attempted_at: Some(to_timestamp(d.attempted_at)),
    }
}

/// An optional secret field: empty, or a Standard Webhooks secret.
fn secret(v: &mut Violations, field: &str, text: &str) -> Option<Secret> {
    if text.is_empty() {
        return None;
    }
    let parsed = Secret::parse(text);
    if parsed.is_none() {
        v.add(
            field,
            "must be \"whsec_\" and the base64 of 24 to 64 random bytes",
        );
    }
    parsed
}

/// An optional feed cursor field (the feed's own parser).
fn cursor(v: &mut Violations, field: &str, text: &str) -> Option<i64> {
    if text.is_empty() {
        return None;
    }
    v.check(field, crate::feed::parse_cursor(text))
}

fn id(v: &mut Violations, text: &str) -> Option<uuid::Uuid> {
    v.uuid("id", text, true)
}

fn checked<T>(v: Violations, value: Option<T>) -> Result<T, Status> {
    match value {
        Some(value) if v.is_empty() => Ok(value),
        _ => Err(WebhookError::Invalid(v).into()),
    }
}

#[tonic::async_trait]
impl WebhookService for WebhookGrpc {
    async fn create_webhook(
        &self,
        request: Request<v1::CreateWebhookRequest>,
    ) -> Result<Response<v1::CreateWebhookResponse>, Status> {
        let r = request.into_inner();
        let mut v = Violations::new();
        let new = NewWebhook {
            url: r.url,
            topics: check_topics(&mut v, "topics", &r.topics),
            description: v.masked_text("description", &r.description, MAX_DESCRIPTION, false),
            secret: secret(&mut v, "secret", &r.secret),
            after_cursor: cursor(&mut v, "after_cursor", &r.after_cursor),
        };
        let new = checked(v, Some(new))?;
        let (sink, secret) = self.webhooks.create(new).await?;
        Ok(Response::new(v1::CreateWebhookResponse {
            webhook: Some(to_proto(sink)),
            secret: secret.expose().to_owned(),
        }))
    }

    async fn get_webhook(
        &self,
        request: Request<v1::GetWebhookRequest>,
    ) -> Result<Response<v1::GetWebhookResponse>, Status> {
        let mut v = Violations::new();
        let id = id(&mut v, &request.get_ref().id);
        let sink = self.webhooks.get(checked(v, id)?).await?;
        Ok(Response::new(v1::GetWebhookResponse {
            webhook: Some(to_proto(sink)),
        }))
    }

    async fn list_webhooks(
        &self,
        request: Request<v1::ListWebhooksRequest>,
    ) -> Result<Response<v1::ListWebhooksResponse>, Status> {
        let r = request.into_inner();
        let mut v = Violations::new();
        let page = PageRequest::parse(&mut v, r.page_size, &r.page_token, SHORT_PAGES);
        let page = checked(v, Some(page))?;
        let listed = self.webhooks.list(&page).await?;
        Ok(Response::new(v1::ListWebhooksResponse {
            webhooks: listed.items.into_iter().map(to_proto).collect(),
            next_page_token: listed.next_page_token.unwrap_or_default(),
        }))
    }

    async fn update_webhook(
        &self,
        request: Request<v1::UpdateWebhookRequest>,
    ) -> Result<Response<v1::UpdateWebhookResponse>, Status> {
        let r = request.into_inner();
        let mut v = Violations::new();
        let id = id(&mut v, &r.id);
        let all = r.update_mask.is_empty();
        let wants = |path: &str| all || r.update_mask.iter().any(|p| p == path);
        for (i, path) in r.update_mask.iter().enumerate() {
            if !["url", "topics", "description"].contains(&path.as_str()) {
                v.add(
                    format!("update_mask[{i}]"),
                    "must be \"url\", \"topics\" or \"description\"",
                );
            }
        }
        let change = Change {
            url: wants("url").then(|| r.url.clone()),
            topics: wants("topics").then(|| check_topics(&mut v, "topics", &r.topics)),
            description: wants("description")
                .then(|| v.masked_text("description", &r.description, MAX_DESCRIPTION, false)),
        };
        let id = checked(v, id)?;
        let sink = self.webhooks.update(id, change).await?;
        Ok(Response::new(v1::UpdateWebhookResponse {
            webhook: Some(to_proto(sink)),
        }))
    }

    async fn pause_webhook(
        &self,
        request: Request<v1::PauseWebhookRequest>,
    ) -> Result<Response<v1::PauseWebhookResponse>, Status> {
        let mut v = Violations::new();
        let id = id(&mut v, &request.get_ref().id);
        let sink = self.webhooks.pause(checked(v, id)?).await?;
        Ok(Response::new(v1::PauseWebhookResponse {
            webhook: Some(to_proto(sink)),
        }))
    }

    async fn delete_webhook(
        &self,
        request: Request<v1::DeleteWebhookRequest>,
    ) -> Result<Response<v1::DeleteWebhookResponse>, Status> {
        let mut v = Violations::new();
        let id = id(&mut v, &request.get_ref().id);
        self.webhooks.delete(checked(v, id)?).await?;
        Ok(Response::new(v1::DeleteWebhookResponse {}))
    }

    async fn rotate_webhook_secret(
        &self,
        request: Request<v1::RotateWebhookSecretRequest>,
    ) -> Result<Response<v1::RotateWebhookSecretResponse>, Status> {
        let r = request.into_inner();
        let mut v = Violations::new();
        let id = id(&mut v, &r.id);
        let overlap = match r.overlap_seconds {
            None => DEFAULT_OVERLAP,
            Some(seconds) => match u64::try_from(seconds) {
                Ok(seconds) if seconds <= 30 * 24 * 3600 => Duration::from_secs(seconds),
                _ => {
                    v.add("overlap_seconds", "must be between 0 and 2592000 (30 days)");
                    DEFAULT_OVERLAP
                }
            },
        };
        let new_secret = secret(&mut v, "secret", &r.secret);
        let id = checked(v, id)?;
        let (sink, secret) = self.webhooks.rotate(id, new_secret, overlap).await?;
        Ok(Response::new(v1::RotateWebhookSecretResponse {
            webhook: Some(to_proto(sink)),
            secret: secret.expose().to_owned(),
        }))
    }

    async fn list_deliveries(
        &self,
        request: Request<v1::ListDeliveriesRequest>,
    ) -> Result<Response<v1::ListDeliveriesResponse>, Status> {
        let r = request.into_inner();
        let mut v = Violations::new();
        let id = id(&mut v, &r.id);
        let page = PageRequest::parse(&mut v, r.page_size, &r.page_token, LONG_PAGES);
        let id = checked(v, id)?;
        let listed = self.webhooks.deliveries(id, &page).await?;
        Ok(Response::new(v1::ListDeliveriesResponse {
            deliveries: listed.items.into_iter().map(delivery_to_proto).collect(),
            next_page_token: listed.next_page_token.unwrap_or_default(),
        }))
    }

    async fn replay_webhook(
        &self,
        request: Request<v1::ReplayWebhookRequest>,
    ) -> Result<Response<v1::ReplayWebhookResponse>, Status> {
        let r = request.into_inner();
        let mut v = Violations::new();
        let id = id(&mut v, &r.id);
        let after = cursor(&mut v, "after_cursor", &r.after_cursor);
        let since = v.time("since", r.since.as_ref(), false);
        let from = match (after, since) {
            (Some(_), Some(_)) => {
                v.add("since", "give after_cursor or since, not both");
                ReplayFrom::Stopped
            }
            (Some(cursor), None) => ReplayFrom::After(cursor),
            (None, Some(since)) => ReplayFrom::Since(since),
            (None, None) => ReplayFrom::Stopped,
        };
        let id = checked(v, id)?;
        let sink = self.webhooks.replay(id, from).await?;
        Ok(Response::new(v1::ReplayWebhookResponse {
            webhook: Some(to_proto(sink)),
        }))
    }
}

//! `switchboard.v1.EventFeedService`.

use std::pin::Pin;

use futures::{Stream, StreamExt as _};

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use super::{FeedError, FeedItem, Start};
use crate::drain::Draining;
use crate::grpc_status;
use crate::proto::v1;
use crate::proto::v1::event_feed_service_server::EventFeedService;
use crate::validation::Violations;

pub struct EventFeedGrpc {
    feed: super::EventFeed,
    draining: Draining,
}

impl EventFeedGrpc {
    pub fn new(feed: super::EventFeed, draining: Draining) -> Self {
        Self { feed, draining }
    }
}

impl From<FeedError> for Status {
    fn from(error: FeedError) -> Self {
        match &error {
            FeedError::BadCursor | FeedError::CursorAhead => grpc_status::invalid_argument(
                &Violations::single("after_cursor", error.to_string()),
            ),
            FeedError::UnknownTopic(_) => {
                grpc_status::invalid_argument(&Violations::single("topics", error.to_string()))
            }
            FeedError::Expired { oldest } => {
                let details = ErrorDetails::with_error_info(
                    "CURSOR_EXPIRED",
                    "switchboard.v1.EventFeedService",
                    [("oldest_cursor".to_owned(), oldest.to_string())],
                );
                let mut status =
                    Status::with_error_details(Code::OutOfRange, error.to_string(), details);
                if let Ok(value) = oldest.to_string().parse() {
                    status.metadata_mut().insert("oldest_cursor", value);
                }
                status
            }
            FeedError::Unavailable(source) => grpc_status::unavailable(source),
            FeedError::Database(source) => grpc_status::internal(source),
        }
    }
}

fn item_to_proto(item: FeedItem) -> v1::FeedEvent {
    let cursor = item.cursor.to_string();
    match item.event {
        None => v1::FeedEvent {
            cursor,
            topic: "heartbeat".into(),
            r#type: "heartbeat".into(),
            ..Default::default()
        },
        Some(event) => v1::FeedEvent {
            cursor,
            topic: event.topic,
            r#type: event.kind,
            subject_id: event.subject_id,
            customer_id: event
                .customer_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            data_json: event.data_json,
            occurred_at: Some(crate::proto_time::to_timestamp(event.occurred_at)),
        },
    }
}

type FeedStream = Pin<Box<dyn Stream<Item = Result<v1::FeedEvent, Status>> + Send>>;

#[tonic::async_trait]
impl EventFeedService for EventFeedGrpc {
    type SubscribeStream = FeedStream;

    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let request = request.into_inner();
        let start = Start {
            after_cursor: request.after_cursor,
            topics: request.topics,
            from_latest: request.from_latest,
        };
        let items = self.feed.subscribe(start).await?;
        // On drain the stream ends cleanly; the consumer resumes from its cursor elsewhere.
        let stream = ReceiverStream::new(items)
            .map(|item| item.map(item_to_proto).map_err(Status::from))
            .take_until(self.draining.clone().started());
        Ok(Response::new(Box::pin(stream)))
    }
}

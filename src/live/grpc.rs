//! The proto side of live queue statistics (served by `AnalyticsService.GetLiveQueueStats`).

use chrono::{DateTime, Utc};
use tonic::Status;

use super::{AgentCounts, LiveError, LiveStats, QueueStats, Source};
use crate::grpc_status;
use crate::proto::v1;
use crate::validation::Violations;

impl From<LiveError> for Status {
    fn from(error: LiveError) -> Self {
        match &error {
            LiveError::Unavailable(source) => grpc_status::unavailable(source),
            LiveError::Database(source) => grpc_status::internal(source),
        }
    }
}

/// The queues asked for: at most 100, each 1 to 100 characters.
pub fn queues_of(request: &v1::GetLiveQueueStatsRequest) -> Result<Vec<String>, Status> {
    let mut violations = Violations::new();
    let queues = violations.texts("queues", &request.queues, 100, 100);
    match violations.is_empty() {
        true => Ok(queues),
        false => Err(grpc_status::invalid_argument(&violations)),
    }
}

fn counts_to_proto(counts: AgentCounts) -> v1::AgentStateCounts {
    v1::AgentStateCounts {
        available: counts.available,
        busy: counts.busy,
        after_call_work: counts.after_call_work,
        away: counts.away,
        offline: counts.offline,
    }
}

fn queue_to_proto(stats: QueueStats, now: DateTime<Utc>) -> v1::LiveQueueStats {
    v1::LiveQueueStats {
        oldest_waiting_since: stats
            .oldest_waiting_since
            .map(crate::proto_time::to_timestamp),
        longest_wait_seconds: stats
            .oldest_waiting_since
            .map(|since| ((now - since).num_milliseconds().max(0)) as f64 / 1000.0)
            .unwrap_or(0.0),
        queue: stats.queue,
        calls_waiting: stats.calls_waiting,
        calls_in_service: stats.calls_in_service,
        calls_stale: stats.calls_stale,
        agents: Some(counts_to_proto(stats.agents)),
    }
}

pub fn stats_to_proto(stats: LiveStats, now: DateTime<Utc>) -> v1::GetLiveQueueStatsResponse {
    v1::GetLiveQueueStatsResponse {
        queues: stats
            .queues
            .into_iter()
            .map(|q| queue_to_proto(q, now))
            .collect(),
        agents: Some(counts_to_proto(stats.agents)),
        as_of: Some(crate::proto_time::to_timestamp(now)),
        source: match stats.source {
            Source::Redis => v1::LiveSource::Redis,
            Source::Database => v1::LiveSource::Database,
        }
        .into(),
    }
}

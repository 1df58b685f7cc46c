//! One warning per streak of failures, for the background loops that retry at every tick (the
//! feed's sequencer, webhook delivery, the pop invalidation relay, the KPI passes): the first
//! failure of a streak is a warning, the ones after it are debug lines, and a success ends it.

/// Whether a background loop's last round failed.
#[derive(Debug, Default)]
pub struct FailureStreak {
    failing: bool,
}

impl FailureStreak {
    /// Records the outcome of one round of the loop `what`.
    pub fn record<E: std::fmt::Display>(&mut self, what: &str, result: Result<(), E>) {
        match result {
            Ok(()) => self.failing = false,
            Err(error) if !self.failing => {
                self.failing = true;
                tracing::warn!(%error, "{what} paused (retrying)");
            }
            Err(error) => tracing::debug!(%error, "{what} still failing"),
        }
    }
}

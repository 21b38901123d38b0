//! What the call task does for the call's timeline and latency: response latencies to the
//! metrics as turns happen, and at the end the timeline to the record writer (queued, never
//! awaited) and its latency summary to the log.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::CallTask;
use crate::bridge::machine::EndReason;

impl CallTask {
    /// Hands the turn latencies measured since the last look to the metrics (a compare when
    /// there are none).
    pub(super) fn report_response_latency(&mut self) {
        while let Some(latency) = self.machine.timeline_mut().next_unreported_latency() {
            self.app.metrics.observe_response_latency(latency);
        }
    }

    /// The call ended for `reason`: its timeline goes to the record writer, and one log line
    /// sums up how long the caller waited.
    pub(super) fn hand_over_timeline(&mut self, reason: &EndReason) {
        self.report_response_latency();
        let resumed = self.machine.resumptions();
        let resumptions = resumed.go_away + resumed.connection_lost + resumed.stalled;
        let timeline = self.machine.timeline_mut().finish(
            reason,
            resumptions,
            Instant::now().into_std(),
            unix_millis_now(),
        );
        let latency = &timeline.latency;
        let response = &latency.response_ms;
        tracing::info!(
            greeting_from_start_ms = latency.greeting_from_start_ms,
            turns = response.turns.len(),
            response_p50_ms = response.p50,
            response_p95_ms = response.p95,
            response_max_ms = response.max,
            barge_ins = latency.barge_ins,
            resumptions = latency.resumptions,
            events = timeline.events.len(),
            events_dropped = timeline.events_dropped,
            "call latency"
        );
        if let Some(id) = self.record() {
            self.app.recorder.timeline(id, timeline);
        }
    }
}

/// The wall clock in unix milliseconds (0 if it is set before 1970).
fn unix_millis_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

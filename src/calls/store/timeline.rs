//! A call's timeline and latency summary: handed over by the bridge when the call ends,
//! stored whole in `call_timelines`, shown in `GET /calls/{id}` as `events`,
//! `events_dropped` and `latency`.
//!
//! The bridge knows everything from the stream's `start` on; the answer webhook came before
//! it, often on another request or instance. Its time is the record's first `in-progress`
//! status change (the answer webhook writes it before answering, and a provider's own
//! "answered" callback, when it comes first, marks the same moment), so the store adds the
//! `answer_webhook` entry and the greeting latency measured from it when it writes the rest.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::Row;

use super::model::{CallRecord, CallStatus, rfc3339_ms};
use super::{CallStore, StoreError, expect_one, now_ms, query_error};

/// The timeline entry the store adds for the answer webhook.
pub const ANSWER_WEBHOOK: &str = "answer_webhook";

/// One moment of a call as the bridge recorded it, and as it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// When (unix milliseconds).
    pub at_ms: i64,
    /// What happened (`stream_start`, `caller_turn_end`, … in snake_case).
    pub kind: String,
    /// Facts about it (a latency, a close code); empty for most kinds.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub detail: Map<String, Value>,
}

/// One moment of a call, as `GET /calls/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEvent {
    /// When (RFC 3339 UTC with milliseconds).
    pub at: String,
    /// What happened.
    pub kind: String,
    /// Facts about it; left out when there are none.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub detail: Map<String, Value>,
}

impl From<TimelineEntry> for TimelineEvent {
    fn from(entry: TimelineEntry) -> Self {
        Self {
            at: rfc3339_ms(entry.at_ms),
            kind: entry.kind,
            detail: entry.detail,
        }
    }
}

/// How long the caller waited for the agent in one call (all figures in milliseconds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Answer webhook → first agent audio sent to the phone; `null` when either is unknown.
    pub greeting_ms: Option<u64>,
    /// Stream `start` → first agent audio sent to the phone; `null` if the agent never spoke.
    pub greeting_from_start_ms: Option<u64>,
    /// Caller stopped speaking → first audio of the agent's reply sent, per turn.
    pub response_ms: ResponseLatency,
    /// Times the caller talked over the agent and cut it off.
    pub barge_ins: u32,
    /// Times the Gemini session was resumed on a new connection.
    pub resumptions: u32,
}

/// Response latency of each turn, and its spread.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseLatency {
    /// Each turn's latency, in order.
    pub turns: Vec<u64>,
    /// Median (nearest rank); `null` without turns.
    pub p50: Option<u64>,
    /// 95th percentile (nearest rank); `null` without turns.
    pub p95: Option<u64>,
    /// Longest; `null` without turns.
    pub max: Option<u64>,
}

impl ResponseLatency {
    /// The summary of these turns' latencies.
    pub fn of(turns: Vec<u64>) -> Self {
        let mut sorted = turns.clone();
        sorted.sort_unstable();
        Self {
            p50: nearest_rank(&sorted, 50),
            p95: nearest_rank(&sorted, 95),
            max: sorted.last().copied(),
            turns,
        }
    }
}

/// The `percent`th percentile of `sorted` by the nearest-rank method: the smallest value
/// with at least that share of the values at or below it (always one of the values).
fn nearest_rank(sorted: &[u64], percent: usize) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// What the bridge hands over when a call ends.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallTimeline {
    /// What happened, oldest first.
    pub events: Vec<TimelineEntry>,
    /// Entries left out at the cap.
    pub events_dropped: u64,
    /// The latency summary (without `greeting_ms`, which the store works out).
    pub latency: LatencySummary,
    /// When the agent's first audio was sent to the phone (unix milliseconds).
    pub first_agent_audio_ms: Option<i64>,
}

impl CallStore {
    /// Stores the call's timeline, with the answer webhook's time from its status history
    /// (see the module documentation), replacing any earlier one. The record counts as
    /// changed, so a post-call webhook waits for this write.
    pub async fn save_timeline(&self, id: &str, timeline: &CallTimeline) -> Result<(), StoreError> {
        const OP: &str = "save_timeline";
        // Copied (once per call) because the answer webhook's entry and latency go in.
        let mut events = timeline.events.clone();
        let mut latency = timeline.latency.clone();
        let mut tx = self.begin(OP).await?;
        let answered: Option<i64> = sqlx::query(
            "SELECT at_ms FROM call_events WHERE call_id = $1 AND kind = 'status' AND name = $2 \
             ORDER BY seq LIMIT 1",
        )
        .bind(id)
        .bind(CallStatus::InProgress.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(query_error(OP))?
        .map(|row| row.try_get("at_ms"))
        .transpose()
        .map_err(query_error(OP))?;
        if let Some(answered) = answered {
            let place = events.partition_point(|e| e.at_ms <= answered);
            events.insert(
                place,
                TimelineEntry {
                    at_ms: answered,
                    kind: ANSWER_WEBHOOK.to_owned(),
                    detail: Map::new(),
                },
            );
            latency.greeting_ms = timeline
                .first_agent_audio_ms
                .and_then(|first| u64::try_from(first - answered).ok());
        }
        let events = encode(&events, "timeline events")?;
        let latency = encode(&latency, "latency summary")?;
        let now = now_ms();
        sqlx::query(
            "INSERT INTO call_timelines (call_id, events, events_dropped, latency, written_ms) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (call_id) DO UPDATE SET events = excluded.events, \
             events_dropped = excluded.events_dropped, latency = excluded.latency, \
             written_ms = excluded.written_ms",
        )
        .bind(id)
        .bind(&events)
        .bind(i64::try_from(timeline.events_dropped).unwrap_or(i64::MAX))
        .bind(&latency)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(query_error(OP))?;
        let touched = sqlx::query("UPDATE calls SET updated_ms = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(query_error(OP))?;
        expect_one(touched.rows_affected(), id)?;
        tx.commit().await.map_err(query_error(OP))
    }

    /// Fills `record`'s `events`, `events_dropped` and `latency` from its stored timeline;
    /// a call still running (or one that ended before timelines existed) has none.
    pub(super) async fn load_timeline(&self, record: &mut CallRecord) -> Result<(), StoreError> {
        const OP: &str = "load_timeline";
        let row = sqlx::query(
            "SELECT events, events_dropped, latency FROM call_timelines WHERE call_id = $1",
        )
        .bind(&record.id)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_error(OP))?;
        let Some(row) = row else {
            return Ok(());
        };
        let events: String = row.try_get("events").map_err(query_error(OP))?;
        let latency: String = row.try_get("latency").map_err(query_error(OP))?;
        let dropped: i64 = row.try_get("events_dropped").map_err(query_error(OP))?;
        let entries: Vec<TimelineEntry> = decode(&record.id, &events, "timeline")?;
        record.events = entries.into_iter().map(TimelineEvent::from).collect();
        record.events_dropped = u64::try_from(dropped).unwrap_or(0);
        record.latency = Some(decode(&record.id, &latency, "latency summary")?);
        Ok(())
    }
}

fn encode<T: Serialize>(value: &T, what: &'static str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|source| StoreError::Encode { what, source })
}

fn decode<T: for<'de> Deserialize<'de>>(
    id: &str,
    text: &str,
    field: &'static str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        id: id.to_owned(),
        field,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_values() {
        let two = ResponseLatency::of(vec![612, 540]);
        assert_eq!(
            (two.p50, two.p95, two.max),
            (Some(540), Some(612), Some(612))
        );
        assert_eq!(two.turns, [612, 540], "turns keep their order");
        let hundred = ResponseLatency::of((1..=100).rev().collect());
        assert_eq!(
            (hundred.p50, hundred.p95, hundred.max),
            (Some(50), Some(95), Some(100))
        );
        let one = ResponseLatency::of(vec![7]);
        assert_eq!((one.p50, one.p95, one.max), (Some(7), Some(7), Some(7)));
        let none = ResponseLatency::of(Vec::new());
        assert_eq!((none.p50, none.p95, none.max), (None, None, None));
    }

    #[test]
    fn events_show_rfc3339_times_and_omit_empty_detail() {
        let plain = TimelineEvent::from(TimelineEntry {
            at_ms: 1_779_269_400_125,
            kind: "stream_start".into(),
            detail: Map::new(),
        });
        assert_eq!(
            serde_json::to_value(&plain).unwrap_or_default(),
            serde_json::json!({"at": "2026-05-20T09:30:00.125Z", "kind": "stream_start"})
        );
    }
}

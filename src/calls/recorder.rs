//! Writes what happens during calls to the record store from one background task, so a
//! call's audio loop never waits on the database and its lines keep their order.

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::store::{CallStatus, CallStore, CallTimeline};

/// Updates queued before new ones are dropped (with a warning) because the database stalls.
const QUEUE: usize = 8_192;

enum Update {
    /// Answered once everything queued before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
    Transcript {
        id: String,
        who: &'static str,
        text: String,
        interrupted: bool,
    },
    Tool {
        id: String,
        name: String,
        detail: Value,
    },
    Status {
        id: String,
        status: CallStatus,
    },
    Finish {
        id: String,
        duration_seconds: Option<i64>,
        end_reason: String,
    },
    Timeline {
        id: String,
        timeline: Box<CallTimeline>,
    },
}

/// A cheap handle for queueing record updates.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Update>,
}

impl std::fmt::Debug for Update {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Update")
    }
}

impl Recorder {
    /// Starts the writer task; it ends once every handle is dropped and the queue is empty.
    pub fn spawn(store: CallStore) -> (Recorder, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(async move {
            while let Some(update) = rx.recv().await {
                let result = match &update {
                    Update::Flush(_) => Ok(()),
                    Update::Transcript {
                        id,
                        who,
                        text,
                        interrupted: false,
                    } => store.append_transcript(id, who, text).await,
                    Update::Transcript { id, who, text, .. } => {
                        store.append_interrupted_transcript(id, who, text).await
                    }
                    Update::Tool { id, name, detail } => {
                        store.append_tool_event(id, name, detail).await
                    }
                    Update::Status { id, status } => store.record_status(id, *status).await,
                    Update::Finish {
                        id,
                        duration_seconds,
                        end_reason,
                    } => {
                        // The provider's billed duration, when its callback came first, is the
                        // true one: only fill what is still empty.
                        store
                            .finish_if_unset(id, *duration_seconds, Some(end_reason))
                            .await
                    }
                    Update::Timeline { id, timeline } => store.save_timeline(id, timeline).await,
                };
                if let Err(error) = result {
                    tracing::error!(%error, "could not write a call record update");
                }
                if let Update::Flush(done) = update {
                    let _ = done.send(());
                }
            }
        });
        (Recorder { tx }, task)
    }

    fn send(&self, update: Update) {
        if let Err(e) = self.tx.try_send(update) {
            tracing::warn!(error = %e, "call record update dropped: the database is not keeping up");
        }
    }

    /// Updates queued and not yet written (read when metrics are scraped).
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Waits until every update queued so far is written (before the process exits).
    pub async fn flush(&self) {
        let (done, written) = tokio::sync::oneshot::channel();
        if self.tx.send(Update::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }

    /// A finished transcript line.
    pub fn transcript(&self, id: &str, who: &'static str, text: &str) {
        self.send(Update::Transcript {
            id: id.to_owned(),
            who,
            text: text.to_owned(),
            interrupted: false,
        });
    }

    /// The line of an agent turn the caller talked over: `text` is the part they heard.
    pub fn interrupted_transcript(&self, id: &str, who: &'static str, text: &str) {
        self.send(Update::Transcript {
            id: id.to_owned(),
            who,
            text: text.to_owned(),
            interrupted: true,
        });
    }

    /// A tool call or its result.
    pub fn tool(&self, id: &str, name: &str, detail: Value) {
        self.send(Update::Tool {
            id: id.to_owned(),
            name: name.to_owned(),
            detail,
        });
    }

    /// A status change.
    pub fn status(&self, id: &str, status: CallStatus) {
        self.send(Update::Status {
            id: id.to_owned(),
            status,
        });
    }

    /// The bridge's side of the end of a call.
    pub fn finish(&self, id: &str, duration_seconds: Option<i64>, end_reason: String) {
        self.send(Update::Finish {
            id: id.to_owned(),
            duration_seconds,
            end_reason,
        });
    }

    /// The call's timeline and latency summary, once it has ended.
    pub fn timeline(&self, id: &str, timeline: CallTimeline) {
        self.send(Update::Timeline {
            id: id.to_owned(),
            timeline: Box::new(timeline),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::store::NewCall;
    use crate::telephony::Direction;

    #[tokio::test]
    async fn flush_waits_for_everything_queued_before_it() {
        let store = CallStore::connect("sqlite::memory:").await.expect("store");
        let record = store
            .create(NewCall {
                provider: "twilio".into(),
                provider_call_id: Some("CA1".into()),
                direction: Direction::Inbound,
                from: "+15550001111".into(),
                to: "+15550002222".into(),
                campaign: None,
                prompt: None,
                vars: serde_json::Map::new(),
                status: CallStatus::InProgress,
            })
            .await
            .expect("create");
        let (recorder, _writer) = Recorder::spawn(store.clone());
        for i in 0..50 {
            recorder.transcript(&record.id, "caller", &format!("line {i}"));
        }
        recorder.finish(&record.id, Some(7), "caller hung up".into());
        recorder.flush().await;
        let stored = store.get(&record.id).await.expect("get").expect("record");
        assert_eq!(stored.transcript.len(), 50);
        assert_eq!(stored.transcript[49].text, "line 49");
        assert_eq!(stored.end_reason.as_deref(), Some("caller hung up"));
        assert_eq!(stored.duration_seconds, Some(7));
    }
}

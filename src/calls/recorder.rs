//! Writes what happens during calls to the record store from one background task, so a
//! call's audio loop never waits on the database and its lines keep their order.

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::store::{CallStatus, CallStore};

/// Updates queued before new ones are dropped (with a warning) because the database stalls.
const QUEUE: usize = 8_192;

enum Update {
    Transcript {
        id: String,
        who: &'static str,
        text: String,
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
                    Update::Transcript { id, who, text } => {
                        store.append_transcript(id, who, text).await
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
                };
                if let Err(error) = result {
                    tracing::error!(%error, "could not write a call record update");
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

    /// A finished transcript line.
    pub fn transcript(&self, id: &str, who: &'static str, text: &str) {
        self.send(Update::Transcript {
            id: id.to_owned(),
            who,
            text: text.to_owned(),
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
}

//! Shutdown as a signal every part of the server hears.
//!
//! One [`Shutdown`] is made at start-up and shared. SIGTERM (or Ctrl-C) calls
//! [`Shutdown::begin`]: the HTTP server stops accepting, and every call task — each spawned
//! through [`Shutdown::spawn_call`] and listening on [`Shutdown::signal`] in its select loop —
//! ends its own call with the reason `server shutdown` and writes its record. The process
//! then waits for the calls with [`Shutdown::drain`], up to a deadline after which whatever is
//! left is cut. Helpers spawned through [`Shutdown::spawn_helper`] (pre-warmed Gemini sessions
//! closing themselves) are waited for the same way.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The server-wide stop signal and the set of call tasks that must end before exit.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    signal: CancellationToken,
    calls: TaskTracker,
    /// Tasks that are not calls but hold something to close politely: pre-warmed Gemini
    /// sessions waiting for their stream.
    helpers: TaskTracker,
}

impl Shutdown {
    /// A signal that has not fired, tracking no calls.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the signal; every listener hears it. Idempotent.
    pub fn begin(&self) {
        self.signal.cancel();
    }

    /// True once the signal has fired.
    pub fn has_begun(&self) -> bool {
        self.signal.is_cancelled()
    }

    /// Resolves when the signal fires (at once if it already has). Owned, so a call's select
    /// loop can pin it once rather than register a new waiter for every frame.
    pub fn signal(&self) -> impl Future<Output = ()> + Send + 'static {
        self.signal.clone().cancelled_owned()
    }

    /// Runs a call task that [`Self::drain`] waits for.
    pub fn spawn_call<F>(&self, call: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.calls.spawn(call);
    }

    /// Runs a task that is not a call but that [`Self::drain`] also waits for (a pre-warmed
    /// Gemini session closing itself). It must end soon after [`Self::signal`] fires.
    pub fn spawn_helper<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.helpers.spawn(task);
    }

    /// Calls still running.
    pub fn running_calls(&self) -> usize {
        self.calls.len()
    }

    /// Waits up to `within` for every call task and helper to end; true if they all did.
    pub async fn drain(&self, within: Duration) -> bool {
        self.calls.close();
        self.helpers.close();
        let all_ended = async {
            self.calls.wait().await;
            self.helpers.wait().await;
        };
        tokio::time::timeout(within, all_ended).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_hear_the_signal_and_drain_waits_for_them() {
        let shutdown = Shutdown::new();
        let signal = shutdown.signal();
        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
        shutdown.spawn_call(async move {
            signal.await;
            let _ = ended_tx.send(());
        });
        assert!(
            !shutdown.drain(Duration::from_millis(20)).await,
            "still running"
        );
        shutdown.begin();
        assert!(shutdown.drain(Duration::from_secs(2)).await);
        assert!(ended_rx.await.is_ok());
        assert!(shutdown.has_begun());
    }

    #[tokio::test]
    async fn drain_waits_for_helpers_too() {
        let shutdown = Shutdown::new();
        let signal = shutdown.signal();
        shutdown.spawn_helper(async move {
            signal.await;
            tokio::time::sleep(Duration::from_millis(30)).await;
        });
        assert!(!shutdown.drain(Duration::from_millis(20)).await);
        shutdown.begin();
        assert!(shutdown.drain(Duration::from_secs(2)).await);
        assert_eq!(shutdown.running_calls(), 0, "a helper is no call");
    }

    #[tokio::test]
    async fn a_stuck_call_is_left_behind_at_the_deadline() {
        let shutdown = Shutdown::new();
        shutdown.spawn_call(std::future::pending());
        shutdown.begin();
        assert!(!shutdown.drain(Duration::from_millis(50)).await);
        assert_eq!(shutdown.running_calls(), 1);
    }
}

//! Crash reconciliation: settling the records of calls whose server died.
//!
//! A server killed with SIGKILL, or cut off past its shutdown drain, never writes the end of
//! the calls it was running, and the provider's final callback may have reached nobody. Their
//! records would say `in-progress` (or `ringing`, `queued`, `machine`) forever. So every
//! instance:
//!
//! - keeps a heartbeat in the records store every [`HEARTBEAT_EVERY`], and owns the records
//!   it creates or streams (see `CallStore::take_ownership`). It counts as dead once its
//!   heartbeat is older than [`DEAD_AFTER`] (three missed beats) or its row is gone. It
//!   keeps beating while its calls drain after a shutdown signal, and deletes its row on a
//!   clean exit ([`Membership::leave`]);
//! - looks for orphans [`FIRST_PASS_AFTER`] after start-up and then every [`PASS_EVERY`]:
//!   unfinished records owned by a dead instance, or by nobody (records from before owners
//!   were kept) and older than the longest call plus [`UNOWNED_MARGIN`];
//! - claims each orphan with a conditional update (so two instances never both settle one),
//!   asks the call's provider what became of it and settles the record ([`resolve`]).
//!
//! A restart right after a crash: the dead instance's last beat was at most at our start-up,
//! so it is stale [`DEAD_AFTER`] later and the next pass, at most [`PASS_EVERY`] after that,
//! settles its calls: within 15 s + 10 s + the provider look-ups of start-up, inside 30 s.

use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::store::{CallStatus, CallStore, OrphanedCall, StoreError};
use crate::config::Config;
use crate::shutdown::Shutdown;
use crate::telephony::registry::Registry;
use crate::telephony::rest::CallControl;

/// How often an instance writes its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// An instance whose heartbeat is this old is dead: three missed beats, so one slow write
/// (a busy database, a stalled runtime) does not get a live instance's calls settled.
pub const DEAD_AFTER: Duration = Duration::from_secs(15);
/// The first look for orphans, once the server is up.
pub const FIRST_PASS_AFTER: Duration = Duration::from_secs(1);
/// Later looks: they find instances that die while this one lives, and those that died
/// just before it started (stale only [`DEAD_AFTER`] after their last beat). A look is one
/// indexed query.
pub const PASS_EVERY: Duration = Duration::from_secs(10);
/// Records without an owner are orphans only this long after the longest call could have
/// ended (`MAX_CALL_SECONDS` after creation), since an older version of the server, still
/// running during an upgrade, writes records without owners. The margin covers ringing.
pub const UNOWNED_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Rows of instances silent this long are deleted, by each instance once per this period
/// (their records are settled regardless: an owner without a row is dead).
pub const PRUNE_AFTER: Duration = Duration::from_secs(60 * 60);
/// Longest one provider look-up may take (Plivo's takes up to three requests).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Orphans settled per pass; more wait for the next one.
const BATCH: u32 = 100;
/// Provider look-ups run at once.
const LOOKUPS_AT_ONCE: usize = 8;
/// Longest a clean exit waits to remove the instance's heartbeat.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The end reason of a call whose server stopped and whose fate nobody could tell.
pub const SERVER_STOPPED: &str = "server stopped";

/// The timings of heartbeats and reconciliation; [`Settings::for_config`] gives the
/// server's, tests make shorter ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How often to write this instance's heartbeat.
    pub heartbeat_every: Duration,
    /// A heartbeat older than this means the instance is dead.
    pub dead_after: Duration,
    /// Delay of the first pass after start-up.
    pub first_pass_after: Duration,
    /// Delay between passes.
    pub pass_every: Duration,
    /// Age after which a record without an owner counts as an orphan.
    pub unowned_grace: Duration,
    /// Instance rows silent this long are deleted.
    pub prune_after: Duration,
    /// Longest one provider look-up may take.
    pub lookup_timeout: Duration,
}

impl Settings {
    /// The defaults above, with the unowned grace sized from `MAX_CALL_SECONDS`.
    pub fn for_config(config: &Config) -> Self {
        Settings {
            heartbeat_every: HEARTBEAT_EVERY,
            dead_after: DEAD_AFTER,
            first_pass_after: FIRST_PASS_AFTER,
            pass_every: PASS_EVERY,
            unowned_grace: config.max_call_duration + UNOWNED_MARGIN,
            prune_after: PRUNE_AFTER,
            lookup_timeout: LOOKUP_TIMEOUT,
        }
    }
}

/// What we learnt when asking the provider about an orphaned call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderReport {
    /// This server has no account for the record's provider.
    NoAccount,
    /// The record has no provider call id (the server died before the dial returned one).
    NoCallId,
    /// The look-up failed (the provider's error, or no answer in time).
    LookupFailed(String),
    /// The provider does not know the call.
    Unknown,
    /// The provider's status for the call.
    Status(CallStatus),
}

impl std::fmt::Display for ProviderReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProviderReport::NoAccount => f.write_str("no account for its provider here"),
            ProviderReport::NoCallId => f.write_str("no provider call id was stored"),
            ProviderReport::LookupFailed(error) => write!(f, "status look-up failed: {error}"),
            ProviderReport::Unknown => f.write_str("the provider does not know the call"),
            ProviderReport::Status(status) => write!(f, "the provider reports {status}"),
        }
    }
}

/// What to do with an orphaned record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The provider says how the call ended: record that status and this end reason.
    Ended {
        /// The provider's final status.
        status: CallStatus,
        /// `server stopped; provider reports <status>`.
        end_reason: String,
    },
    /// Nobody can tell how it ended: mark it `failed` with [`SERVER_STOPPED`].
    Failed,
    /// The provider still has the call (queued, ringing, or live: e.g. answered and being
    /// picked up by another instance). Leave the record for a later pass; the provider's
    /// final callback, which any instance serves, may settle it first.
    StillOpen,
}

/// The decision for one orphan, from what its provider said.
pub fn resolve(report: &ProviderReport) -> Resolution {
    match report {
        ProviderReport::Status(status) if status.is_final() => Resolution::Ended {
            status: *status,
            end_reason: format!("{SERVER_STOPPED}; provider reports {status}"),
        },
        ProviderReport::Status(_) => Resolution::StillOpen,
        ProviderReport::NoAccount
        | ProviderReport::NoCallId
        | ProviderReport::LookupFailed(_)
        | ProviderReport::Unknown => Resolution::Failed,
    }
}

/// What a pass did, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Records given the final status their provider reported.
    pub ended: usize,
    /// Records marked `failed` with [`SERVER_STOPPED`].
    pub failed: usize,
    /// Records whose call the provider still has, left for a later pass.
    pub still_open: usize,
    /// Records another instance took over (or that ended) before this one could settle them.
    pub taken_elsewhere: usize,
    /// Records that could not be settled because the store failed.
    pub errors: usize,
}

impl PassReport {
    /// Records this pass changed (ended or failed).
    pub fn settled(&self) -> usize {
        self.ended + self.failed
    }
}

enum Outcome {
    Ended,
    Failed,
    StillOpen,
    TakenElsewhere,
}

/// Finds and settles orphaned records for one instance.
pub struct Reconciler {
    store: CallStore,
    controls: Vec<Arc<dyn CallControl>>,
    settings: Settings,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("instance", &self.store.instance_id())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Reconciler {
    /// A reconciler writing as `store`'s instance (see `CallStore::owned_by`) and asking the
    /// providers `registry` holds accounts for.
    pub fn new(store: CallStore, registry: &Registry, settings: Settings) -> Self {
        let controls = registry
            .names()
            .into_iter()
            .filter_map(|name| registry.control(name))
            .collect();
        Reconciler {
            store,
            controls,
            settings,
        }
    }

    /// Looks for orphans once and settles them. A pass that finds none only reads, so it
    /// never competes with calls for SQLite's write lock.
    pub async fn pass(&self) -> Result<PassReport, StoreError> {
        let settings = &self.settings;
        let orphans = self
            .store
            .orphaned_calls(settings.dead_after, settings.unowned_grace, BATCH)
            .await?;
        // Owned orphans: futures borrowing them trip rustc's `Send` check in `tokio::spawn`.
        let settling = orphans.into_iter().map(|orphan| self.settle(orphan));
        let outcomes: Vec<Result<Outcome, StoreError>> = futures_util::stream::iter(settling)
            .buffer_unordered(LOOKUPS_AT_ONCE)
            .collect()
            .await;
        let mut report = PassReport::default();
        for outcome in outcomes {
            match outcome {
                Ok(Outcome::Ended) => report.ended += 1,
                Ok(Outcome::Failed) => report.failed += 1,
                Ok(Outcome::StillOpen) => report.still_open += 1,
                Ok(Outcome::TakenElsewhere) => report.taken_elsewhere += 1,
                Err(error) => {
                    tracing::error!(%error, "could not settle a call left by a stopped server");
                    report.errors += 1;
                }
            }
        }
        Ok(report)
    }

    /// Deletes the rows of instances silent for [`Settings::prune_after`].
    pub async fn prune(&self) {
        match self.store.prune_instances(self.settings.prune_after).await {
            Ok(0) => {}
            Ok(pruned) => tracing::debug!(pruned, "deleted the rows of long-dead instances"),
            Err(error) => tracing::warn!(%error, "could not prune dead instances"),
        }
    }

    /// Claims one orphan, asks its provider and settles it; a claimed record that could not
    /// be settled is given back so a later pass tries again.
    async fn settle(&self, orphan: OrphanedCall) -> Result<Outcome, StoreError> {
        if !self
            .store
            .claim_orphan(&orphan, self.settings.dead_after)
            .await?
        {
            return Ok(Outcome::TakenElsewhere);
        }
        let report = self.ask_provider(&orphan).await;
        let result = self.apply(&orphan, &report).await;
        if !matches!(result, Ok(Outcome::Ended | Outcome::Failed))
            && let Err(error) = self.store.release_orphan(&orphan).await
        {
            tracing::warn!(%error, call = %orphan.id, "could not give back a claimed call");
        }
        result
    }

    async fn apply(
        &self,
        orphan: &OrphanedCall,
        report: &ProviderReport,
    ) -> Result<Outcome, StoreError> {
        let resolution = resolve(report);
        if resolution == Resolution::StillOpen {
            tracing::debug!(call = %orphan.id, %report, "call of a stopped server is still open");
            return Ok(Outcome::StillOpen);
        }
        // The look-up took a while: the stream may have started elsewhere, or the provider's
        // callback may have ended the call, meanwhile.
        if !self.store.still_claimed(&orphan.id).await? {
            return Ok(Outcome::TakenElsewhere);
        }
        tracing::warn!(
            call = %orphan.id,
            owner = orphan.owner.as_deref().unwrap_or("none"),
            was = %orphan.status,
            %report,
            "settling a call left unfinished by a stopped server"
        );
        match resolution {
            Resolution::Ended { status, end_reason } => {
                // The reason first: whoever sees the final status sees the whole record.
                self.store
                    .finish_if_unset(&orphan.id, None, Some(&end_reason))
                    .await?;
                self.store.record_status(&orphan.id, status).await?;
                Ok(Outcome::Ended)
            }
            Resolution::Failed => {
                self.store.fail(&orphan.id, SERVER_STOPPED).await?;
                Ok(Outcome::Failed)
            }
            Resolution::StillOpen => Ok(Outcome::StillOpen),
        }
    }

    async fn ask_provider(&self, orphan: &OrphanedCall) -> ProviderReport {
        let Some(control) = self
            .controls
            .iter()
            .find(|control| control.provider() == orphan.provider)
        else {
            return ProviderReport::NoAccount;
        };
        let Some(call_id) = orphan.provider_call_id.as_deref() else {
            return ProviderReport::NoCallId;
        };
        let lookup =
            tokio::time::timeout(self.settings.lookup_timeout, control.call_status(call_id));
        match lookup.await {
            Err(_elapsed) => ProviderReport::LookupFailed(format!(
                "no answer within {} s",
                self.settings.lookup_timeout.as_secs()
            )),
            Ok(Err(error)) => ProviderReport::LookupFailed(error.to_string()),
            Ok(Ok(None)) => ProviderReport::Unknown,
            Ok(Ok(Some(status))) => match status.parse() {
                Ok(status) => ProviderReport::Status(status),
                Err(error) => ProviderReport::LookupFailed(format!("{error}")),
            },
        }
    }
}

/// This instance's presence in the records store: its heartbeat, until [`Membership::leave`].
#[derive(Debug)]
pub struct Membership {
    retire: CancellationToken,
    heartbeat: Mutex<Option<JoinHandle<()>>>,
}

impl Membership {
    /// Stops the heartbeat and deletes this instance's row: a clean exit. Call it once every
    /// call has ended and its record is written (at exit, after the drain and the recorder's
    /// flush), since from then on other instances may settle whatever this one still owns.
    /// Without it the row goes stale and the instance counts as dead [`DEAD_AFTER`] later.
    pub async fn leave(&self) {
        self.retire.cancel();
        let heartbeat = self
            .heartbeat
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(heartbeat) = heartbeat
            && tokio::time::timeout(LEAVE_TIMEOUT, heartbeat)
                .await
                .is_err()
        {
            tracing::warn!("could not remove this instance's heartbeat in time");
        }
    }
}

/// Starts this instance's background tasks: its heartbeat, which runs until
/// [`Membership::leave`] (through the shutdown drain: calls still draining are looked
/// after), and its reconciler, which stops at the shutdown signal. The first heartbeat must
/// already have been written, before any record could be created.
pub fn start(reconciler: Reconciler, shutdown: &Shutdown) -> Membership {
    let retire = CancellationToken::new();
    let heartbeat = tokio::spawn(keep_alive(
        reconciler.store.clone(),
        reconciler.settings.heartbeat_every,
        retire.clone(),
    ));
    tokio::spawn(reconcile_until_shutdown(reconciler, shutdown.clone()));
    Membership {
        retire,
        heartbeat: Mutex::new(Some(heartbeat)),
    }
}

async fn keep_alive(store: CallStore, every: Duration, retire: CancellationToken) {
    let mut beats = tokio::time::interval_at(Instant::now() + every, every);
    beats.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut beat = Heartbeat::default();
    loop {
        tokio::select! {
            _ = beats.tick() => beat.write(&store).await,
            () = retire.cancelled() => break,
        }
    }
    // After the loop, so no beat in flight can write the row back.
    match store.leave().await {
        Ok(()) => tracing::debug!("instance left the records store"),
        Err(error) => tracing::warn!(%error, "could not remove this instance's heartbeat"),
    }
}

/// Writes heartbeats, logging a failure once per outage rather than every beat.
#[derive(Default)]
struct Heartbeat {
    failing: bool,
}

impl Heartbeat {
    async fn write(&mut self, store: &CallStore) {
        match store.heartbeat().await {
            Ok(()) if self.failing => {
                self.failing = false;
                tracing::info!("heartbeat written again");
            }
            Ok(()) => {}
            Err(error) if !self.failing => {
                self.failing = true;
                tracing::warn!(
                    %error,
                    "could not write this instance's heartbeat; if it stays silent, other instances will treat its calls as left by a stopped server"
                );
            }
            Err(_) => {}
        }
    }
}

async fn reconcile_until_shutdown(reconciler: Reconciler, shutdown: Shutdown) {
    let mut signal = pin!(shutdown.signal());
    let mut next = Instant::now() + reconciler.settings.first_pass_after;
    let mut next_prune = Instant::now() + reconciler.settings.prune_after;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = &mut signal => return,
        }
        let result = tokio::select! {
            result = reconciler.pass() => result,
            () = &mut signal => return,
        };
        match result {
            Ok(report) if report.settled() == 0 && report.errors == 0 => {
                tracing::debug!(?report, "looked for calls of stopped servers");
            }
            Ok(report) => tracing::info!(?report, "reconciled calls of stopped servers"),
            Err(error) => tracing::warn!(%error, "could not look for calls of stopped servers"),
        }
        if Instant::now() >= next_prune {
            reconciler.prune().await;
            next_prune = Instant::now() + reconciler.settings.prune_after;
        }
        next = Instant::now() + reconciler.settings.pass_every;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_final_status_from_the_provider_is_recorded_with_the_reason() {
        for status in [
            CallStatus::Completed,
            CallStatus::Busy,
            CallStatus::NoAnswer,
            CallStatus::Failed,
            CallStatus::Canceled,
        ] {
            assert_eq!(
                resolve(&ProviderReport::Status(status)),
                Resolution::Ended {
                    status,
                    end_reason: format!("server stopped; provider reports {status}"),
                }
            );
        }
    }

    #[test]
    fn a_call_the_provider_still_has_is_left_alone() {
        for status in [
            CallStatus::Queued,
            CallStatus::Ringing,
            CallStatus::InProgress,
        ] {
            assert_eq!(
                resolve(&ProviderReport::Status(status)),
                Resolution::StillOpen,
                "{status}"
            );
        }
    }

    #[test]
    fn a_call_nobody_can_account_for_failed_because_the_server_stopped() {
        for report in [
            ProviderReport::NoAccount,
            ProviderReport::NoCallId,
            ProviderReport::LookupFailed("twilio answered HTTP 500: oops".into()),
            ProviderReport::Unknown,
        ] {
            assert_eq!(resolve(&report), Resolution::Failed, "{report}");
        }
    }

    #[test]
    fn the_server_fits_reconciliation_in_thirty_seconds_of_start_up() {
        // A dead instance's last beat was at most at our start; it is stale DEAD_AFTER later
        // and caught by the first pass after that.
        let worst = DEAD_AFTER + PASS_EVERY + FIRST_PASS_AFTER;
        assert!(worst < Duration::from_secs(30), "{worst:?}");
        assert!(DEAD_AFTER >= HEARTBEAT_EVERY * 3, "three missed beats");
    }
}

//! The dialer: one loop per instance that, every `CAMPAIGN_POLL_MS` (or at once when the API
//! wakes it), settles the contacts whose calls ended, gives back claims whose lease ran out,
//! claims due contacts within the limits and places their calls.
//!
//! ## Why the dialer polls for ended calls
//! A call's final status reaches the records store from the provider's callbacks, which a
//! load balancer may hand to any instance, and sometimes from the bridge or the crash
//! reconciler instead. Rather than hook every one of those writers, each dialer asks the store
//! once per poll for `calling` contacts whose call record is final (one indexed query that
//! finds nothing most of the time) and settles them with a conditional `UPDATE`, so whichever
//! instance looks first settles a contact and the others change nothing. A retry is therefore
//! scheduled at most one poll after its call ended, and the webhook path stays as it is.
//!
//! The call slots this instance reserved for its dials ([`crate::admission`]) are given back
//! the same way: the dialer keeps the ids of the calls it placed and asks which have ended,
//! since the final callback may have reached another instance.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use super::store::{Claim, ClaimLimits};
use crate::admission::DIAL_TO_START;
use crate::app::App;
use crate::calls::api::ApiError;
use crate::calls::dial::{self, Outbound};

/// How long a contact whose provider is no longer configured waits before it is looked at
/// again.
const NO_PROVIDER_RETRY_MS: i64 = 60_000;

/// The end reason of a campaign call whose dialer stopped before the provider accepted it.
pub const UNPLACED: &str =
    "not placed: the instance dialling it stopped before the provider answered";

/// Starts this instance's dialer, unless `CAMPAIGN_DIALER=false`. It stops claiming when
/// the shutdown signal fires; claims it holds then are given back by their leases.
pub fn start(app: &Arc<App>) {
    if !app.config.campaigns.dialer {
        tracing::info!(
            "CAMPAIGN_DIALER=false: this instance serves the campaign API but dials nothing"
        );
        return;
    }
    let dialer = Dialer {
        app: Arc::clone(app),
        placed: HashMap::new(),
    };
    tokio::spawn(dialer.run());
}

struct Dialer {
    app: Arc<App>,
    /// Calls this instance placed whose slot it still holds, with when they were placed.
    placed: HashMap<String, Instant>,
}

impl Dialer {
    async fn run(mut self) {
        let stop = self.app.shutdown.signal();
        tokio::pin!(stop);
        let poll = self.app.config.campaigns.poll;
        loop {
            self.tick().await;
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(poll) => {}
                () = self.app.campaigns.woken() => {}
            }
        }
        tracing::debug!("campaign dialer stopped");
    }

    /// One round: settle, release, free, claim and dial, finish.
    async fn tick(&mut self) {
        let app = Arc::clone(&self.app);
        let campaigns = &app.campaigns;
        let store = &campaigns.store;
        match store.settle_ended(campaigns.now_ms()).await {
            Ok(settled) => {
                for contact in settled {
                    tracing::info!(
                        campaign = %contact.campaign_id,
                        line = contact.line,
                        call = %contact.call_id,
                        status = %contact.status,
                        state = contact.state.as_str(),
                        "campaign contact settled"
                    );
                }
            }
            Err(error) => tracing::warn!(%error, "campaigns: could not settle ended calls"),
        }
        self.release_ended_slots().await;
        match store.free_expired_claims(campaigns.now_ms()).await {
            Ok(0) => {}
            Ok(freed) => tracing::warn!(
                contacts = freed,
                "campaigns: took back contacts whose dialer stopped before placing their calls"
            ),
            Err(error) => tracing::warn!(%error, "campaigns: could not free expired claims"),
        }
        self.fail_unplaced_calls().await;
        if !app.shutdown.has_begun() && !app.admission.is_saturated(Instant::now()) {
            self.claim_and_dial().await;
        }
        if let Err(error) = store.finish_campaigns(campaigns.now_ms()).await {
            tracing::warn!(%error, "campaigns: could not mark finished campaigns");
        }
    }

    async fn claim_and_dial(&mut self) {
        let app = &self.app;
        let limits = ClaimLimits {
            owner: &app.instance_id,
            now_ms: app.campaigns.now_ms(),
            lease_ms: i64::try_from(app.config.campaigns.lease.as_millis()).unwrap_or(i64::MAX),
            max_live: u64::try_from(app.config.limits.max_concurrent_calls).unwrap_or(u64::MAX),
        };
        let claims = match app.campaigns.store.claim(&limits).await {
            Ok(claims) => claims,
            Err(error) => {
                tracing::warn!(%error, "campaigns: could not claim due contacts");
                return;
            }
        };
        let placed = join_all(claims.into_iter().map(|claim| place(app, claim))).await;
        let now = Instant::now();
        self.placed
            .extend(placed.into_iter().flatten().map(|id| (id, now)));
    }

    /// Closes the records of calls whose dialer stopped while placing them (see
    /// [`super::store::CampaignStore::unplaced_calls`]): `failed`, so that the next settle
    /// pass retries their contacts by the campaign's policy instead of leaving them
    /// `calling` until the crash reconciler notices the dead instance.
    async fn fail_unplaced_calls(&self) {
        let app = &self.app;
        let unplaced = match app
            .campaigns
            .store
            .unplaced_calls(app.campaigns.now_ms())
            .await
        {
            Ok(unplaced) => unplaced,
            Err(error) => {
                tracing::warn!(%error, "campaigns: could not look for calls left unplaced");
                return;
            }
        };
        for call_id in unplaced {
            tracing::warn!(call = %call_id, "campaigns: a call was left unplaced by a dialer that stopped; settling it as failed");
            if let Err(error) = app.store.fail(&call_id, UNPLACED).await {
                tracing::warn!(%error, call = %call_id, "campaigns: could not settle an unplaced call");
            }
        }
    }

    /// Gives back the slots of calls this instance placed that have ended (or whose slot has
    /// lapsed anyway).
    async fn release_ended_slots(&mut self) {
        self.placed
            .retain(|_, placed| placed.elapsed() < DIAL_TO_START);
        let ids: Vec<String> = self.placed.keys().cloned().collect();
        match self.app.campaigns.store.ended_calls(&ids).await {
            Ok(ended) => {
                for id in ended {
                    self.app.admission.release(&id);
                    self.placed.remove(&id);
                }
            }
            Err(error) => tracing::warn!(%error, "campaigns: could not check which calls ended"),
        }
    }
}

/// Calls one claimed contact through the same path as `POST /calls`: record, bind the record
/// to the contact, dial. Returns the call's id when the provider accepted it.
async fn place(app: &App, claim: Claim) -> Option<String> {
    let owner = app.instance_id.as_str();
    let campaigns = &app.campaigns;
    let retry_soon = || campaigns.now_ms() + millis(app.config.campaigns.poll);
    let Some(control) = app.providers.control(&claim.provider) else {
        tracing::warn!(campaign = %claim.campaign_id, provider = %claim.provider, "campaigns: the campaign's provider is not configured on this instance; its contacts wait");
        give_back(
            app,
            &claim,
            campaigns.now_ms() + NO_PROVIDER_RETRY_MS,
            false,
        )
        .await;
        return None;
    };
    let call = Outbound {
        control,
        from: claim.from.clone(),
        to: claim.to.clone(),
        prompt: claim.prompt.clone(),
        vars: claim.vars.clone(),
        campaign: Some(claim.campaign_id.clone()),
    };
    let recorded = match dial::record(app, call).await {
        Ok(recorded) => recorded,
        Err(ApiError::DoNotCall(_)) => {
            give_back(app, &claim, campaigns.now_ms(), true).await;
            return None;
        }
        Err(ApiError::Saturated(_)) => {
            give_back(app, &claim, retry_soon(), false).await;
            return None;
        }
        Err(error) => {
            tracing::warn!(%error, campaign = %claim.campaign_id, line = claim.line, "campaigns: could not record a call");
            give_back(app, &claim, retry_soon(), false).await;
            return None;
        }
    };
    let call_id = recorded.id().to_owned();
    match campaigns
        .store
        .bind(&claim, owner, &call_id, campaigns.now_ms())
        .await
    {
        Ok(true) => {}
        outcome => {
            if let Err(error) = &outcome {
                tracing::warn!(%error, campaign = %claim.campaign_id, line = claim.line, "campaigns: could not tie a call to its contact");
            }
            let reason = "not dialled: the campaign stopped, or its claim lapsed, before the call was placed";
            if let Err(error) = recorded.abandon(reason).await {
                tracing::warn!(%error, "campaigns: could not close an undialled call record");
            }
            give_back(app, &claim, campaigns.now_ms(), false).await;
            return None;
        }
    }
    match recorded.dial().await {
        Ok(_) => Some(call_id),
        Err(error) => {
            // The record is `failed` now; the next settle pass retries or fails the contact.
            tracing::warn!(%error, campaign = %claim.campaign_id, line = claim.line, "campaigns: the provider refused a call");
            None
        }
    }
}

async fn give_back(app: &App, claim: &Claim, due_ms: i64, skip: bool) {
    if let Err(error) = app
        .campaigns
        .store
        .give_back(claim, &app.instance_id, due_ms, skip)
        .await
    {
        // Its lease runs out and another pass frees it.
        tracing::warn!(%error, campaign = %claim.campaign_id, line = claim.line, "campaigns: could not give a claim back");
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

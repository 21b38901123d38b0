//! Campaigns: a durable outbound dialer that works through a contact list within each
//! contact's local calling hours, at a set pace, retrying busy and unanswered numbers after a
//! back-off, and never dialling a number on the do-not-call list.
//!
//! The queue lives in the records database ([`store`]), so a campaign survives restarts, and
//! several instances sharing PostgreSQL work through one list together without dialling any
//! contact twice. Each instance runs one [`dialer`] loop; the user drives campaigns through
//! [`api`]. Windows, back-off and leases all read one [`clock::Clock`].

pub mod api;
pub mod clock;
pub mod csv;
pub mod dialer;
pub mod dnc;
pub mod model;
pub mod store;
pub mod window;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::calls::CallStore;
use clock::Clock;
use store::CampaignStore;

/// What the API and the dialer share: the store, the clock, and a way to wake the dialer
/// when a campaign was created or resumed (rather than at its next poll).
#[derive(Debug)]
pub struct Campaigns {
    /// The campaigns' tables.
    pub store: CampaignStore,
    /// The dialer's time.
    pub clock: Arc<dyn Clock>,
    wake: Notify,
}

impl Campaigns {
    /// Campaigns kept beside the call records of `calls`, timed by `clock`.
    pub fn new(calls: &CallStore, clock: Arc<dyn Clock>) -> Self {
        Campaigns {
            store: CampaignStore::new(calls),
            clock,
            wake: Notify::new(),
        }
    }

    /// Now on the dialer's clock (unix ms).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Asks this instance's dialer to look for due contacts now.
    pub fn wake_dialer(&self) {
        self.wake.notify_one();
    }

    /// Resolves when [`Self::wake_dialer`] is called (or was, since the last wait).
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }
}

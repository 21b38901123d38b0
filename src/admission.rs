//! Admission control: how many calls the server takes at once.
//!
//! A call takes a slot from the moment we commit to it — the answer webhook for an inbound
//! call, `POST /calls` for an outbound one — as a *reservation* that expires if its media
//! stream never comes. A stream whose `start` proves its token turns the reservation into a
//! *live* call, held by a [`LiveCall`] guard for the rest of the call. Over the limit, answer
//! webhooks get the provider's polite refusal and `POST /calls` a 429, and no Gemini session
//! is ever opened. Slots are keyed by our call-record id (the provider's call id when no
//! record exists), so a replayed webhook does not take a second one.
//!
//! Nothing here is on the audio path: it is touched once per webhook, start and end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long an inbound call's slot is held between its answer webhook and its stream's
/// `start` (the stream token expires after the same time).
pub const ANSWER_TO_START: Duration = Duration::from_secs(60);
/// How long an outbound call's slot is held between `POST /calls` and its stream's `start`:
/// ringing (providers give up after about a minute) plus answering.
pub const DIAL_TO_START: Duration = Duration::from_secs(120);

/// The server is at its limit; the call is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("all {limit} call slots are taken")]
pub struct Saturated {
    /// The configured limit.
    pub limit: usize,
}

#[derive(Debug, Default)]
struct Slots {
    /// Reserved slots and when each lapses.
    reserved: HashMap<String, Instant>,
    /// Live calls by key, with the call record each one writes, for the shutdown report.
    live: HashMap<String, Option<String>>,
}

impl Slots {
    fn forget_lapsed(&mut self, now: Instant) {
        self.reserved.retain(|_, lapses| *lapses > now);
    }

    fn taken(&self) -> usize {
        self.reserved.len() + self.live.len()
    }
}

/// Slots for calls, shared by every route and call task.
#[derive(Debug)]
pub struct Admission {
    limit: usize,
    slots: Mutex<Slots>,
}

impl Admission {
    /// At most `limit` calls at once.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            slots: Mutex::new(Slots::default()),
        })
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        // A panic elsewhere while holding the lock leaves plain counters behind: still usable.
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The configured limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Holds a slot for `key` until `now + hold`, unless the server is full. A key that
    /// already holds a slot keeps it (and the later of the two lapse times).
    pub fn reserve(&self, key: &str, now: Instant, hold: Duration) -> Result<(), Saturated> {
        let mut slots = self.slots();
        slots.forget_lapsed(now);
        if slots.live.contains_key(key) {
            return Ok(());
        }
        let lapses = now + hold;
        if let Some(existing) = slots.reserved.get_mut(key) {
            *existing = (*existing).max(lapses);
            return Ok(());
        }
        if slots.taken() >= self.limit {
            return Err(Saturated { limit: self.limit });
        }
        slots.reserved.insert(key.to_owned(), lapses);
        Ok(())
    }

    /// Moves `from`'s reservation to `to`, keeping its lapse time: `POST /calls` takes its slot
    /// before the call record, whose id keys the call, exists. False if `from` holds none.
    pub fn rename(&self, from: &str, to: &str) -> bool {
        let mut slots = self.slots();
        let Some(lapses) = slots.reserved.remove(from) else {
            return false;
        };
        let kept = slots.reserved.entry(to.to_owned()).or_insert(lapses);
        *kept = (*kept).max(lapses);
        true
    }

    /// Gives back `key`'s reserved slot (the call ended before its stream started).
    pub fn release(&self, key: &str) {
        self.slots().reserved.remove(key);
    }

    /// Makes `key` a live call: its reservation becomes the live slot, or, without one, a free
    /// slot is taken. The slot is held until the returned guard drops.
    pub fn admit(
        self: &Arc<Self>,
        key: &str,
        record: Option<String>,
        now: Instant,
    ) -> Result<LiveCall, Saturated> {
        let mut slots = self.slots();
        slots.forget_lapsed(now);
        if slots.live.contains_key(key) {
            // One key, one live call: a second stream for the same call is not a new call.
            return Err(Saturated { limit: self.limit });
        }
        if slots.reserved.remove(key).is_none() && slots.taken() >= self.limit {
            return Err(Saturated { limit: self.limit });
        }
        slots.live.insert(key.to_owned(), record);
        Ok(LiveCall {
            admission: Arc::clone(self),
            key: key.to_owned(),
        })
    }

    /// Calls whose stream has started and not yet ended.
    pub fn live(&self) -> usize {
        self.slots().live.len()
    }

    /// True when no new call would be admitted now.
    pub fn is_saturated(&self, now: Instant) -> bool {
        let mut slots = self.slots();
        slots.forget_lapsed(now);
        slots.taken() >= self.limit
    }

    /// The call records of live calls (for the record of a shutdown that had to cut them).
    pub fn live_records(&self) -> Vec<String> {
        self.slots().live.values().flatten().cloned().collect()
    }
}

/// A live call's slot; given back when dropped, however the call ends.
#[derive(Debug)]
pub struct LiveCall {
    admission: Arc<Admission>,
    key: String,
}

impl Drop for LiveCall {
    fn drop(&mut self) {
        self.admission.slots().live.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_secs(60);

    #[test]
    fn the_call_over_the_limit_is_refused() {
        let admission = Admission::new(2);
        let now = Instant::now();
        assert!(admission.reserve("a", now, HOLD).is_ok());
        assert!(admission.reserve("b", now, HOLD).is_ok());
        assert_eq!(
            admission.reserve("c", now, HOLD),
            Err(Saturated { limit: 2 })
        );
        assert!(admission.is_saturated(now));
        assert!(
            admission.reserve("a", now, HOLD).is_ok(),
            "a replayed webhook keeps its slot"
        );
    }

    #[test]
    fn a_reservation_becomes_the_live_slot_and_comes_back_at_the_end() {
        let admission = Admission::new(1);
        let now = Instant::now();
        admission.reserve("a", now, HOLD).unwrap();
        let call = admission.admit("a", Some("c1".into()), now).unwrap();
        assert_eq!(admission.live(), 1);
        assert_eq!(admission.live_records(), ["c1"]);
        assert!(admission.admit("b", None, now).is_err(), "full");
        assert!(
            admission.admit("a", None, now).is_err(),
            "a second stream for a live call is refused"
        );
        drop(call);
        assert_eq!(admission.live(), 0);
        assert!(admission.admit("b", None, now).is_ok());
    }

    #[test]
    fn a_renamed_reservation_keeps_its_one_slot() {
        let admission = Admission::new(1);
        let now = Instant::now();
        admission.reserve("provisional", now, HOLD).unwrap();
        assert!(admission.rename("provisional", "c1"));
        assert!(admission.is_saturated(now), "still one slot taken");
        assert!(
            admission.admit("c1", None, now).is_ok(),
            "under its new key"
        );
        assert!(
            !admission.rename("provisional", "c2"),
            "nothing left to move"
        );
    }

    #[test]
    fn reservations_lapse_when_no_stream_comes() {
        let admission = Admission::new(1);
        let now = Instant::now();
        admission.reserve("a", now, HOLD).unwrap();
        assert!(admission.reserve("b", now + HOLD / 2, HOLD).is_err());
        assert!(admission.reserve("b", now + HOLD, HOLD).is_ok());
        admission.release("b");
        assert!(!admission.is_saturated(now + HOLD));
    }
}

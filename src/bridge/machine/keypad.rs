//! The caller's keypad: digits are gathered into one group, ended by `#` or a pause, and
//! the group reaches the model as typed text ("The caller pressed 4 2 #") — a menu choice,
//! an account number or a PIN is one answer, not one model turn per key.

use std::time::{Duration, Instant};

use super::timers::{Timer, Timers};
use crate::config::DtmfMode;

/// A pause this long after a key ends the group.
pub const KEYPAD_PAUSE: Duration = Duration::from_millis(1_500);
/// A group this long is sent without waiting: nobody types more in one answer, and a
/// stream sending endless digits must not grow memory.
const MAX_GROUP_KEYS: usize = 32;
/// Groups kept while the model cannot take text (a session reopening); more are dropped.
const MAX_UNSENT_GROUPS: usize = 4;

/// Keys pressed and not yet sent.
#[derive(Debug, Default)]
pub struct Keypad {
    mode: DtmfMode,
    keys: Vec<char>,
    /// Finished groups waiting for the model to be able to take text.
    unsent: Vec<String>,
}

impl Keypad {
    /// A keypad whose digits go where `mode` says.
    pub fn new(mode: DtmfMode) -> Self {
        Self {
            mode,
            ..Self::default()
        }
    }

    /// A key press reported by the provider at `now`. Returns the finished group (keys
    /// separated by spaces) when `#` ends it or it is full; otherwise waits for a pause.
    pub fn press(&mut self, digit: &str, now: Instant, timers: &mut Timers) -> Option<String> {
        if self.mode == DtmfMode::Off {
            tracing::info!(%digit, "caller pressed a key (DTMF=off: not passed on)");
            return None;
        }
        let Some(key) = keypad_key(digit) else {
            tracing::warn!(%digit, "ignoring a keypress that is not a keypad key");
            return None;
        };
        self.keys.push(key);
        if key == '#' || self.keys.len() >= MAX_GROUP_KEYS {
            timers.clear(Timer::Keypad);
            return self.take();
        }
        timers.set(Timer::Keypad, now + KEYPAD_PAUSE);
        None
    }

    /// The pause after the last key has elapsed: the group is finished.
    pub fn pause_elapsed(&mut self) -> Option<String> {
        self.take()
    }

    /// Keeps a finished group until the model can take it.
    pub fn keep_unsent(&mut self, group: String) {
        if self.unsent.len() < MAX_UNSENT_GROUPS {
            self.unsent.push(group);
        } else {
            tracing::warn!(%group, "dropping keypad digits: the model could not take them");
        }
    }

    /// Groups kept while the model could not take them, oldest first.
    pub fn take_unsent(&mut self) -> Vec<String> {
        std::mem::take(&mut self.unsent)
    }

    fn take(&mut self) -> Option<String> {
        if self.keys.is_empty() {
            return None;
        }
        let group = self
            .keys
            .drain(..)
            .map(String::from)
            .collect::<Vec<_>>()
            .join(" ");
        Some(group)
    }
}

/// What the model is told about a group.
pub fn model_text(group: &str) -> String {
    format!("The caller pressed {group}")
}

/// The transcript's caller line for a group.
pub fn transcript_line(group: &str) -> String {
    format!("[pressed {group}]")
}

/// The key a provider's `digit` names: `0`–`9`, `*`, `#`, `A`–`D` (either case).
fn keypad_key(digit: &str) -> Option<char> {
    let mut chars = digit.trim().chars();
    let key = chars.next()?.to_ascii_uppercase();
    let valid = key.is_ascii_digit() || matches!(key, '*' | '#' | 'A'..='D');
    (valid && chars.next().is_none()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_ends_a_group_at_once() {
        let now = Instant::now();
        let mut timers = Timers::default();
        let mut keypad = Keypad::new(DtmfMode::Model);
        assert_eq!(keypad.press("4", now, &mut timers), None);
        assert_eq!(timers.get(Timer::Keypad), Some(now + KEYPAD_PAUSE));
        assert_eq!(keypad.press("2", now, &mut timers), None);
        assert_eq!(
            keypad.press("#", now, &mut timers).as_deref(),
            Some("4 2 #")
        );
        assert_eq!(timers.get(Timer::Keypad), None);
        assert_eq!(keypad.pause_elapsed(), None, "nothing left over");
    }

    #[test]
    fn a_pause_ends_a_group_and_each_key_restarts_the_wait() {
        let start = Instant::now();
        let mut timers = Timers::default();
        let mut keypad = Keypad::new(DtmfMode::Model);
        keypad.press("1", start, &mut timers);
        let later = start + Duration::from_millis(1_000);
        keypad.press("*", later, &mut timers);
        assert_eq!(timers.get(Timer::Keypad), Some(later + KEYPAD_PAUSE));
        assert_eq!(keypad.pause_elapsed().as_deref(), Some("1 *"));
    }

    #[test]
    fn only_keypad_keys_count_and_groups_are_bounded() {
        let now = Instant::now();
        let mut timers = Timers::default();
        let mut keypad = Keypad::new(DtmfMode::Model);
        for bad in ["", "12", "E", "x", "🙂"] {
            assert_eq!(keypad.press(bad, now, &mut timers), None, "{bad:?}");
        }
        assert_eq!(keypad.pause_elapsed(), None);
        let mut sent = None;
        for _ in 0..MAX_GROUP_KEYS {
            sent = keypad.press("d", now, &mut timers);
        }
        assert_eq!(sent.map(|g| g.split(' ').count()), Some(MAX_GROUP_KEYS));
        assert_eq!(model_text("4 2 #"), "The caller pressed 4 2 #");
    }

    #[test]
    fn dtmf_off_passes_nothing_on() {
        let mut timers = Timers::default();
        let mut keypad = Keypad::new(DtmfMode::Off);
        assert_eq!(keypad.press("#", Instant::now(), &mut timers), None);
        assert_eq!(timers.next(), None);
    }
}

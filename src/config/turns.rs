//! Who speaks first when a call connects (`GREETING`), and what an outbound call does when
//! an answering machine picks up (`ON_MACHINE`).

use std::time::Duration;

use super::ConfigError;
use super::vars::Vars;
use crate::telephony::Direction;

/// Default for `GREETING_SILENCE_MS`: how long a callee who says nothing is waited for.
const DEFAULT_GREETING_SILENCE_MS: u64 = 3_000;
/// Bounds of `GREETING_SILENCE_MS`: shorter is hardly waiting, longer is dead air.
const GREETING_SILENCE_RANGE_MS: std::ops::RangeInclusive<u64> = 100..=10_000;

/// Who speaks first once the call is connected (`GREETING`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GreetingPolicy {
    /// The agent greets as soon as its session is ready (what a caller who dialled expects).
    AgentFirst,
    /// The agent waits until the callee has said something (their "Hello?") and paused, or
    /// has stayed silent for `GREETING_SILENCE_MS`, so it neither talks over them nor
    /// speaks into an answering machine's greeting while detection decides.
    CalleeFirst,
}

impl GreetingPolicy {
    /// `agent_first` or `callee_first`, as the variable spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            GreetingPolicy::AgentFirst => "agent_first",
            GreetingPolicy::CalleeFirst => "callee_first",
        }
    }
}

/// What an outbound call answered by a machine does (`ON_MACHINE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnMachine {
    /// Hang up without a word.
    #[default]
    HangUp,
    /// Wait for the end of the machine's greeting (its beep), leave the message of
    /// `prompts/voicemail.md`, then hang up.
    Message,
}

impl OnMachine {
    /// `hangup` or `message`, as the variable spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            OnMachine::HangUp => "hangup",
            OnMachine::Message => "message",
        }
    }
}

/// How a call's first turns go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnsConfig {
    /// `GREETING`, or `None` for the default of each direction.
    pub greeting: Option<GreetingPolicy>,
    /// `GREETING_SILENCE_MS`: a callee silent this long is greeted anyway.
    pub greeting_silence: Duration,
    /// `ON_MACHINE`.
    pub on_machine: OnMachine,
}

impl Default for TurnsConfig {
    fn default() -> Self {
        Self {
            greeting: None,
            greeting_silence: Duration::from_millis(DEFAULT_GREETING_SILENCE_MS),
            on_machine: OnMachine::HangUp,
        }
    }
}

impl TurnsConfig {
    /// Who speaks first on a call of `direction`: `GREETING` when set, else the agent on
    /// calls people made to us and the callee on calls we placed.
    pub fn greeting_for(&self, direction: Direction) -> GreetingPolicy {
        self.greeting.unwrap_or(match direction {
            Direction::Inbound => GreetingPolicy::AgentFirst,
            Direction::Outbound => GreetingPolicy::CalleeFirst,
        })
    }
}

/// Reads `GREETING`, `GREETING_SILENCE_MS` and `ON_MACHINE`.
pub(super) fn read<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
) -> Result<TurnsConfig, ConfigError> {
    let greeting = match vars
        .get("GREETING")
        .map(|v| v.to_ascii_lowercase())
        .as_deref()
    {
        None => None,
        Some("agent_first") => Some(GreetingPolicy::AgentFirst),
        Some("callee_first") => Some(GreetingPolicy::CalleeFirst),
        Some(other) => {
            return Err(ConfigError::new(
                "GREETING",
                format!(
                    "`{other}` is not a greeting order; use `agent_first` (the agent speaks as soon as the call connects) or `callee_first` (it waits for the other person's hello), or leave it unset for agent_first inbound and callee_first outbound"
                ),
            ));
        }
    };
    let silence_ms = vars.number("GREETING_SILENCE_MS", DEFAULT_GREETING_SILENCE_MS)?;
    if !GREETING_SILENCE_RANGE_MS.contains(&silence_ms) {
        return Err(ConfigError::new(
            "GREETING_SILENCE_MS",
            format!(
                "{silence_ms} is outside {}..={} milliseconds; e.g. 3000",
                GREETING_SILENCE_RANGE_MS.start(),
                GREETING_SILENCE_RANGE_MS.end()
            ),
        ));
    }
    let on_machine = match vars
        .get("ON_MACHINE")
        .map(|v| v.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("hangup") => OnMachine::HangUp,
        Some("message") => OnMachine::Message,
        Some(other) => {
            return Err(ConfigError::new(
                "ON_MACHINE",
                format!(
                    "`{other}` is not a voicemail policy; use `hangup` (end the call without a word) or `message` (leave prompts/voicemail.md after the beep)"
                ),
            ));
        }
    };
    Ok(TurnsConfig {
        greeting,
        greeting_silence: Duration::from_millis(silence_ms),
        on_machine,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read_with(pairs: &[(&str, &str)]) -> Result<TurnsConfig, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        read(&Vars::new(|name: &str| map.get(name).cloned()))
    }

    #[test]
    fn defaults_greet_by_direction_and_hang_up_on_machines() {
        let turns = read_with(&[]).expect("defaults");
        assert_eq!(turns, TurnsConfig::default());
        assert_eq!(
            turns.greeting_for(Direction::Inbound),
            GreetingPolicy::AgentFirst
        );
        assert_eq!(
            turns.greeting_for(Direction::Outbound),
            GreetingPolicy::CalleeFirst
        );
        assert_eq!(turns.greeting_silence, Duration::from_secs(3));
        assert_eq!(turns.on_machine, OnMachine::HangUp);
    }

    #[test]
    fn a_set_greeting_applies_to_both_directions() {
        let turns =
            read_with(&[("GREETING", "callee_first"), ("ON_MACHINE", "message")]).expect("valid");
        assert_eq!(
            turns.greeting_for(Direction::Inbound),
            GreetingPolicy::CalleeFirst
        );
        assert_eq!(turns.on_machine, OnMachine::Message);
        let turns = read_with(&[("GREETING", "AGENT_FIRST")]).expect("valid");
        assert_eq!(
            turns.greeting_for(Direction::Outbound),
            GreetingPolicy::AgentFirst
        );
    }

    #[test]
    fn bad_values_name_the_variable_and_the_choices() {
        let err = read_with(&[("GREETING", "caller_first")]).unwrap_err();
        assert_eq!(err.var, "GREETING");
        assert!(err.to_string().contains("callee_first"), "{err}");
        let err = read_with(&[("ON_MACHINE", "voicemail")]).unwrap_err();
        assert_eq!(err.var, "ON_MACHINE");
        assert!(err.to_string().contains("`message`"), "{err}");
        let err = read_with(&[("GREETING_SILENCE_MS", "60000")]).unwrap_err();
        assert_eq!(err.var, "GREETING_SILENCE_MS");
    }
}

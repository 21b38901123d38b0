//! The conversation line: how Gemini detects turns, which expressive options every session
//! asks for (and on which endpoint), where keypad digits go and when a silent line ends.
//! Options the model cannot take never get here: start-up refuses them, and so does the
//! configuration line.

use super::Check;
use crate::config::{Config, DtmfMode, LiveOptions, ProactiveAudio, TurnDetection};

const AREA: &str = "conversation";

/// One ok line describing the conversation settings.
pub(super) fn check(config: &Config) -> Check {
    let conversation = &config.conversation;
    let mut parts = Vec::new();
    if let Some(gemini) = &config.gemini {
        parts.push(turn_detection(&conversation.live.turn_detection));
        parts.extend(expressive(
            &conversation.live,
            &gemini.model,
            &gemini.live_url,
        ));
    }
    parts.push(match conversation.dtmf {
        DtmfMode::Model => "keypad digits reach the model as text".to_owned(),
        DtmfMode::Off => "keypad digits are only logged (DTMF=off)".to_owned(),
    });
    parts.push(format!(
        "a silent line is checked on after {} s and ended after {} s",
        conversation.idle.nudge_after.as_secs(),
        conversation.idle.hang_up_after.as_secs()
    ));
    Check::ok(AREA, parts.join("; "))
}

fn turn_detection(turns: &TurnDetection) -> String {
    if turns.is_default() {
        return "turn detection: the model's defaults".to_owned();
    }
    let mut set = Vec::new();
    if let Some(start) = turns.start_sensitivity {
        set.push(format!("start sensitivity {}", start.as_str()));
    }
    if let Some(end) = turns.end_sensitivity {
        set.push(format!("end sensitivity {}", end.as_str()));
    }
    if let Some(ms) = turns.prefix_padding_ms {
        set.push(format!("prefix padding {ms} ms"));
    }
    if let Some(ms) = turns.silence_ms {
        set.push(format!("end of turn after {ms} ms of silence"));
    }
    format!("turn detection: {}", set.join(", "))
}

fn expressive(live: &LiveOptions, model: &str, url: &str) -> Option<String> {
    let mut on = Vec::new();
    if live.affective_dialog {
        on.push("affective dialog".to_owned());
    }
    match live.proactive_audio {
        ProactiveAudio::Off => {}
        ProactiveAudio::On => on.push("proactive audio".to_owned()),
        ProactiveAudio::BuiltIn => on.push(format!(
            "proactive audio (built into {model}, so GEMINI_PROACTIVE_AUDIO sends nothing)"
        )),
    }
    if on.is_empty() {
        return None;
    }
    Some(format!("{} on {model} via {url}", on.join(" and ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Outcome;

    fn line(extra: &[(&str, &str)]) -> Check {
        let vars: Vec<(&str, &str)> = [
            ("GEMINI_API_KEY", "k"),
            ("PUBLIC_URL", "https://x.io"),
            ("GEMINI_MODEL", "gemini-2.5-flash-native-audio-latest"),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
        let lookup = |name: &str| {
            vars.iter()
                .rev()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        check(&Config::from_lookup(lookup).expect("valid configuration"))
    }

    #[test]
    fn the_line_names_what_every_session_asks_for() {
        let plain = line(&[]);
        assert_eq!(plain.outcome, Outcome::Ok);
        assert!(
            plain
                .detail
                .starts_with("turn detection: the model's defaults; keypad")
        );
        let tuned = line(&[
            ("GEMINI_VAD_END_SENSITIVITY", "low"),
            ("GEMINI_VAD_SILENCE_MS", "800"),
            ("GEMINI_AFFECTIVE_DIALOG", "true"),
            ("DTMF", "off"),
        ]);
        assert!(
            tuned.detail.contains(
                "turn detection: end sensitivity low, end of turn after 800 ms of silence"
            ),
            "{}",
            tuned.detail
        );
        assert!(tuned.detail.contains("affective dialog on gemini-2.5-flash-native-audio-latest via wss://generativelanguage.googleapis.com/ws/google.ai.generativelanguage.v1alpha."));
        assert!(tuned.detail.contains("DTMF=off"));
    }
}

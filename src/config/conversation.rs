//! How calls converse: Gemini's turn detection, the expressive options of native-audio
//! models, keypad digits, what happens on a silent line, and how far agent audio runs ahead
//! of the caller.

use std::time::Duration;

use super::vars::Vars;
use super::{ConfigError, GeminiBackend, GeminiConfig};
use crate::gemini::expressive::{self, Support};

/// The AI Studio v1alpha BidiGenerateContent endpoint: the expressive options are alpha
/// fields there, refused on v1beta.
pub const V1ALPHA_GEMINI_LIVE_URL: &str = "wss://generativelanguage.googleapis.com/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContent";
/// Host of the AI Studio Live endpoints, whose API version is checked.
const AI_STUDIO_HOST: &str = "generativelanguage.googleapis.com";
/// Default for `IDLE_NUDGE_SECONDS`.
const DEFAULT_IDLE_NUDGE_SECS: u64 = 10;
/// Default for `IDLE_HANGUP_SECONDS`.
const DEFAULT_IDLE_HANGUP_SECS: u64 = 30;
/// Longest timing a VAD variable takes: beyond this a caller would wait in silence.
const MAX_VAD_MS: u64 = 10_000;
/// Default for `PLAYOUT_LEAD_MS`: enough to ride out a late packet or a busy moment on the
/// server, little enough that a barge-in drops a fifth of a second at most.
const DEFAULT_PLAYOUT_LEAD_MS: u64 = 200;
/// The shortest lead: below it one late wake-up empties the provider's buffer (a gap).
const MIN_PLAYOUT_LEAD_MS: u64 = 100;
/// The longest lead: beyond it a barge-in leaves the caller hearing the agent too long.
const MAX_PLAYOUT_LEAD_MS: u64 = 2_000;

/// Gemini's automatic turn detection (`setup.realtimeInputConfig.automaticActivityDetection`);
/// only the fields set here are sent, the model's defaults stand for the rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TurnDetection {
    /// `GEMINI_VAD_START_SENSITIVITY`: how readily speech is taken to have started.
    pub start_sensitivity: Option<Sensitivity>,
    /// `GEMINI_VAD_END_SENSITIVITY`: how readily speech is taken to have ended.
    pub end_sensitivity: Option<Sensitivity>,
    /// `GEMINI_VAD_PREFIX_PADDING_MS`: speech needed before its start is committed.
    pub prefix_padding_ms: Option<u32>,
    /// `GEMINI_VAD_SILENCE_MS`: silence needed before the caller's turn ends.
    pub silence_ms: Option<u32>,
}

impl TurnDetection {
    /// True when nothing is set, so nothing is sent.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// A sensitivity of Gemini's voice activity detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sensitivity {
    /// Reacts sooner: more detections (start) or shorter turns (end).
    High,
    /// Reacts later: fewer false starts (start) or fewer cut-offs (end).
    Low,
}

impl Sensitivity {
    /// The `StartSensitivity` enum value.
    pub fn start_enum(self) -> &'static str {
        match self {
            Sensitivity::High => "START_SENSITIVITY_HIGH",
            Sensitivity::Low => "START_SENSITIVITY_LOW",
        }
    }

    /// The `EndSensitivity` enum value.
    pub fn end_enum(self) -> &'static str {
        match self {
            Sensitivity::High => "END_SENSITIVITY_HIGH",
            Sensitivity::Low => "END_SENSITIVITY_LOW",
        }
    }

    /// `high` or `low`, as the variable spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Sensitivity::High => "high",
            Sensitivity::Low => "low",
        }
    }
}

/// What a `GEMINI_PROACTIVE_AUDIO=true` becomes for the configured model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProactiveAudio {
    /// Not asked for.
    #[default]
    Off,
    /// Sent as `setup.proactivity.proactiveAudio: true`.
    On,
    /// The model always listens this way and refuses the field, so it is not sent.
    BuiltIn,
}

/// What the setup of every session asks of the model beyond voice and prompt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveOptions {
    /// Turn detection tuning.
    pub turn_detection: TurnDetection,
    /// `GEMINI_AFFECTIVE_DIALOG`: sent as `generationConfig.enableAffectiveDialog`.
    pub affective_dialog: bool,
    /// `GEMINI_PROACTIVE_AUDIO`.
    pub proactive_audio: ProactiveAudio,
}

/// Where the caller's keypad digits go (`DTMF`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DtmfMode {
    /// To the model, as text ("The caller pressed 4 2 #").
    #[default]
    Model,
    /// Nowhere (logged only).
    Off,
}

/// What a silent line leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleLimits {
    /// `IDLE_NUDGE_SECONDS`: caller and agent silent this long → the model checks on the caller.
    pub nudge_after: Duration,
    /// `IDLE_HANGUP_SECONDS`: silent this long → a short goodbye, then hang-up.
    pub hang_up_after: Duration,
}

impl Default for ConversationConfig {
    fn default() -> Self {
        Self {
            live: LiveOptions::default(),
            dtmf: DtmfMode::default(),
            idle: IdleLimits::default(),
            playout_lead: Some(Duration::from_millis(DEFAULT_PLAYOUT_LEAD_MS)),
        }
    }
}

impl Default for IdleLimits {
    fn default() -> Self {
        Self {
            nudge_after: Duration::from_secs(DEFAULT_IDLE_NUDGE_SECS),
            hang_up_after: Duration::from_secs(DEFAULT_IDLE_HANGUP_SECS),
        }
    }
}

/// How calls converse.
#[derive(Debug, Clone)]
pub struct ConversationConfig {
    /// Setup options for every Gemini session.
    pub live: LiveOptions,
    /// Keypad digits.
    pub dtmf: DtmfMode,
    /// Silent-line handling.
    pub idle: IdleLimits,
    /// `PLAYOUT_LEAD_MS`: how far ahead of real time agent audio is sent to the provider;
    /// `None` (set to 0) sends it as fast as the model produces it.
    pub playout_lead: Option<Duration>,
}

/// Reads the conversation section. With an expressive option set it also checks that the
/// model takes it and, on AI Studio, points the default endpoint at v1alpha (where those
/// fields live) unless `GEMINI_LIVE_URL` names one.
pub(super) fn read<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
    gemini: Option<&mut GeminiConfig>,
) -> Result<ConversationConfig, ConfigError> {
    let mut live = LiveOptions {
        turn_detection: turn_detection(vars)?,
        affective_dialog: vars.flag("GEMINI_AFFECTIVE_DIALOG", false)?,
        proactive_audio: match vars.flag("GEMINI_PROACTIVE_AUDIO", false)? {
            true => ProactiveAudio::On,
            false => ProactiveAudio::Off,
        },
    };
    if let Some(gemini) = gemini {
        resolve_expressive(vars, gemini, &mut live)?;
    }
    Ok(ConversationConfig {
        live,
        dtmf: dtmf(vars)?,
        idle: idle(vars)?,
        playout_lead: playout_lead(vars)?,
    })
}

fn playout_lead<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
) -> Result<Option<Duration>, ConfigError> {
    const NAME: &str = "PLAYOUT_LEAD_MS";
    match vars.number(NAME, DEFAULT_PLAYOUT_LEAD_MS)? {
        0 => Ok(None),
        ms if (MIN_PLAYOUT_LEAD_MS..=MAX_PLAYOUT_LEAD_MS).contains(&ms) => {
            Ok(Some(Duration::from_millis(ms)))
        }
        ms => Err(ConfigError::new(
            NAME,
            format!(
                "{ms} ms is outside {MIN_PLAYOUT_LEAD_MS}–{MAX_PLAYOUT_LEAD_MS}: below, the provider's buffer runs dry and the caller hears gaps; above, a caller who interrupts hears the agent go on too long. 200 suits most lines; 0 turns pacing off"
            ),
        )),
    }
}

fn turn_detection<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
) -> Result<TurnDetection, ConfigError> {
    Ok(TurnDetection {
        start_sensitivity: sensitivity(vars, "GEMINI_VAD_START_SENSITIVITY")?,
        end_sensitivity: sensitivity(vars, "GEMINI_VAD_END_SENSITIVITY")?,
        prefix_padding_ms: vad_millis(vars, "GEMINI_VAD_PREFIX_PADDING_MS")?,
        silence_ms: vad_millis(vars, "GEMINI_VAD_SILENCE_MS")?,
    })
}

fn sensitivity<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
    name: &'static str,
) -> Result<Option<Sensitivity>, ConfigError> {
    match vars.get(name).map(|v| v.to_ascii_lowercase()).as_deref() {
        None => Ok(None),
        Some("high") => Ok(Some(Sensitivity::High)),
        Some("low") => Ok(Some(Sensitivity::Low)),
        Some(other) => Err(ConfigError::new(
            name,
            format!(
                "`{other}` is not a sensitivity; use `high` or `low` (or leave it unset for the model's default)"
            ),
        )),
    }
}

/// Whole milliseconds from 0 to [`MAX_VAD_MS`] (0 is meaningful: no padding).
fn vad_millis<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
    name: &'static str,
) -> Result<Option<u32>, ConfigError> {
    let Some(value) = vars.get(name) else {
        return Ok(None);
    };
    match value.parse::<u64>() {
        Ok(ms) if ms <= MAX_VAD_MS => Ok(Some(ms as u32)),
        _ => Err(ConfigError::new(
            name,
            format!(
                "`{value}` is not a whole number of milliseconds from 0 to {MAX_VAD_MS}; e.g. 500"
            ),
        )),
    }
}

/// Checks the expressive options against the model and the endpoint; see [`read`].
fn resolve_expressive<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
    gemini: &mut GeminiConfig,
    live: &mut LiveOptions,
) -> Result<(), ConfigError> {
    if live.affective_dialog {
        match expressive::affective_dialog(&gemini.model) {
            Support::Yes => {}
            Support::BuiltIn | Support::No => {
                return Err(ConfigError::new(
                    "GEMINI_AFFECTIVE_DIALOG",
                    format!(
                        "{} does not take affective dialog (only the 2.5 native-audio models do, e.g. {}); set GEMINI_MODEL to one of those or unset GEMINI_AFFECTIVE_DIALOG",
                        gemini.model,
                        expressive::example_model(gemini)
                    ),
                ));
            }
        }
    }
    if live.proactive_audio == ProactiveAudio::On {
        live.proactive_audio = match expressive::proactive_audio(&gemini.model) {
            Support::Yes => ProactiveAudio::On,
            Support::BuiltIn => ProactiveAudio::BuiltIn,
            Support::No => {
                return Err(ConfigError::new(
                    "GEMINI_PROACTIVE_AUDIO",
                    format!(
                        "{} does not take proactive audio (the 2.5 native-audio models do, e.g. {}, and gemini-3.8-live always listens this way); set GEMINI_MODEL to one of those or unset GEMINI_PROACTIVE_AUDIO",
                        gemini.model,
                        expressive::example_model(gemini)
                    ),
                ));
            }
        };
    }
    let sends_alpha_fields = live.affective_dialog || live.proactive_audio == ProactiveAudio::On;
    if sends_alpha_fields && matches!(gemini.backend, GeminiBackend::AiStudio) {
        let flag = if live.affective_dialog {
            "GEMINI_AFFECTIVE_DIALOG"
        } else {
            "GEMINI_PROACTIVE_AUDIO"
        };
        use_v1alpha(vars, gemini, flag)?;
    }
    Ok(())
}

/// On AI Studio the expressive fields exist only in v1alpha: the default endpoint becomes
/// v1alpha, and an explicit Google endpoint of another version is refused.
fn use_v1alpha<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
    gemini: &mut GeminiConfig,
    flag: &str,
) -> Result<(), ConfigError> {
    if vars.get("GEMINI_LIVE_URL").is_none() {
        gemini.live_url = V1ALPHA_GEMINI_LIVE_URL.to_owned();
        return Ok(());
    }
    let on_google = gemini.live_url.contains(AI_STUDIO_HOST);
    if on_google && !gemini.live_url.contains(".v1alpha.") {
        return Err(ConfigError::new(
            "GEMINI_LIVE_URL",
            format!(
                "points at an AI Studio API version without the expressive options that {flag} asks for; unset GEMINI_LIVE_URL (the v1alpha endpoint is then used) or set it to {V1ALPHA_GEMINI_LIVE_URL}"
            ),
        ));
    }
    Ok(())
}

fn dtmf<F: Fn(&str) -> Option<String>>(vars: &Vars<F>) -> Result<DtmfMode, ConfigError> {
    match vars.get("DTMF").as_deref() {
        None | Some("model") => Ok(DtmfMode::Model),
        Some("off") => Ok(DtmfMode::Off),
        Some(other) => Err(ConfigError::new(
            "DTMF",
            format!(
                "`{other}` is not a keypad mode; use `model` (digits reach the model as text) or `off`"
            ),
        )),
    }
}

fn idle<F: Fn(&str) -> Option<String>>(vars: &Vars<F>) -> Result<IdleLimits, ConfigError> {
    let limits = IdleLimits {
        nudge_after: vars.seconds("IDLE_NUDGE_SECONDS", DEFAULT_IDLE_NUDGE_SECS)?,
        hang_up_after: vars.seconds("IDLE_HANGUP_SECONDS", DEFAULT_IDLE_HANGUP_SECS)?,
    };
    if limits.hang_up_after <= limits.nudge_after {
        return Err(ConfigError::new(
            "IDLE_HANGUP_SECONDS",
            format!(
                "{} s is not longer than IDLE_NUDGE_SECONDS ({} s); the caller must be asked whether they are still there before the call is ended",
                limits.hang_up_after.as_secs(),
                limits.nudge_after.as_secs()
            ),
        ));
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, DEFAULT_GEMINI_LIVE_URL};
    use std::collections::HashMap;

    fn config(extra: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut map: HashMap<String, String> = [
            ("GEMINI_API_KEY", "k"),
            ("PUBLIC_URL", "https://example.ngrok.app"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        map.retain(|_, v| !v.is_empty());
        Config::from_lookup(|name| map.get(name).cloned())
    }

    const NATIVE_2_5: (&str, &str) = ("GEMINI_MODEL", "gemini-2.5-flash-native-audio-latest");

    #[test]
    fn unset_controls_send_nothing_and_keep_the_defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.conversation.live, LiveOptions::default());
        assert_eq!(c.conversation.dtmf, DtmfMode::Model);
        assert_eq!(c.conversation.idle, IdleLimits::default());
        assert_eq!(c.gemini.unwrap().live_url, DEFAULT_GEMINI_LIVE_URL);
    }

    #[test]
    fn turn_detection_reads_each_variable() {
        let c = config(&[
            ("GEMINI_VAD_START_SENSITIVITY", "LOW"),
            ("GEMINI_VAD_END_SENSITIVITY", "high"),
            ("GEMINI_VAD_PREFIX_PADDING_MS", "0"),
            ("GEMINI_VAD_SILENCE_MS", "700"),
        ])
        .unwrap();
        assert_eq!(
            c.conversation.live.turn_detection,
            TurnDetection {
                start_sensitivity: Some(Sensitivity::Low),
                end_sensitivity: Some(Sensitivity::High),
                prefix_padding_ms: Some(0),
                silence_ms: Some(700),
            }
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("GEMINI_VAD_START_SENSITIVITY", "medium")],
                "GEMINI_VAD_START_SENSITIVITY",
            ),
            (
                &[("GEMINI_VAD_END_SENSITIVITY", "END_SENSITIVITY_LOW")],
                "GEMINI_VAD_END_SENSITIVITY",
            ),
            (
                &[("GEMINI_VAD_PREFIX_PADDING_MS", "-20")],
                "GEMINI_VAD_PREFIX_PADDING_MS",
            ),
            (&[("GEMINI_VAD_SILENCE_MS", "0.5")], "GEMINI_VAD_SILENCE_MS"),
            (
                &[("GEMINI_VAD_SILENCE_MS", "60000")],
                "GEMINI_VAD_SILENCE_MS",
            ),
            (
                &[("GEMINI_AFFECTIVE_DIALOG", "yes")],
                "GEMINI_AFFECTIVE_DIALOG",
            ),
            (&[("DTMF", "tones")], "DTMF"),
            (&[("PLAYOUT_LEAD_MS", "50")], "PLAYOUT_LEAD_MS"),
            (&[("PLAYOUT_LEAD_MS", "5000")], "PLAYOUT_LEAD_MS"),
            (&[("PLAYOUT_LEAD_MS", "fast")], "PLAYOUT_LEAD_MS"),
            (&[("IDLE_NUDGE_SECONDS", "0")], "IDLE_NUDGE_SECONDS"),
            (
                &[("IDLE_NUDGE_SECONDS", "20"), ("IDLE_HANGUP_SECONDS", "20")],
                "IDLE_HANGUP_SECONDS",
            ),
        ];
        for (extra, var) in cases {
            assert_eq!(config(extra).unwrap_err().var, *var, "{extra:?}");
        }
    }

    #[test]
    fn playout_lead_defaults_to_200_ms_and_0_turns_pacing_off() {
        let lead = |extra: &[(&str, &str)]| config(extra).unwrap().conversation.playout_lead;
        assert_eq!(lead(&[]), Some(Duration::from_millis(200)));
        assert_eq!(
            lead(&[("PLAYOUT_LEAD_MS", "120")]),
            Some(Duration::from_millis(120))
        );
        assert_eq!(lead(&[("PLAYOUT_LEAD_MS", "0")]), None);
    }

    #[test]
    fn expressive_options_need_a_native_audio_2_5_model() {
        let err = config(&[("GEMINI_AFFECTIVE_DIALOG", "true")]).unwrap_err();
        assert_eq!(err.var, "GEMINI_AFFECTIVE_DIALOG");
        assert!(
            err.problem
                .contains("gemini-3.8-live does not take affective dialog")
        );
        assert!(err.problem.contains("gemini-2.5-flash-native-audio-latest"));
        let err = config(&[
            ("GEMINI_PROACTIVE_AUDIO", "true"),
            ("GEMINI_MODEL", "gemini-3.1-flash-live-preview"),
        ])
        .unwrap_err();
        assert_eq!(err.var, "GEMINI_PROACTIVE_AUDIO");
        // 3.8 always listens proactively and refuses the field: accepted, nothing sent.
        let c = config(&[("GEMINI_PROACTIVE_AUDIO", "true")]).unwrap();
        assert_eq!(c.conversation.live.proactive_audio, ProactiveAudio::BuiltIn);
        assert_eq!(c.gemini.unwrap().live_url, DEFAULT_GEMINI_LIVE_URL);
    }

    #[test]
    fn ai_studio_moves_to_v1alpha_unless_the_url_is_set() {
        let c = config(&[NATIVE_2_5, ("GEMINI_AFFECTIVE_DIALOG", "true")]).unwrap();
        assert!(c.conversation.live.affective_dialog);
        assert_eq!(c.gemini.unwrap().live_url, V1ALPHA_GEMINI_LIVE_URL);
        let fake = config(&[
            NATIVE_2_5,
            ("GEMINI_PROACTIVE_AUDIO", "true"),
            ("GEMINI_LIVE_URL", "ws://127.0.0.1:9/live"),
        ])
        .unwrap();
        assert_eq!(fake.conversation.live.proactive_audio, ProactiveAudio::On);
        assert_eq!(fake.gemini.unwrap().live_url, "ws://127.0.0.1:9/live");
        let err = config(&[
            NATIVE_2_5,
            ("GEMINI_PROACTIVE_AUDIO", "true"),
            ("GEMINI_LIVE_URL", DEFAULT_GEMINI_LIVE_URL),
        ])
        .unwrap_err();
        assert_eq!(err.var, "GEMINI_LIVE_URL");
        assert!(err.problem.contains("GEMINI_PROACTIVE_AUDIO"));
    }

    #[test]
    fn vertex_keeps_its_endpoint_for_the_expressive_options() {
        let c = config(&[
            ("GEMINI_API_KEY", ""),
            ("GEMINI_BACKEND", "vertex"),
            ("GOOGLE_CLOUD_PROJECT", "acme"),
            ("GEMINI_MODEL", "gemini-live-2.5-flash-native-audio"),
            ("GEMINI_AFFECTIVE_DIALOG", "true"),
            ("GEMINI_PROACTIVE_AUDIO", "true"),
        ])
        .unwrap();
        assert!(
            c.gemini
                .unwrap()
                .live_url
                .contains("v1beta1.LlmBidiService")
        );
        let err = config(&[
            ("GEMINI_API_KEY", ""),
            ("GEMINI_BACKEND", "vertex"),
            ("GOOGLE_CLOUD_PROJECT", "acme"),
            ("GEMINI_AFFECTIVE_DIALOG", "true"),
        ])
        .unwrap_err();
        assert!(err.problem.contains("gemini-live-2.5-flash-native-audio"));
    }
}

//! Which Live models take the expressive options (`enableAffectiveDialog`, `proactivity`),
//! per `../shared/protocols/gemini-live.md` §7.3: the 2.5 native-audio models take both;
//! 3.1 takes neither; 3.8 dropped affective dialog and always listens proactively (it
//! refuses the `proactivity` field). A model outside these families is refused rather than
//! letting every call's setup fail.

use super::protocol::{is_gemini_2, model_id};
use crate::config::{GeminiBackend, GeminiConfig};

/// Whether a model takes an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Yes, when asked in the setup.
    Yes,
    /// Always on; the field itself is refused.
    BuiltIn,
    /// No: a setup asking for it is refused.
    No,
}

/// Affective dialog on `model`.
pub fn affective_dialog(model: &str) -> Support {
    if is_native_audio_2(model) {
        Support::Yes
    } else {
        Support::No
    }
}

/// Proactive audio on `model`.
pub fn proactive_audio(model: &str) -> Support {
    if is_native_audio_2(model) {
        Support::Yes
    } else if model_id(model).starts_with("gemini-3.8") {
        Support::BuiltIn
    } else {
        Support::No
    }
}

/// A model that takes both options on `gemini`'s backend, for error messages.
pub fn example_model(gemini: &GeminiConfig) -> &'static str {
    match gemini.backend {
        GeminiBackend::AiStudio => "gemini-2.5-flash-native-audio-latest",
        GeminiBackend::Vertex(_) => "gemini-live-2.5-flash-native-audio",
    }
}

/// The 2.x native-audio models (AI Studio `gemini-2.5-flash-native-audio-…`, Vertex
/// `gemini-live-2.5-flash-native-audio…`); the older half-cascade 2.x models had neither option.
fn is_native_audio_2(model: &str) -> bool {
    is_gemini_2(model) && model_id(model).contains("native-audio")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_families_decide_the_options() {
        for model in [
            "models/gemini-2.5-flash-native-audio-latest",
            "gemini-2.5-flash-native-audio-preview-12-2025",
            "projects/p/locations/us-central1/publishers/google/models/gemini-live-2.5-flash-native-audio",
        ] {
            assert_eq!(affective_dialog(model), Support::Yes, "{model}");
            assert_eq!(proactive_audio(model), Support::Yes, "{model}");
        }
        assert_eq!(affective_dialog("gemini-3.8-live"), Support::No);
        assert_eq!(proactive_audio("gemini-3.8-live"), Support::BuiltIn);
        for model in ["gemini-3.1-flash-live-preview", "gemini-2.0-flash-live-001"] {
            assert_eq!(affective_dialog(model), Support::No, "{model}");
            assert_eq!(proactive_audio(model), Support::No, "{model}");
        }
    }
}

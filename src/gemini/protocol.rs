//! Gemini Live (BidiGenerateContent) messages, as `../shared/protocols/gemini-live.md`
//! describes them.
//!
//! Server messages are parsed into structs whose fields are all optional, because one
//! message can carry several things at once (audio, a transcript and usage together) and
//! Google adds fields over time. Client messages on the hot path are written by hand into
//! a reused buffer.

use std::borrow::Cow;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::{GeminiConfig, LiveOptions, ProactiveAudio, TurnDetection};
use crate::telephony::BASE64;

/// MIME type of the audio we send: 16-bit little-endian PCM at 16 kHz.
pub const INPUT_AUDIO_MIME: &str = "audio/pcm;rate=16000";

/// What a session is set up with.
#[derive(Debug, Clone)]
pub struct SessionSetup {
    /// `models/<id>` or a full resource name.
    pub model: String,
    /// Prebuilt voice name.
    pub voice: String,
    /// Optional BCP-47 language code.
    pub language: Option<String>,
    /// The agent's system prompt.
    pub system_instruction: String,
    /// Function declarations offered to the model (empty: no tools).
    pub function_declarations: Vec<Value>,
    /// Turn detection and expressive options (`LiveOptions::default()`: none sent).
    pub options: LiveOptions,
}

impl SessionSetup {
    /// A setup for `config`'s model and voice with the given prompt.
    pub fn new(config: &GeminiConfig, system_instruction: String) -> Self {
        Self {
            model: config.model_resource(),
            voice: config.voice.clone(),
            language: config.language.clone(),
            system_instruction,
            function_declarations: Vec::new(),
            options: LiveOptions::default(),
        }
    }

    /// The `{"setup":…}` message; `resume_handle` resumes an earlier session.
    ///
    /// Only fields every current Live model accepts are sent, plus the [`LiveOptions`] the
    /// configuration asked for (and checked against the model): 3.8 rejects
    /// `thinkingConfig`, `enableAffectiveDialog` and `proactivity` (protocol §7.3).
    pub fn to_message(&self, resume_handle: Option<&str>) -> String {
        let mut speech = json!({"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": self.voice}}});
        if let Some(language) = &self.language {
            speech["languageCode"] = json!(language);
        }
        let resumption = match resume_handle {
            Some(handle) => json!({"handle": handle}),
            None => json!({}),
        };
        let mut setup = json!({
            "model": self.model,
            "generationConfig": {"responseModalities": ["AUDIO"], "speechConfig": speech},
            "systemInstruction": {"parts": [{"text": self.system_instruction}]},
            "inputAudioTranscription": {},
            "outputAudioTranscription": {},
            "sessionResumption": resumption,
            // Without compression an audio session is cut at 15 minutes.
            "contextWindowCompression": {"slidingWindow": {}},
        });
        if !self.function_declarations.is_empty() {
            setup["tools"] = json!([{"functionDeclarations": self.function_declarations}]);
        }
        if let Some(detection) = activity_detection(&self.options.turn_detection) {
            setup["realtimeInputConfig"] = json!({"automaticActivityDetection": detection});
        }
        if self.options.affective_dialog {
            setup["generationConfig"]["enableAffectiveDialog"] = json!(true);
        }
        if self.options.proactive_audio == ProactiveAudio::On {
            setup["proactivity"] = json!({"proactiveAudio": true});
        }
        json!({"setup": setup}).to_string()
    }

    /// Whether the model waits for tool results before going on, which is the default
    /// for 2.x and 3.1 models (3.8 defaults to non-blocking calls, protocol §2.5).
    pub fn tools_block(&self) -> bool {
        is_gemini_2(&self.model) || model_id(&self.model).starts_with("gemini-3.1")
    }

    /// The message that makes the model greet the caller as soon as the call connects.
    ///
    /// 3.x models take typed input as `realtimeInput.text`; 2.5 models take `clientContent`.
    pub fn greeting_message(&self) -> String {
        const CUE: &str =
            "[The phone call has just been connected. Greet the caller now, briefly.]";
        self.text_turn(CUE)
    }

    /// A typed user turn the model answers now, through the text path its family takes:
    /// `realtimeInput.text` on 3.x models, `clientContent` with `turnComplete` on 2.5.
    pub fn text_turn(&self, text: &str) -> String {
        if is_gemini_2(&self.model) {
            json!({"clientContent": {"turns": [{"role": "user", "parts": [{"text": text}]}], "turnComplete": true}})
                .to_string()
        } else {
            json!({"realtimeInput": {"text": text}}).to_string()
        }
    }
}

/// `automaticActivityDetection` with only the configured fields, or `None` when none is.
fn activity_detection(turns: &TurnDetection) -> Option<Value> {
    if turns.is_default() {
        return None;
    }
    let mut detection = serde_json::Map::new();
    if let Some(start) = turns.start_sensitivity {
        detection.insert("startOfSpeechSensitivity".into(), json!(start.start_enum()));
    }
    if let Some(end) = turns.end_sensitivity {
        detection.insert("endOfSpeechSensitivity".into(), json!(end.end_enum()));
    }
    if let Some(ms) = turns.prefix_padding_ms {
        detection.insert("prefixPaddingMs".into(), json!(ms));
    }
    if let Some(ms) = turns.silence_ms {
        detection.insert("silenceDurationMs".into(), json!(ms));
    }
    Some(Value::Object(detection))
}

/// The bare model id of `models/<id>`, a Vertex publisher resource, or a bare id.
pub fn model_id(model: &str) -> &str {
    model.rsplit('/').next().unwrap_or(model)
}

/// Whether the model is of the 2.x generation, whose setup and turn rules differ: AI Studio
/// names them `gemini-2…`, Vertex also `gemini-live-2…` (`gemini-live-2.5-flash-native-audio`).
pub fn is_gemini_2(model: &str) -> bool {
    let id = model_id(model);
    id.starts_with("gemini-2") || id.starts_with("gemini-live-2")
}

/// `models/<id>` unless the id already names a resource.
pub fn model_resource(model: &str) -> String {
    if model.contains('/') {
        model.to_owned()
    } else {
        format!("models/{model}")
    }
}

/// Writes `{"realtimeInput":{"audio":{…}}}` for 16 kHz PCM into `out` (cleared first).
pub fn write_audio_message(pcm16k: &[u8], out: &mut String) {
    out.clear();
    out.push_str("{\"realtimeInput\":{\"audio\":{\"mimeType\":\"");
    out.push_str(INPUT_AUDIO_MIME);
    out.push_str("\",\"data\":\"");
    BASE64.encode_string(pcm16k, out);
    out.push_str("\"}}}");
}

/// A `toolResponse` answering one function call. `scheduling` (`SILENT`, `WHEN_IDLE`,
/// `INTERRUPT`) tells a non-blocking model when to act on it.
pub fn tool_response_message(
    id: &str,
    name: &str,
    response: &Value,
    scheduling: Option<&str>,
) -> String {
    let mut answer = json!({"id": id, "name": name, "response": response});
    if let Some(scheduling) = scheduling {
        answer["scheduling"] = json!(scheduling);
    }
    json!({"toolResponse": {"functionResponses": [answer]}}).to_string()
}

/// One message from the server. Every field may be present or not, in any combination.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerMessage<'a> {
    /// The session is ready.
    #[serde(default)]
    pub setup_complete: Option<Value>,
    /// Model output and turn signals.
    #[serde(default, borrow)]
    pub server_content: Option<ServerContent<'a>>,
    /// The model asks us to run functions.
    #[serde(default)]
    pub tool_call: Option<ToolCall>,
    /// Earlier function calls should not run after all.
    #[serde(default)]
    pub tool_call_cancellation: Option<ToolCallCancellation>,
    /// The connection will be cut soon.
    #[serde(default)]
    pub go_away: Option<GoAway>,
    /// A new handle to resume this session with.
    #[serde(default)]
    pub session_resumption_update: Option<SessionResumptionUpdate>,
    /// Token accounting; can accompany any other field.
    #[serde(default)]
    pub usage_metadata: Option<Value>,
}

/// `serverContent`: audio, transcripts and turn signals.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerContent<'a> {
    /// Model output parts.
    #[serde(default, borrow)]
    pub model_turn: Option<ModelTurn<'a>>,
    /// The model finished generating this turn.
    #[serde(default)]
    pub generation_complete: bool,
    /// The model's turn is over.
    #[serde(default)]
    pub turn_complete: bool,
    /// The caller barged in; drop queued audio.
    #[serde(default)]
    pub interrupted: bool,
    /// Transcript of the caller's speech.
    #[serde(default)]
    pub input_transcription: Option<Transcription>,
    /// Transcript of the model's speech.
    #[serde(default)]
    pub output_transcription: Option<Transcription>,
    /// Why a turn ended, when it says.
    #[serde(default)]
    pub turn_complete_reason: Option<String>,
}

/// `modelTurn`.
#[derive(Debug, Default, Deserialize)]
pub struct ModelTurn<'a> {
    /// Content parts.
    #[serde(default, borrow)]
    pub parts: Vec<Part<'a>>,
}

/// One content part.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Part<'a> {
    /// Inline audio.
    #[serde(default, borrow)]
    pub inline_data: Option<Blob<'a>>,
    /// Text (thinking or TEXT modality); not spoken.
    #[serde(default)]
    pub text: Option<String>,
    /// True for thinking parts.
    #[serde(default)]
    pub thought: bool,
}

/// Base64 data with its MIME type.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Blob<'a> {
    /// e.g. `audio/pcm;rate=24000`.
    #[serde(default, borrow)]
    pub mime_type: Option<Cow<'a, str>>,
    /// Base64 (standard or URL-safe).
    #[serde(default, borrow)]
    pub data: Cow<'a, str>,
}

/// A transcript fragment.
#[derive(Debug, Default, Deserialize)]
pub struct Transcription {
    /// The text.
    #[serde(default)]
    pub text: String,
    /// End of a segment, when the model says so (unreliable).
    #[serde(default)]
    pub finished: bool,
}

/// `toolCall`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolCall {
    /// Calls to run, possibly in parallel.
    #[serde(default)]
    pub function_calls: Vec<FunctionCall>,
}

/// One function call.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
pub struct FunctionCall {
    /// Echoed in the response.
    #[serde(default)]
    pub id: String,
    /// Function name.
    #[serde(default)]
    pub name: String,
    /// Arguments object.
    #[serde(default)]
    pub args: Value,
}

/// `toolCallCancellation`.
#[derive(Debug, Default, Deserialize)]
pub struct ToolCallCancellation {
    /// Ids of calls to cancel.
    #[serde(default)]
    pub ids: Vec<String>,
}

/// `goAway`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GoAway {
    /// Protobuf duration, e.g. `"50s"` or `"1.5s"`.
    #[serde(default)]
    pub time_left: Option<String>,
}

impl GoAway {
    /// Seconds left before the server cuts the connection, if readable.
    pub fn seconds_left(&self) -> Option<f64> {
        let text = self.time_left.as_deref()?.trim();
        let seconds: f64 = text.strip_suffix('s')?.parse().ok()?;
        (seconds.is_finite() && seconds >= 0.0).then_some(seconds)
    }
}

/// `sessionResumptionUpdate`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionResumptionUpdate {
    /// The handle to resume from.
    #[serde(default)]
    pub new_handle: Option<String>,
    /// Whether the session can be resumed at this point.
    #[serde(default)]
    pub resumable: bool,
}

/// Base64 with the URL-safe alphabet, which some clients of the API use.
const URL_SAFE_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Decodes base64 audio in either alphabet into `out` (cleared first).
pub fn decode_audio(data: &str, out: &mut Vec<u8>) -> Result<(), base64::DecodeError> {
    out.clear();
    // The standard alphabet is the common case; scanning for URL-safe characters first
    // would cost as much as the decode itself.
    if BASE64.decode_vec(data, out).is_ok() {
        return Ok(());
    }
    out.clear();
    URL_SAFE_BASE64.decode_vec(data, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use std::time::Duration;

    fn config(model: &str) -> GeminiConfig {
        GeminiConfig {
            api_key: Secret::new("k"),
            model: model.into(),
            voice: "Puck".into(),
            language: Some("en-US".into()),
            live_url: "ws://x".into(),
            setup_timeout: Duration::from_secs(1),
            backend: Default::default(),
        }
    }

    fn vertex_config(model: &str) -> GeminiConfig {
        GeminiConfig {
            backend: crate::config::GeminiBackend::Vertex(crate::config::VertexConfig {
                location: "europe-west4".into(),
                access: crate::config::VertexAccess::Credentials {
                    project: "acme-voice".into(),
                    sources: Default::default(),
                    tokens: Default::default(),
                },
            }),
            ..config(model)
        }
    }

    #[test]
    fn vertex_setup_names_the_full_model_resource() {
        let setup = SessionSetup::new(&vertex_config("gemini-3.8-live"), String::new());
        let msg: Value = serde_json::from_str(&setup.to_message(None)).unwrap();
        assert_eq!(
            msg["setup"]["model"],
            "projects/acme-voice/locations/europe-west4/publishers/google/models/gemini-3.8-live"
        );
        // The other setup fields are the same on Vertex (the SDK's Vertex converter passes
        // generationConfig, transcription, resumption and compression through unchanged).
        assert_eq!(
            msg["setup"]["generationConfig"]["responseModalities"],
            json!(["AUDIO"])
        );
        assert_eq!(
            msg["setup"]["contextWindowCompression"],
            json!({"slidingWindow": {}})
        );
    }

    #[test]
    fn vertex_2_5_model_ids_get_the_2_x_rules() {
        let setup = SessionSetup::new(
            &vertex_config("gemini-live-2.5-flash-native-audio"),
            String::new(),
        );
        assert!(setup.model.starts_with("projects/acme-voice/"));
        assert!(setup.greeting_message().starts_with("{\"clientContent\""));
        assert!(setup.tools_block());
        let new = SessionSetup::new(&vertex_config("gemini-3.8-live"), String::new());
        assert!(new.greeting_message().starts_with("{\"realtimeInput\""));
        assert!(!new.tools_block());
        // A project or location containing "gemini-2" must not flip the rules.
        assert!(!is_gemini_2(
            "projects/gemini-2-lab/locations/x/publishers/google/models/gemini-3.8-live"
        ));
        assert!(is_gemini_2("models/gemini-2.5-flash-native-audio-latest"));
    }

    #[test]
    fn setup_turns_on_transcripts_and_resumption() {
        let setup = SessionSetup::new(&config("gemini-3.8-live"), "Be brief.".into());
        let msg: Value = serde_json::from_str(&setup.to_message(None)).unwrap();
        let s = &msg["setup"];
        assert_eq!(s["model"], "models/gemini-3.8-live");
        assert_eq!(
            s["generationConfig"]["responseModalities"],
            json!(["AUDIO"])
        );
        assert_eq!(
            s["generationConfig"]["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"],
            "Puck"
        );
        assert_eq!(
            s["generationConfig"]["speechConfig"]["languageCode"],
            "en-US"
        );
        assert_eq!(s["systemInstruction"]["parts"][0]["text"], "Be brief.");
        assert_eq!(s["inputAudioTranscription"], json!({}));
        assert_eq!(s["outputAudioTranscription"], json!({}));
        assert_eq!(s["sessionResumption"], json!({}));
        assert!(s.get("tools").is_none());
        assert!(s["generationConfig"].get("thinkingConfig").is_none());

        let resumed: Value = serde_json::from_str(&setup.to_message(Some("h1"))).unwrap();
        assert_eq!(resumed["setup"]["sessionResumption"]["handle"], "h1");
    }

    #[test]
    fn turn_detection_sends_only_the_fields_set() {
        let mut setup = SessionSetup::new(&config("gemini-3.8-live"), String::new());
        let msg: Value = serde_json::from_str(&setup.to_message(None)).unwrap();
        assert!(msg["setup"].get("realtimeInputConfig").is_none());
        setup.options.turn_detection = TurnDetection {
            end_sensitivity: Some(crate::config::Sensitivity::Low),
            silence_ms: Some(600),
            ..TurnDetection::default()
        };
        let msg: Value = serde_json::from_str(&setup.to_message(Some("h"))).unwrap();
        assert_eq!(
            msg["setup"]["realtimeInputConfig"],
            json!({"automaticActivityDetection": {
                "endOfSpeechSensitivity": "END_SENSITIVITY_LOW",
                "silenceDurationMs": 600
            }})
        );
    }

    #[test]
    fn expressive_options_go_where_the_api_reads_them() {
        let mut setup = SessionSetup::new(
            &config("gemini-2.5-flash-native-audio-latest"),
            String::new(),
        );
        let plain: Value = serde_json::from_str(&setup.to_message(None)).unwrap();
        assert!(plain["setup"].get("proactivity").is_none());
        assert!(
            plain["setup"]["generationConfig"]
                .get("enableAffectiveDialog")
                .is_none()
        );
        setup.options.affective_dialog = true;
        setup.options.proactive_audio = ProactiveAudio::On;
        let msg: Value = serde_json::from_str(&setup.to_message(None)).unwrap();
        assert_eq!(
            msg["setup"]["generationConfig"]["enableAffectiveDialog"],
            true
        );
        assert_eq!(msg["setup"]["proactivity"], json!({"proactiveAudio": true}));
        setup.options.proactive_audio = ProactiveAudio::BuiltIn;
        let msg: Value = serde_json::from_str(&setup.to_message(None)).unwrap();
        assert!(msg["setup"].get("proactivity").is_none());
    }

    #[test]
    fn greeting_matches_the_model_generation() {
        let new = SessionSetup::new(&config("gemini-3.8-live"), String::new());
        assert!(
            new.greeting_message()
                .starts_with("{\"realtimeInput\":{\"text\"")
        );
        let old = SessionSetup::new(
            &config("gemini-2.5-flash-native-audio-latest"),
            String::new(),
        );
        assert!(old.greeting_message().starts_with("{\"clientContent\""));
    }

    #[test]
    fn audio_message_is_realtime_input_audio() {
        let mut out = String::new();
        write_audio_message(&[1, 0, 2, 0], &mut out);
        let msg: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            msg,
            json!({"realtimeInput":{"audio":{"mimeType":"audio/pcm;rate=16000","data":"AQACAA=="}}})
        );
    }

    #[test]
    fn bundled_server_message_is_read_whole() {
        let raw = r#"{"serverContent":{"modelTurn":{"role":"model","parts":[{"inlineData":{"mimeType":"audio/pcm;rate=24000","data":"AAA="}}]},"outputTranscription":{"text":"hi"},"turnComplete":true},"usageMetadata":{"totalTokenCount":3},"futureField":1}"#;
        let msg: ServerMessage<'_> = serde_json::from_str(raw).unwrap();
        let content = msg.server_content.unwrap();
        assert!(content.turn_complete);
        assert_eq!(content.output_transcription.unwrap().text, "hi");
        assert_eq!(
            content.model_turn.unwrap().parts[0]
                .inline_data
                .as_ref()
                .unwrap()
                .data,
            "AAA="
        );
        assert!(msg.usage_metadata.is_some());
    }

    #[test]
    fn go_away_durations() {
        let g = |t: &str| {
            GoAway {
                time_left: Some(t.into()),
            }
            .seconds_left()
        };
        assert_eq!(g("50s"), Some(50.0));
        assert_eq!(g("1.5s"), Some(1.5));
        assert_eq!(g("soon"), None);
        assert_eq!(g("-1s"), None);
    }

    #[test]
    fn both_base64_alphabets_decode() {
        let mut out = Vec::new();
        decode_audio("_-8=", &mut out).unwrap();
        assert_eq!(out, [0xFF, 0xEF]);
        decode_audio("/+8", &mut out).unwrap();
        assert_eq!(out, [0xFF, 0xEF]);
        assert!(decode_audio("***", &mut out).is_err());
    }

    #[test]
    fn tool_response_echoes_id_and_name() {
        let msg: Value = serde_json::from_str(&tool_response_message(
            "fc-1",
            "f",
            &json!({"result": 1}),
            None,
        ))
        .unwrap();
        assert_eq!(
            msg,
            json!({"toolResponse":{"functionResponses":[{"id":"fc-1","name":"f","response":{"result":1}}]}})
        );
    }
}

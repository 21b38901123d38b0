//! The provider-neutral call interface.
//!
//! A provider turns its answer webhook into [`CallInfo`] and answer XML, and its media-stream
//! WebSocket messages into [`PhoneEvent`]s; it turns [`PhoneCommand`]s back into its own
//! messages. The bridge speaks only these types, so a new provider is one new file that
//! implements [`Provider`] and [`MediaStream`], plus one entry in [`PROVIDERS`] (and its
//! account in [`registry`]).

pub mod plivo;
pub mod plivo_numbers;
pub mod registry;
pub mod rest;
pub mod twilio;
pub mod twilio_numbers;
pub mod web;

use std::collections::HashMap;

use base64::Engine as _;

/// Who placed the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The caller dialled our number.
    Inbound,
    /// We dialled out.
    Outbound,
}

impl Direction {
    /// Lower-case name, as used in stream parameters and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }

    /// Reads a provider's direction value (`inbound`, `outbound`, `outbound-api`, …).
    pub fn parse(value: &str) -> Direction {
        if value.starts_with("outbound") {
            Direction::Outbound
        } else {
            Direction::Inbound
        }
    }
}

/// What an answer webhook tells us about a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    /// The provider's id for the call (Twilio `CallSid`, Plivo `CallUUID`).
    pub provider_call_id: String,
    /// Calling number.
    pub from: String,
    /// Called number.
    pub to: String,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Answering-machine detection's verdict, when the webhook carries one.
    pub answered_by: Option<String>,
}

/// True when a detection verdict (`machine_start`, `machine_end_beep`, `fax`, `machine`, …)
/// means nobody is there to talk to.
pub fn is_machine(answered_by: &str) -> bool {
    answered_by.starts_with("machine") || answered_by == "fax"
}

/// What a status, hang-up or machine-detection callback reports, in neutral terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallbackEvent {
    /// The provider's call id, when given.
    pub provider_call_id: Option<String>,
    /// The call status in the provider's spelling (`ringing`, `no-answer`, `timeout`, …).
    pub status: Option<String>,
    /// Answering-machine detection's verdict.
    pub answered_by: Option<String>,
    /// Call length in seconds, on the final callback.
    pub duration_seconds: Option<i64>,
    /// Why the call ended, in the provider's words.
    pub hangup_cause: Option<String>,
}

/// The webhook query and stream parameter that carries our call-record id (letters and digits
/// only, as Plivo's stream parameters require).
pub const RECORD_PARAM: &str = "record";

/// The stream parameter that proves the stream was opened by our answer webhook.
pub const TOKEN_PARAM: &str = "token";

/// The stream parameter that carries synchronous machine detection's `human` verdict: the
/// detector heard the callee speak and pause before the stream was connected, so a
/// `callee_first` greeting need not wait for them again. (Not signed: it only moves the
/// greeting earlier.)
pub const ANSWERED_BY_PARAM: &str = "answeredby";

/// The parameters carried from the answer webhook into the media stream's `start` message.
pub type StreamParams = HashMap<String, String>;

/// What the provider says when its media stream starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStart {
    /// The provider's call id.
    pub call_id: String,
    /// The provider's stream id, needed on control messages.
    pub stream_id: String,
    /// Parameters we put in the answer XML (Twilio `customParameters`, Plivo `extra_headers`).
    pub params: StreamParams,
}

/// One inbound media-stream message, in neutral terms.
#[derive(Debug, PartialEq, Eq)]
pub enum PhoneEvent<'a> {
    /// The stream started; carries ids and our parameters.
    Started(StreamStart),
    /// Caller audio: μ-law 8 kHz bytes (borrowed from the stream's decode buffer).
    Audio(&'a [u8]),
    /// The caller pressed a key.
    Dtmf(String),
    /// Everything queued before the named mark (Twilio) / checkpoint (Plivo) was played.
    MarkPlayed(String),
    /// The provider confirmed a clear.
    Cleared,
    /// The stream ended (call hung up or stream stopped).
    Stopped,
    /// A message that needs no action (Twilio `connected`, unknown future events).
    Ignored,
}

/// One outbound command to the phone, in neutral terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhoneCommand<'a> {
    /// Play one 20 ms μ-law frame.
    Play(&'a [u8]),
    /// Drop everything queued for playback (barge-in).
    Clear,
    /// Ask to be told when everything queued so far has played.
    Mark(&'a str),
}

/// A media-stream message the provider sent that we could not use.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A `media` payload that is not base64.
    #[error("bad base64 audio payload: {0}")]
    BadPayload(#[from] base64::DecodeError),
    /// A required field is missing.
    #[error("`{event}` message without `{field}`")]
    Missing {
        /// The event name.
        event: &'static str,
        /// The missing field.
        field: &'static str,
    },
}

/// One live media stream's message codec: parse what arrives, encode what we send.
pub trait MediaStream: Send {
    /// Parses one text frame from the provider.
    fn parse(&mut self, text: &str) -> Result<PhoneEvent<'_>, StreamError>;
    /// Encodes one command as a text frame for the provider.
    fn encode(&self, command: PhoneCommand<'_>) -> String;
}

/// A telephony provider: its webhooks, answer XML and stream codec.
pub trait Provider: Send + Sync + 'static {
    /// Route segment and log name (`twilio`, `plivo`).
    fn name(&self) -> &'static str;
    /// Reads the answer webhook's parameters.
    fn call_info(&self, params: &HashMap<String, String>) -> Option<CallInfo>;
    /// The XML that connects the call to a bidirectional μ-law 8 kHz stream at `stream_url`,
    /// carrying `params` into the stream's start message.
    fn answer_xml(&self, stream_url: &str, params: &[(&str, &str)]) -> String;
    /// A codec for one new media stream.
    fn media_stream(&self) -> Box<dyn MediaStream>;
    /// The XML that ends the call at once (answered by a machine).
    fn hangup_xml(&self) -> String {
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Hangup/></Response>".to_owned()
    }
    /// The XML that politely refuses a call the server has no room for: says `message`, then
    /// hangs up (Twilio `<Say>`, Plivo `<Speak>`, each followed by `<Hangup/>`).
    fn busy_xml(&self, message: &str) -> String;
    /// The XML that dials `to` (E.164) for a call being transferred.
    fn transfer_xml(&self, to: &str) -> String;
    /// Reads a status, hang-up or machine-detection callback.
    fn callback_event(&self, params: &HashMap<String, String>) -> CallbackEvent;
    /// Whether a webhook request carries a valid signature made with `auth_token`: `url` is
    /// the public URL it was sent to, `body` the POST parameters.
    fn verify_webhook(
        &self,
        auth_token: &str,
        url: &str,
        headers: &http::HeaderMap,
        body: &[(String, String)],
    ) -> bool;
    /// Why calls on this line can never be transferred (told to the agent's `transfer_call`
    /// at once), or `None` when a transfer may be tried.
    fn transfer_refusal(&self) -> Option<&'static str> {
        None
    }
}

/// A header's value as text, if present and readable.
pub(crate) fn header<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Every provider the server speaks to; a new provider is one more entry here.
pub const PROVIDERS: &[&'static dyn Provider] = &[&twilio::Twilio, &plivo::Plivo];

/// The provider served under `/{name}/…`, if any.
pub fn provider_by_name(name: &str) -> Option<&'static dyn Provider> {
    PROVIDERS.iter().copied().find(|p| p.name() == name)
}

/// Base64 that accepts payloads with or without padding, as providers differ.
pub(crate) const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Decodes a base64 audio payload into `buffer`, reusing its allocation.
pub(crate) fn decode_payload<'b>(
    payload: &str,
    buffer: &'b mut Vec<u8>,
) -> Result<&'b [u8], StreamError> {
    buffer.clear();
    BASE64.decode_vec(payload, buffer)?;
    Ok(buffer)
}

/// Escapes text for an XML attribute value or element body, so the document stays
/// well-formed whatever the text holds (a caller id is whatever the caller's network sent).
///
/// - Markup characters become the predefined entities.
/// - Tab, LF and CR become character references (`&#9;`, `&#10;`, `&#13;`): written raw, a
///   parser would turn them into spaces inside an attribute value (and CR into LF in text),
///   so the value would not come back as sent.
/// - The characters XML 1.0 forbids even as references (the other C0 controls, U+FFFE and
///   U+FFFF) become U+FFFD, the replacement character, so the loss is visible rather than
///   silent and the provider does not refuse the whole document.
pub(crate) fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A JSON string literal (with quotes) for `text`, for hand-built hot-path messages.
pub(crate) fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// Appends the base64 of `audio` to `out`.
pub(crate) fn push_base64(audio: &[u8], out: &mut String) {
    BASE64.encode_string(audio, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escape_covers_markup() {
        assert_eq!(xml_escape(r#"a&b<c>"d'"#), "a&amp;b&lt;c&gt;&quot;d&apos;");
    }

    /// True when `c` may appear in an XML 1.0 document (the `Char` production).
    fn is_xml_char(c: char) -> bool {
        matches!(c, '\t' | '\n' | '\r' | ' '..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
    }

    /// Checks the rules an escaped document can break: every character is an XML `Char`,
    /// every `&` opens a predefined entity or a character reference to a `Char`, and no
    /// attribute value holds a raw `<`. Returns the first broken rule.
    fn well_formed_by_rule(xml: &str) -> Result<(), String> {
        if let Some(c) = xml.chars().find(|&c| !is_xml_char(c)) {
            return Err(format!("forbidden character U+{:04X}", c as u32));
        }
        for (at, _) in xml.match_indices('&') {
            let reference = xml[at + 1..]
                .split_once(';')
                .map(|(name, _)| name)
                .ok_or("unterminated reference")?;
            let code = match reference {
                "amp" | "lt" | "gt" | "quot" | "apos" => continue,
                r if r.starts_with("#x") => u32::from_str_radix(&r[2..], 16).ok(),
                r if r.starts_with('#') => r[1..].parse().ok(),
                r => return Err(format!("unknown entity &{r};")),
            };
            if !code.and_then(char::from_u32).is_some_and(is_xml_char) {
                return Err(format!("reference &{reference}; to a forbidden character"));
            }
        }
        for value in xml.split("=\"").skip(1) {
            let value = value.split('"').next().unwrap_or_default();
            if value.contains('<') {
                return Err(format!("raw < in attribute value {value:?}"));
            }
        }
        Ok(())
    }

    #[test]
    fn answer_xml_is_well_formed_whatever_the_caller_id_holds() {
        let awkward = (0u32..0x20)
            .chain([0x7F, 0xFFFE, 0xFFFF])
            .filter_map(char::from_u32);
        for c in awkward {
            let from = format!("+1555{c}0100");
            for provider in [provider_by_name("twilio"), provider_by_name("plivo")] {
                let provider = provider.expect("built-in provider");
                let params = [("from", from.as_str()), ("to", "+15550002222")];
                for xml in [
                    provider.answer_xml("wss://h.io/stream", &params),
                    provider.transfer_xml(&from),
                ] {
                    if let Err(broken) = well_formed_by_rule(&xml) {
                        panic!("U+{:04X} in a caller id: {broken}\n{xml}", c as u32);
                    }
                }
            }
        }
    }

    #[test]
    fn whitespace_controls_survive_and_forbidden_ones_are_marked() {
        assert_eq!(xml_escape("a\tb\nc\rd"), "a&#9;b&#10;c&#13;d");
        assert_eq!(
            xml_escape("+1\u{0}2\u{1B}3\u{FFFF}"),
            "+1\u{FFFD}2\u{FFFD}3\u{FFFD}"
        );
        assert_eq!(xml_escape("Zoë 🙂"), "Zoë 🙂", "other text is left alone");
    }

    #[test]
    fn the_rule_check_catches_what_the_old_escape_let_through() {
        // Guards the check above against passing everything.
        assert!(well_formed_by_rule("<a v=\"+1\u{1}\"/>").is_err());
        assert!(well_formed_by_rule("<a v=\"&#1;\"/>").is_err());
        assert!(well_formed_by_rule("<a v=\"x<y\"/>").is_err());
        assert!(well_formed_by_rule("<a v=\"&#9;&amp;\"/>").is_ok());
    }

    #[test]
    fn directions_parse_provider_spellings() {
        assert_eq!(Direction::parse("outbound-api"), Direction::Outbound);
        assert_eq!(Direction::parse("outbound"), Direction::Outbound);
        assert_eq!(Direction::parse("inbound"), Direction::Inbound);
    }

    #[test]
    fn busy_xml_speaks_the_escaped_message_then_hangs_up() {
        for (provider, verb) in [(PROVIDERS[0], "Say"), (PROVIDERS[1], "Speak")] {
            let xml = provider.busy_xml("Sorry & <goodbye>");
            assert!(
                xml.ends_with(&format!(
                    "<Response><{verb}>Sorry &amp; &lt;goodbye&gt;</{verb}><Hangup/></Response>"
                )),
                "{xml}"
            );
            assert_eq!(
                provider.busy_xml("  "),
                provider.hangup_xml(),
                "nothing to say"
            );
        }
    }

    #[test]
    fn providers_are_found_by_route_name() {
        assert_eq!(provider_by_name("twilio").map(|p| p.name()), Some("twilio"));
        assert_eq!(provider_by_name("plivo").map(|p| p.name()), Some("plivo"));
        assert!(provider_by_name("telnyx").is_none());
    }
}

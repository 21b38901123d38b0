//! The browser as a third line into the bridge: the web console's "Talk to your agent".
//!
//! A browser call has no phone network behind it, so there are no webhooks: the console asks
//! for a call with an authenticated `POST /web/calls` (see [`crate::web`]), which creates the
//! record and a single-use stream token, then opens `GET /web/stream?token=…&call=…`. The
//! token and call id in that URL are what an answer webhook's stream parameters are for the
//! phone providers: [`WebStream::for_call`] turns them into the stream's `start`, checked and
//! consumed by the same code as a Twilio or Plivo stream before any Gemini session opens.
//!
//! ## Wire format
//!
//! JSON text frames shaped like Twilio's, without the stream id (the socket is the stream).
//! Audio is G.711 μ-law at 8 kHz, base64, one 20 ms frame (160 bytes) per `media` message.
//!
//! | direction | message |
//! |---|---|
//! | browser → server | `{"event":"start"}` first, once |
//! | browser → server | `{"event":"media","media":{"payload":"<base64 μ-law>"}}` |
//! | browser → server | `{"event":"mark","mark":{"name":"…"}}` once the audio before that mark has played |
//! | browser → server | `{"event":"clear"}` optional: the browser dropped its queued audio |
//! | browser → server | `{"event":"dtmf","dtmf":{"digit":"5"}}` a key press |
//! | browser → server | `{"event":"stop"}` the person hung up |
//! | server → browser | `{"event":"media","media":{"payload":"<base64, exactly 160 bytes>"}}` |
//! | server → browser | `{"event":"mark","mark":{"name":"…"}}` tell me when playback reaches here |
//! | server → browser | `{"event":"clear"}` drop everything queued (barge-in) |
//!
//! The server ends the call by closing the socket, with the reason in the close frame.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;

use super::{
    CallInfo, CallbackEvent, MediaStream, PhoneCommand, PhoneEvent, Provider, RECORD_PARAM,
    StreamError, StreamParams, StreamStart, TOKEN_PARAM, decode_payload, json_string, push_base64,
};
use crate::telephony::Direction;

/// The provider name of browser calls, in records, logs and metrics.
pub const NAME: &str = "web";
/// The `from` of every browser call's record (there is no calling number).
pub const FROM: &str = "web";
/// The `to` of every browser call's record.
pub const TO: &str = "agent";
/// A browser call is the person calling the agent.
pub const DIRECTION: Direction = Direction::Inbound;
/// Why the agent cannot transfer a browser call, as its `transfer_call` tool is told.
pub const NO_TRANSFER: &str = "this is a browser call from the web console: it cannot be transferred to a phone number; tell the person the number to call instead";

/// The browser provider.
#[derive(Debug, Clone, Copy, Default)]
pub struct Web;

/// The browser sends no webhooks and is not served under the `/{provider}/…` webhook routes
/// (it is not in [`super::PROVIDERS`]); the webhook half of [`Provider`] refuses everything.
impl Provider for Web {
    fn name(&self) -> &'static str {
        NAME
    }

    fn call_info(&self, _params: &HashMap<String, String>) -> Option<CallInfo> {
        None
    }

    fn answer_xml(&self, _stream_url: &str, _params: &[(&str, &str)]) -> String {
        self.hangup_xml()
    }

    /// A stream that does not come from a `/web/stream` URL's token: its `start` carries no
    /// token, so it can never become a call.
    fn media_stream(&self) -> Box<dyn MediaStream> {
        Box::new(WebStream::default())
    }

    fn busy_xml(&self, _message: &str) -> String {
        self.hangup_xml()
    }

    fn transfer_xml(&self, _to: &str) -> String {
        self.hangup_xml()
    }

    fn callback_event(&self, _params: &HashMap<String, String>) -> CallbackEvent {
        CallbackEvent::default()
    }

    fn verify_webhook(
        &self,
        _auth_token: &str,
        _url: &str,
        _headers: &http::HeaderMap,
        _body: &[(String, String)],
    ) -> bool {
        false
    }

    fn transfer_refusal(&self) -> Option<&'static str> {
        Some(NO_TRANSFER)
    }
}

/// The query parameter of the stream URL that names the call (our record id).
pub const CALL_PARAM: &str = "call";

/// The stream URL the console opens for call `record_id` with stream token `token`, relative
/// to the server (the browser resolves it against the page's own origin).
pub fn stream_url(record_id: &str, token: &str) -> String {
    format!("/web/stream?{TOKEN_PARAM}={token}&{CALL_PARAM}={record_id}")
}

/// The stream parameters a browser call's token was signed over: what an answer webhook
/// would have put in a phone stream's `start`. The call id is the record id (a browser call
/// has no provider call id).
pub fn stream_start(record_id: &str, token: &str) -> StreamStart {
    let params: StreamParams = [
        ("from", FROM),
        ("to", TO),
        ("direction", DIRECTION.as_str()),
        (RECORD_PARAM, record_id),
        (TOKEN_PARAM, token),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect();
    StreamStart {
        call_id: record_id.to_owned(),
        stream_id: record_id.to_owned(),
        params,
    }
}

/// One browser call's stream codec.
#[derive(Debug, Default)]
pub struct WebStream {
    /// What the browser's `start` stands for, taken once: a second `start` is ignored.
    start: Option<StreamStart>,
    audio: Vec<u8>,
}

impl WebStream {
    /// The codec of the stream opened with this URL's call id and token.
    pub fn for_call(record_id: &str, token: &str) -> Self {
        Self {
            start: Some(stream_start(record_id, token)),
            audio: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
struct Inbound<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, borrow)]
    media: Option<Media<'a>>,
    #[serde(default)]
    mark: Option<Mark>,
    #[serde(default)]
    dtmf: Option<Dtmf>,
}

#[derive(Deserialize)]
struct Media<'a> {
    #[serde(borrow)]
    payload: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Mark {
    name: String,
}

#[derive(Deserialize)]
struct Dtmf {
    digit: String,
}

impl MediaStream for WebStream {
    fn parse(&mut self, text: &str) -> Result<PhoneEvent<'_>, StreamError> {
        let message: Inbound<'_> = serde_json::from_str(text)?;
        let missing = |event, field| StreamError::Missing { event, field };
        Ok(match message.event.as_ref() {
            "media" => {
                let media = message.media.ok_or(missing("media", "media"))?;
                PhoneEvent::Audio(decode_payload(&media.payload, &mut self.audio)?)
            }
            "start" => match self.start.take() {
                Some(start) => PhoneEvent::Started(start),
                // A bare codec (no URL token), or a repeated `start`: the first one counted.
                None => PhoneEvent::Started(StreamStart {
                    call_id: String::new(),
                    stream_id: String::new(),
                    params: StreamParams::new(),
                }),
            },
            "mark" => PhoneEvent::MarkPlayed(message.mark.ok_or(missing("mark", "mark"))?.name),
            "dtmf" => PhoneEvent::Dtmf(message.dtmf.ok_or(missing("dtmf", "dtmf"))?.digit),
            "clear" => PhoneEvent::Cleared,
            "stop" => PhoneEvent::Stopped,
            _ => PhoneEvent::Ignored,
        })
    }

    fn encode(&self, command: PhoneCommand<'_>) -> String {
        match command {
            PhoneCommand::Play(frame) => {
                let mut out = String::with_capacity(48 + frame.len() * 4 / 3);
                out.push_str("{\"event\":\"media\",\"media\":{\"payload\":\"");
                push_base64(frame, &mut out);
                out.push_str("\"}}");
                out
            }
            PhoneCommand::Clear => "{\"event\":\"clear\"}".to_owned(),
            PhoneCommand::Mark(name) => format!(
                "{{\"event\":\"mark\",\"mark\":{{\"name\":{}}}}}",
                json_string(name)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn started() -> WebStream {
        let mut stream = WebStream::for_call("cabc", "1800000000t00");
        match stream.parse(r#"{"event":"start"}"#).unwrap() {
            PhoneEvent::Started(start) => {
                assert_eq!(start.call_id, "cabc");
                assert_eq!(start.params[RECORD_PARAM], "cabc");
                assert_eq!(start.params[TOKEN_PARAM], "1800000000t00");
                assert_eq!(start.params["direction"], "inbound");
                assert_eq!(start.params["from"], FROM);
            }
            other => panic!("expected start, got {other:?}"),
        }
        stream
    }

    #[test]
    fn start_carries_the_url_claims_once() {
        let mut stream = started();
        match stream.parse(r#"{"event":"start"}"#).unwrap() {
            PhoneEvent::Started(again) => {
                assert!(again.params.is_empty(), "a second start proves nothing")
            }
            other => panic!("expected start, got {other:?}"),
        }
    }

    #[test]
    fn a_bare_stream_starts_without_a_token() {
        let mut stream = Web.media_stream();
        match stream.parse(r#"{"event":"start"}"#).unwrap() {
            PhoneEvent::Started(start) => assert!(!start.params.contains_key(TOKEN_PARAM)),
            other => panic!("expected start, got {other:?}"),
        }
    }

    #[test]
    fn media_mark_dtmf_clear_stop_are_read() {
        let mut stream = started();
        let media = r#"{"event":"media","media":{"payload":"AAECAw=="}}"#;
        assert_eq!(
            stream.parse(media).unwrap(),
            PhoneEvent::Audio(&[0, 1, 2, 3])
        );
        let mark = r#"{"event":"mark","mark":{"name":"turn-3"}}"#;
        assert_eq!(
            stream.parse(mark).unwrap(),
            PhoneEvent::MarkPlayed("turn-3".into())
        );
        let dtmf = r#"{"event":"dtmf","dtmf":{"digit":"7"}}"#;
        assert_eq!(stream.parse(dtmf).unwrap(), PhoneEvent::Dtmf("7".into()));
        assert_eq!(
            stream.parse(r#"{"event":"clear"}"#).unwrap(),
            PhoneEvent::Cleared
        );
        assert_eq!(
            stream.parse(r#"{"event":"stop"}"#).unwrap(),
            PhoneEvent::Stopped
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut stream = started();
        assert!(stream.parse("not json").is_err());
        assert!(stream.parse(r#"{"event":"media"}"#).is_err());
        assert!(
            stream
                .parse(r#"{"event":"media","media":{"payload":"!!!"}}"#)
                .is_err()
        );
        assert!(stream.parse(r#"{"event":"mark"}"#).is_err());
        assert_eq!(
            stream.parse(r#"{"event":"novel"}"#).unwrap(),
            PhoneEvent::Ignored
        );
    }

    #[test]
    fn commands_use_the_documented_shapes() {
        let stream = started();
        let play: Value =
            serde_json::from_str(&stream.encode(PhoneCommand::Play(&[0xFF; 160]))).unwrap();
        assert_eq!(play["event"], "media");
        assert_eq!(play["media"]["payload"].as_str().unwrap().len(), 216);
        let clear: Value = serde_json::from_str(&stream.encode(PhoneCommand::Clear)).unwrap();
        assert_eq!(clear, json!({"event":"clear"}));
        let mark: Value = serde_json::from_str(&stream.encode(PhoneCommand::Mark("m\"1"))).unwrap();
        assert_eq!(mark, json!({"event":"mark","mark":{"name":"m\"1"}}));
    }

    #[test]
    fn the_stream_url_carries_token_and_call() {
        assert_eq!(
            stream_url("cabc", "17t0f"),
            "/web/stream?token=17t0f&call=cabc"
        );
    }

    #[test]
    fn web_refuses_transfers_and_webhooks() {
        assert!(Web.transfer_refusal().is_some());
        assert!(Web.call_info(&HashMap::new()).is_none());
        assert!(!Web.verify_webhook("t", "u", &http::HeaderMap::new(), &[]));
    }
}

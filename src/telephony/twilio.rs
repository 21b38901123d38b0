//! Twilio Media Streams: TwiML `<Connect><Stream>` and the bidirectional stream protocol.
//!
//! Twilio sends `connected` first, then `start`, then `media`/`dtmf`/`mark` and finally
//! `stop`; every counter is a JSON string. We send `media`, `mark` and `clear`, each
//! carrying the `streamSid` learnt from `start`.

use std::borrow::Cow;
use std::collections::HashMap;

use futures_util::future::BoxFuture;
use serde::Deserialize;

use crate::config::OnMachine;

use super::rest::{CallControl, DialRequest, RestError, read_optional, read_response};
use super::{
    CallInfo, Direction, MediaStream, PhoneCommand, PhoneEvent, Provider, StreamError,
    StreamParams, StreamStart, decode_payload, json_string, push_base64, xml_escape,
};

/// The Twilio provider.
#[derive(Debug, Clone, Copy, Default)]
pub struct Twilio;

impl Provider for Twilio {
    fn name(&self) -> &'static str {
        "twilio"
    }

    fn call_info(&self, params: &HashMap<String, String>) -> Option<CallInfo> {
        Some(CallInfo {
            provider_call_id: params.get("CallSid")?.clone(),
            from: params.get("From").cloned().unwrap_or_default(),
            to: params.get("To").cloned().unwrap_or_default(),
            direction: Direction::parse(params.get("Direction").map_or("inbound", String::as_str)),
            answered_by: params.get("AnsweredBy").cloned(),
        })
    }

    fn callback_event(&self, params: &HashMap<String, String>) -> super::CallbackEvent {
        super::CallbackEvent {
            provider_call_id: params.get("CallSid").cloned(),
            status: params.get("CallStatus").cloned(),
            answered_by: params.get("AnsweredBy").cloned(),
            duration_seconds: params.get("CallDuration").and_then(|d| d.parse().ok()),
            hangup_cause: params.get("SipResponseCode").map(|c| format!("SIP {c}")),
        }
    }

    fn answer_xml(&self, stream_url: &str, params: &[(&str, &str)]) -> String {
        let mut xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Connect><Stream url=\"{}\">",
            xml_escape(stream_url)
        );
        for (name, value) in params {
            xml.push_str(&format!(
                "<Parameter name=\"{}\" value=\"{}\"/>",
                xml_escape(name),
                xml_escape(value)
            ));
        }
        xml.push_str("</Stream></Connect></Response>");
        xml
    }

    fn media_stream(&self) -> Box<dyn MediaStream> {
        Box::new(TwilioStream::default())
    }

    fn verify_webhook(
        &self,
        auth_token: &str,
        url: &str,
        headers: &http::HeaderMap,
        body: &[(String, String)],
    ) -> bool {
        super::header(headers, "x-twilio-signature")
            .is_some_and(|sig| crate::signature::verify_twilio(auth_token, url, body, sig))
    }

    fn busy_xml(&self, message: &str) -> String {
        if message.trim().is_empty() {
            return self.hangup_xml();
        }
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Say>{}</Say><Hangup/></Response>",
            xml_escape(message)
        )
    }

    fn transfer_xml(&self, to: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Dial>{}</Dial></Response>",
            xml_escape(to)
        )
    }
}

/// One Twilio media stream.
#[derive(Debug, Default)]
pub struct TwilioStream {
    /// `"streamSid":"MZ…"` already JSON-escaped, learnt from `start`.
    stream_sid_json: String,
    audio: Vec<u8>,
}

#[derive(Deserialize)]
struct Inbound<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, borrow)]
    media: Option<Media<'a>>,
    #[serde(default)]
    start: Option<Start>,
    #[serde(default)]
    mark: Option<Mark>,
    #[serde(default)]
    dtmf: Option<Dtmf>,
}

#[derive(Deserialize)]
struct Media<'a> {
    #[serde(borrow)]
    payload: Cow<'a, str>,
    #[serde(default, borrow)]
    track: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Start {
    call_sid: String,
    stream_sid: String,
    #[serde(default)]
    custom_parameters: HashMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct Mark {
    name: String,
}

#[derive(Deserialize)]
struct Dtmf {
    digit: String,
}

impl MediaStream for TwilioStream {
    fn parse(&mut self, text: &str) -> Result<PhoneEvent<'_>, StreamError> {
        let message: Inbound<'_> = serde_json::from_str(text)?;
        Ok(match message.event.as_ref() {
            "media" => {
                let media = message.media.ok_or(StreamError::Missing {
                    event: "media",
                    field: "media",
                })?;
                // A <Connect><Stream> carries only the caller's track; anything else is not
                // the caller's voice.
                if media.track.as_deref().is_some_and(|t| t != "inbound") {
                    return Ok(PhoneEvent::Ignored);
                }
                PhoneEvent::Audio(decode_payload(&media.payload, &mut self.audio)?)
            }
            "start" => {
                let start = message.start.ok_or(StreamError::Missing {
                    event: "start",
                    field: "start",
                })?;
                self.stream_sid_json = json_string(&start.stream_sid);
                PhoneEvent::Started(StreamStart {
                    call_id: start.call_sid,
                    stream_id: start.stream_sid,
                    params: stringify(start.custom_parameters),
                })
            }
            "mark" => PhoneEvent::MarkPlayed(
                message
                    .mark
                    .ok_or(StreamError::Missing {
                        event: "mark",
                        field: "mark",
                    })?
                    .name,
            ),
            "dtmf" => PhoneEvent::Dtmf(
                message
                    .dtmf
                    .ok_or(StreamError::Missing {
                        event: "dtmf",
                        field: "dtmf",
                    })?
                    .digit,
            ),
            "stop" => PhoneEvent::Stopped,
            _ => PhoneEvent::Ignored,
        })
    }

    fn encode(&self, command: PhoneCommand<'_>) -> String {
        let sid = &self.stream_sid_json;
        match command {
            PhoneCommand::Play(frame) => {
                let mut out = String::with_capacity(80 + sid.len() + frame.len() * 4 / 3);
                out.push_str("{\"event\":\"media\",\"streamSid\":");
                out.push_str(sid);
                out.push_str(",\"media\":{\"payload\":\"");
                push_base64(frame, &mut out);
                out.push_str("\"}}");
                out
            }
            PhoneCommand::Clear => format!("{{\"event\":\"clear\",\"streamSid\":{sid}}}"),
            PhoneCommand::Mark(name) => format!(
                "{{\"event\":\"mark\",\"streamSid\":{sid},\"mark\":{{\"name\":{}}}}}",
                json_string(name)
            ),
        }
    }
}

fn stringify(params: HashMap<String, serde_json::Value>) -> StreamParams {
    params
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn started() -> TwilioStream {
        let mut stream = TwilioStream::default();
        let start = json!({"event":"start","sequenceNumber":"1","start":{
            "accountSid":"AC1","streamSid":"MZ42","callSid":"CA7","tracks":["inbound"],
            "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},
            "customParameters":{"direction":"inbound","from":"+15550001111"}},"streamSid":"MZ42"});
        match stream.parse(&start.to_string()).unwrap() {
            PhoneEvent::Started(s) => {
                assert_eq!(s.call_id, "CA7");
                assert_eq!(s.stream_id, "MZ42");
                assert_eq!(s.params["from"], "+15550001111");
            }
            other => panic!("expected start, got {other:?}"),
        }
        stream
    }

    #[test]
    fn connected_is_ignored_and_start_is_read() {
        let mut stream = TwilioStream::default();
        let connected = r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#;
        assert_eq!(stream.parse(connected).unwrap(), PhoneEvent::Ignored);
        started();
    }

    #[test]
    fn media_payload_is_decoded() {
        let mut stream = started();
        let msg = r#"{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"AAECAw=="},"streamSid":"MZ42"}"#;
        assert_eq!(stream.parse(msg).unwrap(), PhoneEvent::Audio(&[0, 1, 2, 3]));
    }

    #[test]
    fn mark_dtmf_stop_are_read() {
        let mut stream = started();
        let mark =
            r#"{"event":"mark","sequenceNumber":"4","streamSid":"MZ42","mark":{"name":"turn-3"}}"#;
        assert_eq!(
            stream.parse(mark).unwrap(),
            PhoneEvent::MarkPlayed("turn-3".into())
        );
        let dtmf = r#"{"event":"dtmf","streamSid":"MZ42","sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":"7"}}"#;
        assert_eq!(stream.parse(dtmf).unwrap(), PhoneEvent::Dtmf("7".into()));
        let stop = r#"{"event":"stop","sequenceNumber":"5","stop":{"accountSid":"AC1","callSid":"CA7"},"streamSid":"MZ42"}"#;
        assert_eq!(stream.parse(stop).unwrap(), PhoneEvent::Stopped);
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
        assert!(stream.parse(r#"{"event":"start"}"#).is_err());
        assert_eq!(
            stream.parse(r#"{"event":"novel"}"#).unwrap(),
            PhoneEvent::Ignored
        );
    }

    #[test]
    fn commands_use_twilio_shapes() {
        let stream = started();
        let play: Value =
            serde_json::from_str(&stream.encode(PhoneCommand::Play(&[0xFF; 160]))).unwrap();
        assert_eq!(play["event"], "media");
        assert_eq!(play["streamSid"], "MZ42");
        assert_eq!(play["media"]["payload"].as_str().unwrap().len(), 216);
        let clear: Value = serde_json::from_str(&stream.encode(PhoneCommand::Clear)).unwrap();
        assert_eq!(clear, json!({"event":"clear","streamSid":"MZ42"}));
        let mark: Value = serde_json::from_str(&stream.encode(PhoneCommand::Mark("m\"1"))).unwrap();
        assert_eq!(
            mark,
            json!({"event":"mark","streamSid":"MZ42","mark":{"name":"m\"1"}})
        );
    }

    #[test]
    fn answer_xml_connects_a_bidirectional_stream() {
        let xml = Twilio.answer_xml("wss://h.io/twilio/stream", &[("from", "+1 & <2>")]);
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Connect><Stream url=\"wss://h.io/twilio/stream\"><Parameter name=\"from\" value=\"+1 &amp; &lt;2&gt;\"/></Stream></Connect></Response>"
        );
    }

    #[test]
    fn webhook_params_become_call_info() {
        let params: HashMap<String, String> = [
            ("CallSid", "CA9"),
            ("From", "+15550001111"),
            ("To", "+15550002222"),
            ("Direction", "outbound-api"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let info = Twilio.call_info(&params).unwrap();
        assert_eq!(info.provider_call_id, "CA9");
        assert_eq!(info.direction, Direction::Outbound);
        assert!(Twilio.call_info(&HashMap::new()).is_none());
    }
}

/// True for a Twilio call SID: `CA` followed by 32 hexadecimal digits (34 characters).
///
/// Every id we put into a Twilio REST path must pass this first; webhooks can use it to
/// refuse a forged `CallSid` early.
pub fn is_call_sid(id: &str) -> bool {
    id.len() == 34 && id.starts_with("CA") && id.bytes().skip(2).all(|b| b.is_ascii_hexdigit())
}

/// What [`is_call_sid`] accepts, in words, for errors.
const CALL_SID_FORMAT: &str = "a Twilio call SID (CA followed by 32 hex digits)";

/// Our status name for a call resource's `status`. Twilio's call statuses are our
/// vocabulary already (`queued`, `ringing`, `in-progress`, `completed`, `busy`, `no-answer`,
/// `failed`, `canceled`); `initiated` appears only in callbacks but is read as `queued`.
fn our_status(twilio_status: &str) -> Option<&'static str> {
    Some(match twilio_status {
        "queued" | "initiated" => "queued",
        "ringing" => "ringing",
        "in-progress" => "in-progress",
        "completed" => "completed",
        "busy" => "busy",
        "no-answer" => "no-answer",
        "failed" => "failed",
        "canceled" => "canceled",
        _ => return None,
    })
}

/// Twilio's REST API for one account.
#[derive(Debug, Clone)]
pub struct TwilioClient {
    pub(super) http: reqwest::Client,
    pub(super) config: crate::config::TwilioConfig,
}

impl TwilioClient {
    /// A client for `config`'s account.
    pub fn new(config: crate::config::TwilioConfig, http: reqwest::Client) -> Self {
        Self { http, config }
    }

    /// `{api}/2010-04-01/Accounts/{AccountSid}/{resource…}`, every segment encoded.
    pub(super) fn account_url(&self, resource: &[&str]) -> Result<reqwest::Url, RestError> {
        let mut segments = vec!["2010-04-01", "Accounts", self.config.account_sid.as_str()];
        segments.extend_from_slice(resource);
        super::rest::api_url("twilio", "TWILIO_API_URL", &self.config.api_url, &segments)
    }

    /// The call resource `…/Calls/{CallSid}.json`, refusing anything but a call SID.
    fn call_url(&self, call_sid: &str) -> Result<reqwest::Url, RestError> {
        if !is_call_sid(call_sid) {
            return Err(RestError::invalid_id("twilio", call_sid, CALL_SID_FORMAT));
        }
        self.account_url(&["Calls", &format!("{call_sid}.json")])
    }

    pub(super) fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.basic_auth(
            &self.config.account_sid,
            Some(self.config.auth_token.expose()),
        )
    }

    pub(super) fn post_form(
        &self,
        url: reqwest::Url,
        form: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        self.authed(self.http.post(url)).form(form)
    }
}

impl CallControl for TwilioClient {
    fn provider(&self) -> &'static str {
        "twilio"
    }

    fn default_from(&self) -> Option<&str> {
        self.config.phone_number.as_deref()
    }

    fn dial<'a>(&'a self, request: &'a DialRequest) -> BoxFuture<'a, Result<String, RestError>> {
        Box::pin(async move {
            let base = &request.public_url;
            let id = &request.record_id;
            let answer = format!("{base}/twilio/answer?{}={id}", super::RECORD_PARAM);
            let status = format!("{base}/twilio/status?{}={id}", super::RECORD_PARAM);
            let time_limit = request.time_limit_secs.to_string();
            // Synchronous detection: Twilio fetches the answer URL once it knows whether a
            // person answered, so a machine is hung up on before the agent says a word. To
            // leave a message, Twilio waits for the end of the machine's greeting (its
            // beep) before fetching it (`AnsweredBy=machine_end_*`); a person is reported
            // as soon as with `Enable`.
            let detection = match request.on_machine {
                OnMachine::HangUp => "Enable",
                OnMachine::Message => "DetectMessageEnd",
            };
            let form = [
                ("To", request.to.as_str()),
                ("From", request.from.as_str()),
                ("Url", answer.as_str()),
                ("Method", "POST"),
                ("StatusCallback", status.as_str()),
                ("StatusCallbackMethod", "POST"),
                ("StatusCallbackEvent", "initiated"),
                ("StatusCallbackEvent", "ringing"),
                ("StatusCallbackEvent", "answered"),
                ("StatusCallbackEvent", "completed"),
                ("MachineDetection", detection),
                ("TimeLimit", time_limit.as_str()),
            ];
            let url = self.account_url(&["Calls.json"])?;
            let (_, body) =
                read_response("twilio", self.post_form(url, &form).send().await).await?;
            body.get("sid")
                .and_then(|s| s.as_str())
                .map(str::to_owned)
                .ok_or_else(|| RestError::Unexpected {
                    provider: "twilio",
                    detail: "no `sid` in the created call".into(),
                })
        })
    }

    fn transfer<'a>(
        &'a self,
        provider_call_id: &'a str,
        to: &'a str,
        _public_url: &'a str,
    ) -> BoxFuture<'a, Result<(), RestError>> {
        Box::pin(async move {
            let url = self.call_url(provider_call_id)?;
            // New TwiML leaves <Connect><Stream>, which ends our stream, and dials.
            let twiml = Twilio.transfer_xml(to);
            read_response(
                "twilio",
                self.post_form(url, &[("Twiml", twiml.as_str())])
                    .send()
                    .await,
            )
            .await
            .map(drop)
        })
    }

    fn call_status<'a>(
        &'a self,
        provider_call_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, RestError>> {
        Box::pin(async move {
            let url = self.call_url(provider_call_id)?;
            let Some(call) =
                read_optional("twilio", self.authed(self.http.get(url)).send().await).await?
            else {
                return Ok(None);
            };
            let status = call.get("status").and_then(|s| s.as_str());
            status
                .and_then(our_status)
                .map(|s| Some(s.to_owned()))
                .ok_or_else(|| RestError::Unexpected {
                    provider: "twilio",
                    detail: format!("call resource with unknown status {status:?}"),
                })
        })
    }

    fn send_sms<'a>(
        &'a self,
        from: &'a str,
        to: &'a str,
        body: &'a str,
    ) -> BoxFuture<'a, Result<String, RestError>> {
        Box::pin(async move {
            let url = self.account_url(&["Messages.json"])?;
            let (_, answer) = read_response(
                "twilio",
                self.post_form(url, &[("To", to), ("From", from), ("Body", body)])
                    .send()
                    .await,
            )
            .await?;
            Ok(answer
                .get("sid")
                .and_then(|s| s.as_str())
                .unwrap_or_default()
                .to_owned())
        })
    }

    fn hang_up<'a>(
        &'a self,
        provider_call_id: &'a str,
        live: bool,
    ) -> BoxFuture<'a, Result<(), RestError>> {
        Box::pin(async move {
            let url = self.call_url(provider_call_id)?;
            // `completed` ends a live call; a queued or ringing one is `canceled`.
            let status = if live { "completed" } else { "canceled" };
            match read_response(
                "twilio",
                self.post_form(url, &[("Status", status)]).send().await,
            )
            .await
            {
                Ok(_) => Ok(()),
                Err(RestError::Status { status: 404, .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }
}

#[cfg(test)]
mod rest_tests {
    use super::*;
    use crate::calls::store::CallStatus;

    const SID: &str = "CA0123456789abcdef0123456789ABCDEF";

    fn client(api_url: &str) -> TwilioClient {
        let config = crate::config::TwilioConfig {
            account_sid: "AC00000000000000000000000000000001".into(),
            auth_token: crate::config::Secret::new("token"),
            phone_number: None,
            api_url: api_url.into(),
        };
        TwilioClient::new(
            config,
            crate::telephony::rest::http_client(std::time::Duration::from_secs(1))
                .expect("an HTTP client"),
        )
    }

    #[test]
    fn call_sids_are_ca_and_32_hex_digits() {
        assert!(is_call_sid(SID));
        for bad in [
            "",
            "CA1",
            "../Number/15550002222",
            "CA0123456789abcdef0123456789abcdeg",  // not hex
            "CA0123456789abcdef0123456789abcdef0", // 33 digits
            "ca0123456789abcdef0123456789abcdef",  // prefix is upper case
            "SM0123456789abcdef0123456789abcdef",  // a message, not a call
            "CA0123456789abcdef012345678/../..",
            "CA0123456789abcdef0123456789abcdé", // multi-byte, same byte length
        ] {
            assert!(!is_call_sid(bad), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_forged_sid_is_refused_before_a_url_exists() {
        let forged = "../../IncomingPhoneNumbers/PN1";
        match client("https://api.twilio.com").call_url(forged) {
            Err(RestError::InvalidId { provider, id, .. }) => {
                assert_eq!((provider, id.as_str()), ("twilio", forged));
            }
            other => panic!("expected InvalidId, got {other:?}"),
        }
        let long = "x".repeat(10_000);
        let error = client("https://api.twilio.com")
            .call_url(&long)
            .expect_err("refused");
        assert!(error.to_string().len() < 400, "the log line stays short");
        assert!(error.to_string().contains("no request was sent"), "{error}");
    }

    #[test]
    fn call_urls_put_each_value_in_its_own_segment() {
        let url = client("https://api.twilio.com").call_url(SID).unwrap();
        assert_eq!(
            url.as_str(),
            format!(
                "https://api.twilio.com/2010-04-01/Accounts/AC00000000000000000000000000000001/Calls/{SID}.json"
            )
        );
        let mut odd = client("http://127.0.0.1:9/prefix");
        odd.config.account_sid = "AC1/../x?y#z".into();
        let url = odd.account_url(&["Calls.json"]).unwrap();
        assert_eq!(
            url.path(),
            "/prefix/2010-04-01/Accounts/AC1%2F..%2Fx%3Fy%23z/Calls.json"
        );
        assert_eq!(url.query(), None);
    }

    #[test]
    fn an_unusable_api_url_is_named() {
        let error = client("not a url").call_url(SID).expect_err("refused");
        assert!(error.to_string().contains("TWILIO_API_URL"), "{error}");
    }

    #[test]
    fn every_twilio_call_status_maps_to_one_of_ours() {
        for (twilio, ours) in [
            ("queued", "queued"),
            ("ringing", "ringing"),
            ("in-progress", "in-progress"),
            ("completed", "completed"),
            ("busy", "busy"),
            ("no-answer", "no-answer"),
            ("failed", "failed"),
            ("canceled", "canceled"),
        ] {
            assert_eq!(our_status(twilio), Some(ours));
            assert!(ours.parse::<CallStatus>().is_ok(), "{ours}");
        }
        assert_eq!(our_status("paused"), None);
    }
}

//! Self-tests of the shared test fakes (FakeGemini, TwilioCaller, PlivoCaller) against raw
//! tokio-tungstenite peers, so the fakes are known to work before the server exists.

#[path = "support/gemini.rs"]
mod gemini;
#[path = "support/phone.rs"]
mod phone;
#[path = "support/playback.rs"]
mod playback;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use gemini::{Behaviour, FakeGemini};
use phone::{Outbound, PlivoCaller, TwilioCaller};

const T: Duration = Duration::from_secs(3);
const SHORT: Duration = Duration::from_millis(300);

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connect a raw client to the fake with the key in the `x-goog-api-key` header.
async fn raw_connect(url: &str) -> Result<Client, WsError> {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("x-goog-api-key", "test-key-123".parse().unwrap());
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

/// Send a JSON value as a text frame.
async fn send_text(ws: &mut Client, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// Next data frame from the fake: (was it binary, parsed JSON); None on close/timeout.
async fn next_json(ws: &mut Client) -> Option<(bool, Value)> {
    loop {
        match tokio::time::timeout(T, ws.next()).await.ok()?? {
            Ok(Message::Binary(b)) => return Some((true, serde_json::from_slice(&b).unwrap())),
            Ok(Message::Text(t)) => {
                return Some((false, serde_json::from_str(t.as_str()).unwrap()));
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Wait for the close frame from the fake and return (code, reason).
async fn next_close(ws: &mut Client) -> Option<(u16, String)> {
    loop {
        match tokio::time::timeout(T, ws.next()).await.ok()?? {
            Ok(Message::Close(Some(CloseFrame { code, reason }))) => {
                let _ = ws.flush().await; // send the queued close reply
                return Some((u16::from(code), reason.to_string()));
            }
            Ok(Message::Close(None)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// A minimal valid setup message.
fn setup_msg() -> Value {
    json!({"setup": {"model": "models/gemini-3.8-live", "generationConfig": {"responseModalities": ["AUDIO"]}}})
}

/// A realtimeInput.audio message with the given 16 kHz samples.
fn audio_msg(pcm: &[i16]) -> Value {
    json!({"realtimeInput": {"audio": {
        "data": STANDARD.encode(gemini::pcm16_to_le_bytes(pcm)),
        "mimeType": "audio/pcm;rate=16000"
    }}})
}

// ------------------------------------------------------------------------------------------------
// FakeGemini

#[tokio::test]
async fn gemini_normal_answers_setup_complete_as_binary_and_records_key() {
    let mut fake = FakeGemini::start(Behaviour::Normal).await;
    assert!(fake.url().starts_with("ws://127.0.0.1:"));
    assert!(fake.url().ends_with(gemini::GEMINI_LIVE_PATH));
    let mut ws = raw_connect(&fake.url()).await.unwrap();
    send_text(&mut ws, setup_msg()).await;
    let (binary, v) = next_json(&mut ws).await.expect("setupComplete");
    assert!(binary, "setupComplete must come as a binary frame");
    assert_eq!(v, json!({"setupComplete": {}}));

    let mut s = fake.next_session(T).await;
    assert_eq!(s.setup(), &setup_msg());
    assert_eq!(s.api_key().as_deref(), Some("test-key-123"));
    assert_eq!(s.uri(), gemini::GEMINI_LIVE_PATH);
    assert!(!s.uri().contains("key"));
    assert_eq!(
        fake.handshakes()[0].header("X-Goog-Api-Key"),
        Some("test-key-123")
    );

    // client → fake: audio is collected and decoded; other messages are kept aside.
    send_text(&mut ws, audio_msg(&[1, 2, 3, 4])).await;
    send_text(&mut ws, json!({"realtimeInput": {"audioStreamEnd": true}})).await;
    send_text(&mut ws, audio_msg(&[5, 6])).await;
    let audio = s.recv_audio(12, T).await;
    assert_eq!(gemini::le_bytes_to_pcm16(&audio), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(
        s.take_non_audio(),
        vec![json!({"realtimeInput": {"audioStreamEnd": true}})]
    );

    // fake → client: audio (+ bundled transcript), turn complete with usage, text frames.
    s.send_audio_with_transcript(&[10, -10], "hi");
    s.send_turn_complete();
    s.send_text(json!({"goAway": {"timeLeft": "50s"}}));
    let (_, a) = next_json(&mut ws).await.unwrap();
    let part = &a["serverContent"]["modelTurn"]["parts"][0]["inlineData"];
    assert_eq!(part["mimeType"], "audio/pcm;rate=24000");
    let pcm = gemini::le_bytes_to_pcm16(&STANDARD.decode(part["data"].as_str().unwrap()).unwrap());
    assert_eq!(pcm, vec![10, -10]);
    assert_eq!(a["serverContent"]["outputTranscription"]["text"], "hi");
    let (_, g) = next_json(&mut ws).await.unwrap();
    assert_eq!(g, json!({"serverContent": {"generationComplete": true}}));
    let (_, tc) = next_json(&mut ws).await.unwrap();
    assert_eq!(tc["serverContent"]["turnComplete"], true);
    assert!(tc["usageMetadata"]["totalTokenCount"].is_number());
    let (binary, ga) = next_json(&mut ws).await.unwrap();
    assert!(!binary);
    assert_eq!(ga["goAway"]["timeLeft"], "50s");

    // client closes → wait_closed sees it with the code.
    ws.close(Some(CloseFrame {
        code: 1000.into(),
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    assert!(s.wait_closed(T).await);
    assert_eq!(s.client_close(), Some((1000, "bye".to_string())));
    assert!(!s.got_binary());
    assert!(s.violations().is_empty());
}

#[tokio::test]
async fn gemini_reject_handshake_gives_http_status() {
    for status in [403u16, 429] {
        let fake = FakeGemini::start(Behaviour::RejectHandshake(status)).await;
        match raw_connect(&fake.url()).await {
            Err(WsError::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), status);
                let body: Value = serde_json::from_slice(resp.body().as_ref().unwrap()).unwrap();
                assert_eq!(body["error"]["code"], status);
            }
            Err(e) => panic!("expected HTTP {status}, got {e}"),
            Ok(_) => panic!("expected HTTP {status}, connect succeeded"),
        }
        assert_eq!(fake.connection_count(), 1);
        assert_eq!(
            fake.handshakes()[0].api_key.as_deref(),
            Some("test-key-123")
        );
    }
}

#[tokio::test]
async fn gemini_close_on_setup_sends_code_and_reason() {
    let reason = "models/x is not found for API version v1beta, or is not supported for bidiGenerateContent.";
    let mut fake = FakeGemini::start(Behaviour::CloseOnSetup(1008, reason.to_string())).await;
    let mut ws = raw_connect(&fake.url()).await.unwrap();
    send_text(&mut ws, setup_msg()).await;
    assert_eq!(next_close(&mut ws).await, Some((1008, reason.to_string())));
    let mut s = fake.next_session(T).await;
    assert_eq!(s.setup(), &setup_msg());
    assert!(s.wait_closed(T).await);
}

#[tokio::test]
async fn gemini_never_complete_setup_is_silent_and_flags_early_input() {
    let mut fake = FakeGemini::start(Behaviour::NeverCompleteSetup).await;
    let mut ws = raw_connect(&fake.url()).await.unwrap();
    send_text(&mut ws, setup_msg()).await;
    let s = fake.next_session(T).await;
    assert!(
        tokio::time::timeout(SHORT, ws.next()).await.is_err(),
        "fake must stay silent"
    );
    // The test can still complete setup by hand.
    s.send(json!({"setupComplete": {}}));
    let (binary, v) = next_json(&mut ws).await.unwrap();
    assert!(binary);
    assert_eq!(v, json!({"setupComplete": {}}));

    // Input before setupComplete is a protocol violation.
    let mut fake = FakeGemini::start(Behaviour::NeverCompleteSetup).await;
    let mut ws = raw_connect(&fake.url()).await.unwrap();
    send_text(&mut ws, setup_msg()).await;
    send_text(&mut ws, audio_msg(&[0; 160])).await;
    let s = fake.next_session(T).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.violations().len(), 1, "{:?}", s.violations());
    assert!(s.violations()[0].contains("before setupComplete"));
}

#[tokio::test]
async fn gemini_echo_returns_audio_at_24k() {
    let mut fake = FakeGemini::start(Behaviour::Echo).await;
    let mut ws = raw_connect(&fake.url()).await.unwrap();
    send_text(&mut ws, setup_msg()).await;
    assert_eq!(
        next_json(&mut ws).await.unwrap().1,
        json!({"setupComplete": {}})
    );
    let input: Vec<i16> = (0..320).map(|i| (i * 30) as i16).collect(); // 20 ms at 16 kHz
    send_text(&mut ws, audio_msg(&input)).await;
    let (binary, v) = next_json(&mut ws).await.unwrap();
    assert!(binary);
    let part = &v["serverContent"]["modelTurn"]["parts"][0]["inlineData"];
    assert_eq!(part["mimeType"], "audio/pcm;rate=24000");
    let out = gemini::le_bytes_to_pcm16(&STANDARD.decode(part["data"].as_str().unwrap()).unwrap());
    assert_eq!(out.len(), 480, "20 ms at 24 kHz");
    assert_eq!(&out[..4], &[0, 20, 40, 60], "linear ramp stays linear");
    // The session still sees what the client sent.
    let mut s = fake.next_session(T).await;
    assert_eq!(s.recv_audio(640, T).await.len(), 640);
}

#[tokio::test]
async fn gemini_media_chunks_get_closed_with_1007_and_recorded() {
    let mut fake = FakeGemini::start(Behaviour::Normal).await;
    let mut ws = raw_connect(&fake.url()).await.unwrap();
    send_text(&mut ws, setup_msg()).await;
    next_json(&mut ws).await.unwrap();
    let s = fake.next_session(T).await;
    send_text(
        &mut ws,
        json!({"realtimeInput": {"mediaChunks": [{"data": "AAA=", "mimeType": "audio/pcm"}]}}),
    )
    .await;
    let (code, reason) = next_close(&mut ws).await.unwrap();
    assert_eq!(code, 1007);
    assert!(reason.contains("media_chunks is deprecated"));
    assert!(s.violations().iter().any(|v| v.contains("mediaChunks")));
}

#[tokio::test]
#[should_panic(expected = "broke the Live protocol")]
async fn gemini_recv_audio_panics_on_media_chunks() {
    let mut fake = FakeGemini::start(Behaviour::Normal).await;
    let mut ws = raw_connect(&fake.url()).await.unwrap();
    send_text(&mut ws, setup_msg()).await;
    next_json(&mut ws).await.unwrap();
    let mut s = fake.next_session(T).await;
    send_text(
        &mut ws,
        json!({"realtimeInput": {"mediaChunks": [{"data": "AAA=", "mimeType": "audio/pcm"}]}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.recv_audio(2, T).await;
}

#[tokio::test]
async fn gemini_malformed_client_messages_are_recorded() {
    let mut fake = FakeGemini::start(Behaviour::Normal).await;
    let mut ws = raw_connect(&fake.url()).await.unwrap();
    send_text(&mut ws, setup_msg()).await;
    next_json(&mut ws).await.unwrap();
    let s = fake.next_session(T).await;
    send_text(
        &mut ws,
        json!({"realtimeInput": {"text": "a", "activityEnd": {}}}),
    )
    .await;
    send_text(&mut ws, json!({"bogus": 1})).await;
    send_text(&mut ws, setup_msg()).await;
    ws.send(Message::text("nope")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let v = s.violations();
    assert_eq!(v.len(), 4, "{v:#?}");
    assert!(v[0].contains("exactly one field"));
    assert!(v[1].contains("top level"));
    assert!(v[2].contains("setup twice"));
    assert!(v[3].contains("not a JSON object"));
}

#[tokio::test]
async fn gemini_binary_client_frames_are_recorded() {
    let mut fake = FakeGemini::start(Behaviour::Normal).await;
    let mut ws = raw_connect(&fake.url()).await.unwrap();
    send_text(&mut ws, setup_msg()).await;
    next_json(&mut ws).await.unwrap();
    let s = fake.next_session(T).await;
    ws.send(Message::binary(audio_msg(&[1]).to_string().into_bytes()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(s.got_binary());
    assert!(s.violations()[0].contains("binary"));
}

#[tokio::test]
async fn gemini_session_drop_close_and_abort_end_the_client_socket() {
    let mut fake = FakeGemini::start(Behaviour::Normal).await;
    // Dropping the session closes with 1000.
    let mut ws = raw_connect(&fake.url()).await.unwrap();
    send_text(&mut ws, setup_msg()).await;
    next_json(&mut ws).await.unwrap();
    drop(fake.next_session(T).await);
    assert_eq!(next_close(&mut ws).await.map(|c| c.0), Some(1000));

    // close(code, reason) is delivered as-is.
    let mut ws = raw_connect(&fake.url()).await.unwrap();
    send_text(&mut ws, setup_msg()).await;
    next_json(&mut ws).await.unwrap();
    let mut s = fake.next_session(T).await;
    s.close(1011, "Deadline expired before operation could complete.");
    assert_eq!(
        next_close(&mut ws).await,
        Some((
            1011,
            "Deadline expired before operation could complete.".to_string()
        ))
    );
    assert!(s.wait_closed(T).await);
    assert_eq!(s.client_close(), None, "the fake closed first");

    // abort() drops TCP without a close frame.
    let mut ws = raw_connect(&fake.url()).await.unwrap();
    send_text(&mut ws, setup_msg()).await;
    next_json(&mut ws).await.unwrap();
    let s = fake.next_session(T).await;
    s.abort();
    match tokio::time::timeout(T, ws.next()).await.unwrap() {
        None | Some(Err(_)) => {}
        Some(Ok(m)) => panic!("expected abrupt end, got {m:?}"),
    }
}

#[tokio::test]
async fn gemini_behaviour_switch_and_no_session_timeout() {
    let mut fake = FakeGemini::start(Behaviour::RejectHandshake(429)).await;
    assert!(fake.try_next_session(SHORT).await.is_none());
    assert!(raw_connect(&fake.url()).await.is_err());
    fake.set_behaviour(Behaviour::Normal);
    let mut ws = raw_connect(&fake.url()).await.unwrap();
    send_text(&mut ws, setup_msg()).await;
    assert_eq!(
        next_json(&mut ws).await.unwrap().1,
        json!({"setupComplete": {}})
    );
    let _s = fake.next_session(T).await;
    assert_eq!(fake.connection_count(), 2);
}

#[test]
fn gemini_upsample_lengths() {
    assert_eq!(gemini::upsample_16k_to_24k(&[]).len(), 0);
    assert_eq!(gemini::upsample_16k_to_24k(&[5]).len(), 2);
    assert_eq!(gemini::upsample_16k_to_24k(&[0; 320]).len(), 480);
    assert_eq!(gemini::upsample_16k_to_24k(&[0, 300]), vec![0, 200, 300]);
}

// ------------------------------------------------------------------------------------------------
// FakeGemini's `setup.tools` rules

/// A setup offering one function declaration with these parameters.
fn setup_with_parameters(parameters: Value) -> Value {
    json!({"tools": [{"functionDeclarations": [
        {"name": "lookup_order", "description": "d", "parameters": parameters}
    ]}]})
}

/// Parameters with one property `p`.
fn one_property(p: Value) -> Value {
    json!({"type": "OBJECT", "properties": {"p": p}})
}

#[test]
fn gemini_tool_rules_accept_what_the_live_api_accepts() {
    use gemini_phone::config::ToolsConfig;
    use gemini_phone::tools::ToolBox;
    use gemini_phone::tools::schema::convert_parameters;

    // The built-in tools, as the server declares them.
    let builtins = ToolBox::load(&ToolsConfig {
        end_call: true,
        transfer_call: true,
        send_sms: true,
        ..Default::default()
    })
    .unwrap()
    .declarations();
    assert_eq!(builtins.len(), 3);
    let setup = json!({"tools": [{"functionDeclarations": builtins}]});
    assert_eq!(gemini::schema::check_setup_tools(&setup), Ok(()));

    // What the server's conversion makes of JSON Schema the API would refuse as is.
    let converted = convert_parameters(&json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "quantity": {"type": "integer", "enum": [1, 2, 3]},
            "email": {"type": "string", "format": "email"},
            "note": {},
            "floor": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "lines": {"type": "array", "items": {"properties": {"size": {"enum": [38, 40]}}}}
        },
        "required": ["quantity"]
    }))
    .unwrap()
    .schema
    .unwrap();
    assert_eq!(
        gemini::schema::check_setup_tools(&setup_with_parameters(converted)),
        Ok(())
    );

    // Hand-written declarations using the rest of what the API takes, in either key spelling.
    let rich = json!({"tools": [
        {"google_search": {}},
        {"function_declarations": [
            {"name": "_a.b:c-d", "behavior": "NON_BLOCKING"},
            {"name": "book", "description": "Book a slot", "parameters": {
                "type": "OBJECT",
                "properties": {
                    "when": {"type": "STRING", "format": "date-time", "nullable": true},
                    "count": {"type": "INTEGER", "format": "int64", "minimum": 1, "maximum": 9},
                    "price": {"type": "NUMBER", "format": "double"},
                    "kind": {"type": "STRING", "format": "enum", "enum": ["a", "b"], "title": "Kind"},
                    "tags": {"type": "ARRAY", "items": {"type": "STRING", "maxLength": "20"},
                             "min_items": 1, "maxItems": "5"},
                    "who": {"type": "OBJECT", "properties": {"name": {"type": "STRING"}},
                            "required": ["name"], "propertyOrdering": ["name"]}
                },
                "required": ["when", "count"]
            }}
        ]}
    ]});
    assert_eq!(gemini::schema::check_setup_tools(&rich), Ok(()));
    assert_eq!(
        gemini::schema::check_setup_tools(&json!({"model": "m"})),
        Ok(())
    );
}

#[test]
fn gemini_tool_rules_refuse_what_the_live_api_refuses() {
    let at = "setup.tools[0].function_declarations[0]";
    let cases = [
        (
            one_property(json!({"type": "INTEGER", "enum": [1, 2]})),
            format!("Invalid value at '{at}.parameters.properties[p].enum[0]' (TYPE_STRING), 1"),
        ),
        (
            one_property(json!({"type": "INTEGER", "enum": ["1", "2"]})),
            format!(
                "* BidiGenerateContentRequest.{at}.parameters.properties[p].enum: enum is only \
                 supported for STRING type."
            ),
        ),
        (
            one_property(json!({"type": "STRING", "format": "email"})),
            format!(
                "* BidiGenerateContentRequest.{at}.parameters.properties[p].format: only 'enum' \
                 and 'date-time' are supported for STRING type"
            ),
        ),
        (
            one_property(json!({"type": "NUMBER", "format": "int8"})),
            format!("{at}.parameters.properties[p].format: only 'float' and 'double'"),
        ),
        (
            one_property(json!({"type": "INTEGER", "format": "double"})),
            format!("{at}.parameters.properties[p].format: only 'int32' and 'int64'"),
        ),
        (
            one_property(json!({"description": "no type"})),
            format!("{at}.parameters.properties[p].type: missing field."),
        ),
        (
            one_property(json!({"type": "string"})),
            format!("Invalid value at '{at}.parameters.properties[p].type' (Type), \"string\""),
        ),
        (
            json!({"type": "OBJECT", "additionalProperties": false, "properties": {"p": {"type": "STRING"}}}),
            format!(
                "Invalid JSON payload received. Unknown name \"additionalProperties\" at \
                 '{at}.parameters': Cannot find field."
            ),
        ),
        (
            one_property(json!({"$ref": "#/$defs/X"})),
            "Unknown name \"$ref\"".to_owned(),
        ),
        (
            one_property(json!({"type": "OBJECT"})),
            format!(
                "{at}.parameters.properties[p].properties: should be non-empty for OBJECT type"
            ),
        ),
        (
            json!({"type": "OBJECT", "properties": {}}),
            format!("{at}.parameters.properties: should be non-empty for OBJECT type"),
        ),
        (
            one_property(json!({"type": "ARRAY"})),
            format!("{at}.parameters.properties[p].items: missing field."),
        ),
        (
            json!({"type": "OBJECT", "properties": {"items": {"type": "ARRAY", "items": {
                "type": "OBJECT", "properties": {"status": {"type": "STRING", "format": "uri"}}}}}}),
            format!("{at}.parameters.properties[items].items.properties[status].format: only"),
        ),
        (
            json!({"type": "OBJECT", "properties": {"a": {"type": "STRING"}}, "required": ["a", "b"]}),
            format!("{at}.parameters.required[1]: property is not defined"),
        ),
        (
            one_property(json!({"type": "STRING", "nullable": "yes"})),
            format!("Invalid value at '{at}.parameters.properties[p].nullable' (TYPE_BOOL)"),
        ),
        (
            json!({"type": "OBJECT", "properties": {"order-no": {"type": "STRING"}}}),
            format!("{at}.parameters.properties[order-no]: Invalid parameter name."),
        ),
        (
            json!({"type": "STRING"}),
            format!("{at}.parameters.type: must be OBJECT."),
        ),
    ];
    for (parameters, expected) in cases {
        let refusal = gemini::schema::check_setup_tools(&setup_with_parameters(parameters.clone()))
            .expect_err(&format!("should refuse {parameters}"));
        assert!(
            refusal.contains(&expected),
            "{parameters}\n  refused with: {refusal}\n  expected: {expected}"
        );
    }

    for name in ["2fa", "look up", "a/b", "", &"x".repeat(65)] {
        let setup = json!({"tools": [{"functionDeclarations": [{"name": name}]}]});
        let refusal = gemini::schema::check_setup_tools(&setup).unwrap_err();
        assert!(
            refusal.contains(&format!("{at}.name: Invalid function name.")),
            "{name:?}: {refusal}"
        );
    }
    for (setup, expected) in [
        (
            json!({"tools": [{"functionDeclarations": [{"name": "a", "parameter": {}}]}]}),
            "Unknown name \"parameter\" at 'setup.tools[0].function_declarations[0]'",
        ),
        (
            json!({"tools": [{"functions": []}]}),
            "Unknown name \"functions\" at 'setup.tools[0]'",
        ),
        (
            json!({"tools": [{"functionDeclarations": [{"name": "a", "behavior": "LATER"}]}]}),
            "Invalid value at 'setup.tools[0].function_declarations[0].behavior' (Behavior)",
        ),
    ] {
        let refusal = gemini::schema::check_setup_tools(&setup).unwrap_err();
        assert!(refusal.contains(expected), "{refusal}");
    }
}

#[tokio::test]
async fn gemini_refuses_a_setup_with_bad_tools_with_1007_naming_the_field() {
    let mut fake = FakeGemini::start(Behaviour::Normal).await;
    let mut ws = raw_connect(&fake.url()).await.unwrap();
    let mut setup = setup_msg();
    setup["setup"]["tools"] = setup_with_parameters(json!({"type": "OBJECT", "properties": {
        "email_address_of_the_caller": {"type": "STRING", "format": "email"}
    }}))["tools"]
        .clone();
    send_text(&mut ws, setup).await;

    let (code, reason) = next_close(&mut ws)
        .await
        .expect("a close frame, no setupComplete");
    assert_eq!(code, 1007);
    assert!(reason.len() <= 123, "a close reason fits a control frame");
    assert!(
        reason.starts_with(
            "* BidiGenerateContentRequest.setup.tools[0].function_declarations[0].parameters.properties[email_address_of_the_caller]"
        ),
        "{reason}"
    );
    let s = fake.next_session(T).await;
    let full = s.setup_refusal().expect("the refusal is recorded");
    assert!(full.starts_with(&reason), "{full}");
    assert!(full.ends_with("only 'enum' and 'date-time' are supported for STRING type"));
    assert!(
        s.violations()
            .iter()
            .any(|v| v.contains("setup refused (1007)"))
    );
}

// ------------------------------------------------------------------------------------------------
// Phone callers against a raw "bridge" server

/// A raw WebSocket server standing in for our bridge: records what the caller sends,
/// sends what the test tells it to.
struct MockBridge {
    url_base: String,
    inbox: mpsc::UnboundedReceiver<Value>,
    outbox: mpsc::UnboundedSender<Message>,
}

impl MockBridge {
    /// Start a one-connection mock bridge.
    async fn start() -> MockBridge {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url_base = format!("ws://{}", listener.local_addr().unwrap());
        let (in_tx, inbox) = mpsc::unbounded_channel();
        let (outbox, mut out_rx) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            loop {
                tokio::select! {
                    m = out_rx.recv() => match m {
                        Some(m) => { if ws.send(m).await.is_err() { break; } }
                        None => break,
                    },
                    m = ws.next() => match m {
                        Some(Ok(Message::Text(t))) => {
                            let v = serde_json::from_str(t.as_str())
                                .unwrap_or_else(|_| json!({"__text": t.as_str()}));
                            let _ = in_tx.send(v);
                        }
                        Some(Ok(Message::Binary(b))) => {
                            let _ = in_tx.send(json!({"__binary": b.len()}));
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    },
                }
            }
        });
        MockBridge {
            url_base,
            inbox,
            outbox,
        }
    }

    /// Next message the caller sent.
    async fn recv(&mut self) -> Value {
        tokio::time::timeout(T, self.inbox.recv())
            .await
            .expect("mock bridge: nothing received")
            .expect("mock bridge: connection ended")
    }

    /// Send a JSON message to the caller as a text frame.
    fn send(&self, v: Value) {
        self.outbox.send(Message::text(v.to_string())).unwrap();
    }

    /// Send a μ-law payload as Twilio outbound media.
    fn twilio_media(&self, sid: &str, bytes: &[u8]) {
        self.send(json!({"event": "media", "streamSid": sid, "media": {"payload": STANDARD.encode(bytes)}}));
    }

    /// Send a μ-law payload as Plivo playAudio.
    fn plivo_play(&self, bytes: &[u8]) {
        self.send(json!({"event": "playAudio", "media": {
            "contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": STANDARD.encode(bytes)}}));
    }
}

#[tokio::test]
async fn twilio_caller_sends_exact_provider_messages() {
    let mut bridge = MockBridge::start().await;
    let mut c = TwilioCaller::connect(&format!("{}/twilio/stream", bridge.url_base), T).await;
    c.send_connected().await;
    c.send_start(
        "CA1",
        "MZ1",
        &[("session", "tok"), ("direction", "outbound")],
    )
    .await;
    c.send_media(&[0x11; 400]).await; // 3 frames, last one padded
    c.send_dtmf('7').await;
    c.send_mark_echo("utt-1").await;
    c.send_stop().await;
    c.send_raw("not json").await;

    assert_eq!(
        bridge.recv().await,
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    );
    assert_eq!(
        bridge.recv().await,
        json!({"event": "start", "sequenceNumber": "1", "streamSid": "MZ1", "start": {
            "accountSid": phone::FAKE_TWILIO_ACCOUNT_SID, "streamSid": "MZ1", "callSid": "CA1",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"session": "tok", "direction": "outbound"}}})
    );
    for i in 0..3u32 {
        let m = bridge.recv().await;
        assert_eq!(m["event"], "media");
        assert_eq!(m["streamSid"], "MZ1");
        assert_eq!(m["sequenceNumber"], (i + 2).to_string());
        assert_eq!(m["media"]["chunk"], (i + 1).to_string());
        assert_eq!(m["media"]["timestamp"], (i * 20).to_string());
        assert_eq!(m["media"]["track"], "inbound");
        let p = STANDARD
            .decode(m["media"]["payload"].as_str().unwrap())
            .unwrap();
        assert_eq!(p.len(), 160);
        if i == 2 {
            assert_eq!(
                &p[80..],
                &[0xFF; 80],
                "last frame padded with μ-law silence"
            );
        }
    }
    assert_eq!(
        bridge.recv().await,
        json!({"event": "dtmf", "streamSid": "MZ1", "sequenceNumber": "5",
               "dtmf": {"track": "inbound_track", "digit": "7"}})
    );
    assert_eq!(
        bridge.recv().await,
        json!({"event": "mark", "sequenceNumber": "6", "streamSid": "MZ1", "mark": {"name": "utt-1"}})
    );
    assert_eq!(
        bridge.recv().await,
        json!({"event": "stop", "sequenceNumber": "7", "streamSid": "MZ1",
               "stop": {"accountSid": phone::FAKE_TWILIO_ACCOUNT_SID, "callSid": "CA1"}})
    );
    assert_eq!(bridge.recv().await, json!({"__text": "not json"}));
}

#[tokio::test]
async fn twilio_caller_collects_outbound_events_in_order() {
    let bridge = MockBridge::start().await;
    let mut c = TwilioCaller::connect(&format!("{}/twilio/stream", bridge.url_base), T).await;
    c.send_start("CA1", "MZ1", &[]).await;
    bridge.twilio_media("MZ1", &[1; 160]);
    bridge.twilio_media("MZ1", &[2; 160]);
    bridge.send(json!({"event": "mark", "streamSid": "MZ1", "mark": {"name": "m1"}}));
    bridge.twilio_media("MZ1", &[3; 160]);
    bridge.send(json!({"event": "clear", "streamSid": "MZ1"}));
    bridge.send(json!({"event": "weird"}));

    let r = c.recv_audio(2, T).await;
    assert_eq!(
        r.events,
        vec![Outbound::Media(vec![1; 160]), Outbound::Media(vec![2; 160])]
    );
    let r = c.recv_until(T, |r| r.clear_count() == 1).await.unwrap();
    assert_eq!(r.summary(), "mark(m1), media×1, clear");
    assert_eq!(r.marks(), vec!["m1".to_string()]);
    assert_eq!(r.media_after_last_clear(), Some(0));
    let rest = c.collect_for(SHORT).await;
    assert_eq!(rest.others(), vec![json!({"event": "weird"})]);
    assert!(!rest.closed);

    // Server closes → caller sees it.
    bridge
        .outbox
        .send(Message::Close(Some(CloseFrame {
            code: 1000.into(),
            reason: "done".into(),
        })))
        .unwrap();
    assert!(c.wait_closed(T).await);
    assert_eq!(c.ws.close_frame(), Some((1000, "done".to_string())));
    assert_eq!(c.recv(SHORT).await, None);
}

#[tokio::test]
#[should_panic(expected = "exactly 160")]
async fn twilio_caller_rejects_short_frames() {
    let bridge = MockBridge::start().await;
    let mut c = TwilioCaller::connect(&format!("{}/twilio/stream", bridge.url_base), T).await;
    c.send_start("CA1", "MZ1", &[]).await;
    bridge.twilio_media("MZ1", &[1; 100]);
    c.recv_audio(1, T).await;
}

#[tokio::test]
#[should_panic(expected = "wrong streamSid")]
async fn twilio_caller_rejects_wrong_stream_sid() {
    let bridge = MockBridge::start().await;
    let mut c = TwilioCaller::connect(&format!("{}/twilio/stream", bridge.url_base), T).await;
    c.send_start("CA1", "MZ1", &[]).await;
    bridge.twilio_media("MZ2", &[1; 160]);
    c.recv_audio(1, T).await;
}

#[tokio::test]
#[should_panic(expected = "wrong keys")]
async fn twilio_caller_rejects_extra_fields() {
    let bridge = MockBridge::start().await;
    let mut c = TwilioCaller::connect(&format!("{}/twilio/stream", bridge.url_base), T).await;
    c.send_start("CA1", "MZ1", &[]).await;
    bridge.send(json!({"event": "media", "streamSid": "MZ1",
                       "media": {"payload": STANDARD.encode([1u8; 160]), "track": "outbound"}}));
    c.recv_audio(1, T).await;
}

#[tokio::test]
#[should_panic(expected = "binary frame")]
async fn twilio_caller_rejects_binary_frames() {
    let bridge = MockBridge::start().await;
    let mut c = TwilioCaller::connect(&format!("{}/twilio/stream", bridge.url_base), T).await;
    bridge
        .outbox
        .send(Message::binary(vec![1u8, 2, 3]))
        .unwrap();
    c.recv(T).await;
}

#[tokio::test]
#[should_panic(expected = "expected 3 media frames")]
async fn twilio_caller_recv_audio_fails_fast_on_shortfall() {
    let bridge = MockBridge::start().await;
    let mut c = TwilioCaller::connect(&format!("{}/twilio/stream", bridge.url_base), T).await;
    c.send_start("CA1", "MZ1", &[]).await;
    bridge.twilio_media("MZ1", &[1; 160]);
    c.recv_audio(3, SHORT).await;
}

#[tokio::test]
async fn plivo_caller_sends_exact_provider_messages() {
    let mut bridge = MockBridge::start().await;
    let mut c = PlivoCaller::connect(&format!("{}/plivo/stream", bridge.url_base), T).await;
    c.send_start("call-uuid", "stream-uuid", "session=tok;dir=out")
        .await;
    c.send_media(&[0x22; 320]).await;
    c.send_dtmf('#').await;
    c.send_played_stream("utt-1").await;
    c.send_cleared_audio().await;
    c.send_stop().await;
    c.send_binary(&[9, 9]).await;

    assert_eq!(
        bridge.recv().await,
        json!({"event": "start", "sequenceNumber": 1, "extra_headers": "session=tok;dir=out",
               "start": {"callId": "call-uuid", "streamId": "stream-uuid",
                         "accountId": phone::FAKE_PLIVO_ACCOUNT_ID, "tracks": ["inbound"],
                         "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}})
    );
    let mut first_ts = 0u64;
    for i in 0..2u64 {
        let m = bridge.recv().await;
        assert_eq!(m["event"], "media");
        assert_eq!(m["sequenceNumber"], i + 2);
        assert_eq!(m["streamId"], "stream-uuid");
        assert_eq!(m["extra_headers"], "session=tok;dir=out");
        assert_eq!(m["media"]["chunk"], i + 1);
        assert_eq!(m["media"]["track"], "inbound");
        let ts: u64 = m["media"]["timestamp"]
            .as_str()
            .expect("string timestamp")
            .parse()
            .unwrap();
        if i == 0 {
            first_ts = ts;
        } else {
            assert_eq!(ts, first_ts + 20);
        }
        let p = STANDARD
            .decode(m["media"]["payload"].as_str().unwrap())
            .unwrap();
        assert_eq!(p, vec![0x22; 160]);
    }
    let d = bridge.recv().await;
    assert_eq!(d["event"], "dtmf");
    assert_eq!(d["sequenceNumber"], 4);
    assert_eq!(d["dtmf"]["digit"], "#");
    assert_eq!(d["dtmf"]["track"], "inbound");
    assert!(d["dtmf"]["timestamp"].is_string());
    assert_eq!(
        bridge.recv().await,
        json!({"event": "playedStream", "sequenceNumber": 5, "streamId": "stream-uuid", "name": "utt-1"})
    );
    assert_eq!(
        bridge.recv().await,
        json!({"event": "clearedAudio", "sequenceNumber": 6, "streamId": "stream-uuid"})
    );
    assert_eq!(
        bridge.recv().await,
        json!({"event": "stop", "sequenceNumber": 7, "streamId": "stream-uuid"})
    );
    assert_eq!(bridge.recv().await, json!({"__binary": 2}));
}

#[tokio::test]
async fn plivo_caller_collects_outbound_events_in_order() {
    let bridge = MockBridge::start().await;
    let mut c = PlivoCaller::connect(&format!("{}/plivo/stream", bridge.url_base), T).await;
    c.send_start("call-uuid", "S1", "").await;
    bridge.plivo_play(&[1; 160]);
    bridge.send(json!({"event": "checkpoint", "streamId": "S1", "name": "cp"}));
    bridge.send(json!({"event": "playAudio", "streamId": "S1", "media": {
        "contentType": "audio/x-mulaw", "sampleRate": "8000", "payload": STANDARD.encode([2u8; 160])}}));
    bridge.send(json!({"event": "clearAudio", "streamId": "S1"}));
    let r = c.recv_audio(2, T).await;
    assert_eq!(
        r.events,
        vec![
            Outbound::Media(vec![1; 160]),
            Outbound::Mark("cp".to_string()),
            Outbound::Media(vec![2; 160])
        ]
    );
    assert_eq!(r.audio().len(), 320);
    let r = c.collect_for(SHORT).await;
    assert_eq!(r.events, vec![Outbound::Clear]);
    assert_eq!(r.media_after_last_clear(), Some(0));
    drop(bridge); // mock task ends → socket closes
    assert!(c.wait_closed(T).await);
}

#[tokio::test]
#[should_panic(expected = "contentType must be audio/x-mulaw")]
async fn plivo_caller_rejects_wrong_content_type() {
    let bridge = MockBridge::start().await;
    let mut c = PlivoCaller::connect(&format!("{}/plivo/stream", bridge.url_base), T).await;
    c.send_start("call-uuid", "S1", "").await;
    bridge.send(json!({"event": "playAudio", "media": {
        "contentType": "audio/x-mulaw;rate=8000", "sampleRate": 8000, "payload": STANDARD.encode([2u8; 160])}}));
    c.recv_audio(1, T).await;
}

#[tokio::test]
async fn callers_report_connect_failures() {
    // Nothing listens on this port once the listener is dropped.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/twilio/stream", l.local_addr().unwrap());
    drop(l);
    assert!(
        TwilioCaller::connect_with_headers(&url, &[], T)
            .await
            .is_err()
    );
    assert!(
        PlivoCaller::connect_with_headers(&url, &[], T)
            .await
            .is_err()
    );
}

// ------------------------------------------------------------------------------------------------
// Audio helpers

#[test]
fn mulaw_codec_matches_g711() {
    use phone::{linear_to_mulaw, mulaw_to_linear};
    assert_eq!(linear_to_mulaw(0), 0xFF);
    assert_eq!(linear_to_mulaw(i16::MAX), 0x80);
    assert_eq!(linear_to_mulaw(i16::MIN), 0x00);
    assert_eq!(mulaw_to_linear(0xFF), 0);
    assert_eq!(mulaw_to_linear(0x80), 32124);
    assert_eq!(mulaw_to_linear(0x00), -32124);
    // Every code decodes and re-encodes to itself (0x7F, "negative zero", maps to 0 → 0xFF).
    for b in 0u8..=255 {
        if b != 0x7F {
            assert_eq!(linear_to_mulaw(mulaw_to_linear(b)), b, "code {b:#x}");
        }
    }
    // Quantisation error stays within the segment step (≤ ~3 %).
    for s in (-32000i32..32000).step_by(97) {
        let back = mulaw_to_linear(linear_to_mulaw(s as i16)) as i32;
        assert!(
            (back - s).abs() <= (s.abs() / 32).max(8) + 4,
            "{s} -> {back}"
        );
    }
}

#[test]
fn tones_have_the_right_length_and_frequency() {
    let t = phone::mulaw_tone(440.0, 100);
    assert_eq!(t.len(), 800);
    let pcm = phone::mulaw_decode(&t);
    let a = phone::tone_amplitude(&pcm, 8000, 440.0);
    assert!((a - 8000.0).abs() < 300.0, "440 Hz amplitude {a}");
    assert!(phone::tone_amplitude(&pcm, 8000, 1000.0) < 300.0);
    let p = phone::pcm_tone_24k(300.0, 20, 10_000);
    assert_eq!(p.len(), 480);
    assert!((phone::rms(&p) - 10_000.0 / 2f64.sqrt()).abs() < 100.0);
    assert_eq!(phone::mulaw_silence(20), vec![0xFF; 160]);
}

// ---------------------------------------------------------------------------------------
// FakeRest: call lookups and refusing malformed call ids, like the real REST APIs.

#[path = "support/rest.rs"]
mod fake_rest;

mod fake_rest_selftest {
    use super::fake_rest::{FakeRest, PLIVO_ID, PLIVO_TOKEN, TWILIO_SID, TWILIO_TOKEN};
    use serde_json::{Value, json};

    const SID: &str = "CA00000000000000000000000000000abc";
    const UUID: &str = "00000abc-0000-4000-8000-000000000abc";

    fn client() -> reqwest::Client {
        gemini_phone::telephony::rest::install_crypto_provider();
        reqwest::Client::new()
    }

    async fn twilio(
        rest: &FakeRest,
        method: &str,
        call: &str,
        form: &[(&str, &str)],
    ) -> (u16, Value) {
        let url = format!(
            "{}/2010-04-01/Accounts/{TWILIO_SID}/Calls/{call}",
            rest.url()
        );
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = client()
            .request(method, url)
            .basic_auth(TWILIO_SID, Some(TWILIO_TOKEN))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn plivo(rest: &FakeRest, method: &str, path: &str) -> (u16, Value) {
        let url = format!("{}/v1/Account/{PLIVO_ID}/{path}", rest.url());
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = client()
            .request(method, url)
            .basic_auth(PLIVO_ID, Some(PLIVO_TOKEN))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn twilio_calls_are_looked_up_and_updated_by_sid_only() {
        let rest = FakeRest::start().await;
        let (status, body) = twilio(&rest, "GET", &format!("{SID}.json"), &[]).await;
        assert_eq!(
            (status, &body["code"]),
            (404, &json!(20404)),
            "unknown call"
        );

        rest.set_call_status(SID, "ringing");
        let (status, body) = twilio(&rest, "GET", &format!("{SID}.json"), &[]).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("ringing")));
        assert_eq!(body["sid"], SID);

        let (status, _) = twilio(
            &rest,
            "POST",
            &format!("{SID}.json"),
            &[("Status", "canceled")],
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(rest.call_status(SID).as_deref(), Some("canceled"));

        for bad in [
            "CA1.json",
            "..%2FIncomingPhoneNumbers%2FPN1.json",
            "SM00000000000000000000000000000abc.json",
        ] {
            for method in ["GET", "POST"] {
                let (status, body) = twilio(&rest, method, bad, &[("Status", "completed")]).await;
                assert_eq!(
                    (status, &body["code"]),
                    (404, &json!(20404)),
                    "{method} {bad}"
                );
            }
        }
    }

    #[tokio::test]
    async fn twilio_dialled_calls_start_queued() {
        let rest = FakeRest::start().await;
        let url = format!("{}/2010-04-01/Accounts/{TWILIO_SID}/Calls.json", rest.url());
        let created: Value = client()
            .post(url)
            .basic_auth(TWILIO_SID, Some(TWILIO_TOKEN))
            .form(&[("To", "+15551234567")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let sid = created["sid"].as_str().unwrap();
        assert!(sid.len() == 34 && sid.starts_with("CA"), "{sid}");
        assert_eq!(rest.call_status(sid).as_deref(), Some("queued"));
    }

    #[tokio::test]
    async fn plivo_answers_each_lookup_for_its_own_calls() {
        let rest = FakeRest::start().await;
        let (status, created) = plivo(&rest, "POST", "Call/").await;
        assert_eq!(status, 201);
        let request_uuid = created["request_uuid"].as_str().unwrap().to_owned();
        assert_eq!(request_uuid.len(), 36, "{request_uuid}");

        let call = format!("Call/{request_uuid}/");
        assert_eq!(
            plivo(&rest, "GET", &format!("{call}?status=live")).await.0,
            404
        );
        let (status, queued) = plivo(&rest, "GET", &format!("{call}?status=queued")).await;
        assert_eq!(
            (status, queued["call_status"].as_str()),
            (200, Some("queued"))
        );

        rest.set_call_status(UUID, "in-progress");
        let call = format!("Call/{UUID}/");
        let (status, live) = plivo(&rest, "GET", &format!("{call}?status=live")).await;
        assert_eq!(
            (status, live["call_status"].as_str()),
            (200, Some("in-progress"))
        );
        assert_eq!(
            plivo(&rest, "GET", &call).await.0,
            404,
            "no detail record while live"
        );

        assert_eq!(plivo(&rest, "DELETE", &call).await.0, 204);
        assert_eq!(rest.call_status(UUID).as_deref(), Some("completed"));
        assert_eq!(
            plivo(&rest, "GET", &format!("{call}?status=live")).await.0,
            404
        );
        let (status, record) = plivo(&rest, "GET", &call).await;
        assert_eq!(status, 200);
        assert_eq!(record["call_uuid"], UUID);
        assert!(record["answer_time"].is_string(), "{record}");
        assert_eq!(record["hangup_cause_name"], "Normal Hangup");

        rest.set_call_status(UUID, "busy");
        let (_, record) = plivo(&rest, "GET", &call).await;
        assert!(record["answer_time"].is_null(), "{record}");
    }

    #[tokio::test]
    async fn plivo_refuses_paths_whose_call_id_is_not_a_uuid() {
        let rest = FakeRest::start().await;
        let unknown = format!("Call/{UUID}/");
        let (status, body) = plivo(&rest, "GET", &unknown).await;
        assert_eq!(status, 404);
        assert!(body["error"].is_string(), "Plivo's error shape: {body}");
        for path in [
            "Call/uuid-1/",
            "Call/..%2FNumber%2F15550002222/",
            "Request/req-1/",
            "Number/15550002222/",
        ] {
            for method in ["GET", "POST", "DELETE"] {
                let (status, body) = plivo(&rest, method, path).await;
                assert_eq!(status, 404, "{method} {path}: {body}");
            }
        }
        assert_eq!(
            plivo(&rest, "DELETE", &format!("Request/{UUID}/")).await.0,
            204
        );
    }
}

// ---------------------------------------------------------------------------------------
// FakeRest: accounts, numbers and Plivo applications for number set-up, with the providers'
// field names, 404 for what the account does not hold, and refusal of undocumented fields.

mod fake_rest_numbers_selftest {
    use super::fake_rest::{FakeRest, PLIVO_ID, PLIVO_TOKEN, TWILIO_SID, TWILIO_TOKEN};
    use serde_json::{Value, json};

    async fn send(
        rest: &FakeRest,
        method: &str,
        path: &str,
        auth: (&str, &str),
        body: Body<'_>,
    ) -> (u16, Value) {
        gemini_phone::telephony::rest::install_crypto_provider();
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let request = reqwest::Client::new()
            .request(method, format!("{}{path}", rest.url()))
            .basic_auth(auth.0, Some(auth.1));
        let request = match body {
            Body::None => request,
            Body::Form(form) => request.form(form),
            Body::Json(json) => request.json(&json),
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    enum Body<'a> {
        None,
        Form(&'a [(&'a str, &'a str)]),
        Json(Value),
    }

    const TWILIO: (&str, &str) = (TWILIO_SID, TWILIO_TOKEN);
    const PLIVO: (&str, &str) = (PLIVO_ID, PLIVO_TOKEN);

    fn numbers_path() -> String {
        format!("/2010-04-01/Accounts/{TWILIO_SID}/IncomingPhoneNumbers")
    }

    #[tokio::test]
    async fn twilio_account_and_numbers_answer_with_twilio_fields() {
        let rest = FakeRest::start().await;
        let account = format!("/2010-04-01/Accounts/{TWILIO_SID}.json");
        let (status, body) = send(&rest, "GET", &account, TWILIO, Body::None).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("active")));
        let (status, _) = send(&rest, "GET", &account, (TWILIO_SID, "bad"), Body::None).await;
        assert_eq!(status, 401);

        let sid = rest.seed_twilio_number("+15550009999", None);
        rest.seed_twilio_number("+14155550100", None);
        let list = format!("{}.json?PhoneNumber=%2B15550009999", numbers_path());
        let (status, body) = send(&rest, "GET", &list, TWILIO, Body::None).await;
        assert_eq!(status, 200);
        let listed = body["incoming_phone_numbers"].as_array().unwrap();
        assert_eq!(listed.len(), 1, "{body}");
        assert_eq!(listed[0]["sid"], sid.as_str());
        assert!(listed[0]["voice_url"].is_null());
        assert_eq!(listed[0]["voice_application_sid"], "");
        // Partial numbers and `*` match, as Twilio's filter does.
        let partial = format!("{}.json?PhoneNumber=555*009", numbers_path());
        let (_, body) = send(&rest, "GET", &partial, TWILIO, Body::None).await;
        assert_eq!(body["incoming_phone_numbers"].as_array().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn twilio_number_updates_take_documented_fields_only() {
        let rest = FakeRest::start().await;
        let sid = rest.seed_twilio_number("+15550009999", None);
        let path = format!("{}/{sid}.json", numbers_path());
        let form = [
            ("VoiceUrl", "https://h.io/twilio/answer"),
            ("VoiceMethod", "POST"),
        ];
        let (status, body) = send(&rest, "POST", &path, TWILIO, Body::Form(&form)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["voice_url"], "https://h.io/twilio/answer");
        assert_eq!(
            rest.twilio_number("+15550009999").unwrap()["voice_url"],
            "https://h.io/twilio/answer"
        );
        for refused in [[("VoiceURL", "https://h.io/x")], [("VoiceMethod", "PUT")]] {
            let (status, body) = send(&rest, "POST", &path, TWILIO, Body::Form(&refused)).await;
            assert_eq!(status, 400, "{refused:?} accepted: {body}");
            assert!(body["code"].is_number() && body["message"].is_string());
        }
        let unknown = format!("{}/PN{:032x}.json", numbers_path(), 1);
        let (status, _) = send(&rest, "POST", &unknown, TWILIO, Body::Form(&form)).await;
        assert_eq!(status, 404);
    }

    #[tokio::test]
    async fn plivo_numbers_and_applications_answer_with_plivo_fields() {
        let rest = FakeRest::start().await;
        let base = format!("/v1/Account/{PLIVO_ID}/");
        let (status, account) = send(&rest, "GET", &base, PLIVO, Body::None).await;
        assert_eq!((status, account["auth_id"].as_str()), (200, Some(PLIVO_ID)));
        let (status, _) = send(&rest, "GET", &base, (PLIVO_ID, "bad"), Body::None).await;
        assert_eq!(status, 401);

        let number = format!("{base}Number/15550008888/");
        let (status, _) = send(&rest, "GET", &number, PLIVO, Body::None).await;
        assert_eq!(status, 404, "unknown number");
        rest.seed_plivo_number("15550008888", None);
        let (status, body) = send(&rest, "GET", &number, PLIVO, Body::None).await;
        assert_eq!(
            (status, body["number"].as_str()),
            (200, Some("15550008888"))
        );
        assert!(body["application"].is_null());

        let apps = format!("{base}Application/");
        let create = json!({"app_name": "gemini-phone", "answer_url": "https://h.io/plivo/answer",
                            "answer_method": "POST"});
        let (status, created) = send(&rest, "POST", &apps, PLIVO, Body::Json(create)).await;
        assert_eq!(
            (status, created["message"].as_str()),
            (201, Some("created"))
        );
        let app_id = created["app_id"].as_str().unwrap().to_owned();
        let (status, app) =
            send(&rest, "GET", &format!("{apps}{app_id}/"), PLIVO, Body::None).await;
        assert_eq!(
            (status, app["answer_url"].as_str()),
            (200, Some("https://h.io/plivo/answer"))
        );

        let attach = json!({"app_id": app_id});
        let (status, _) = send(&rest, "POST", &number, PLIVO, Body::Json(attach)).await;
        assert_eq!(status, 202);
        assert_eq!(
            rest.plivo_number("15550008888").unwrap()["application"],
            format!("/v1/Account/{PLIVO_ID}/Application/{app_id}/")
        );
    }

    #[tokio::test]
    async fn plivo_refuses_undocumented_fields_and_unknown_applications() {
        let rest = FakeRest::start().await;
        rest.seed_plivo_number("15550008888", None);
        let base = format!("/v1/Account/{PLIVO_ID}/");
        let number = format!("{base}Number/15550008888/");
        let apps = format!("{base}Application/");
        let app_id = rest.seed_plivo_app("gemini-phone", "https://h.io/a", "");
        for (path, body) in [
            (number.clone(), json!({"application": app_id})),
            (
                apps.clone(),
                json!({"app_name": "x", "answerUrl": "https://h.io"}),
            ),
            (apps.clone(), json!({"answer_url": "https://h.io"})),
            (format!("{apps}{app_id}/"), json!({"app_name": "renamed"})),
            (format!("{apps}{app_id}/"), json!({"answer_method": "PUT"})),
        ] {
            let (status, answer) =
                send(&rest, "POST", &path, PLIVO, Body::Json(body.clone())).await;
            assert_eq!(status, 400, "{path} {body} accepted: {answer}");
            assert!(answer["error"].is_string(), "Plivo's error shape: {answer}");
        }
        let (status, _) = send(
            &rest,
            "POST",
            &number,
            PLIVO,
            Body::Json(json!({"app_id": "999"})),
        )
        .await;
        assert_eq!(status, 404, "attaching an application that does not exist");
        let (status, _) = send(&rest, "GET", &format!("{apps}999/"), PLIVO, Body::None).await;
        assert_eq!(status, 404);
    }

    #[tokio::test]
    async fn plivo_lists_applications_twenty_at_a_time() {
        let rest = FakeRest::start().await;
        for n in 0..25 {
            rest.seed_plivo_app(&format!("app-{n}"), "https://h.io/a", "");
        }
        let apps = format!("/v1/Account/{PLIVO_ID}/Application/");
        let (_, first) = send(
            &rest,
            "GET",
            &format!("{apps}?limit=20&offset=0"),
            PLIVO,
            Body::None,
        )
        .await;
        assert_eq!(first["objects"].as_array().unwrap().len(), 20);
        assert!(first["meta"]["next"].is_string(), "{}", first["meta"]);
        let (_, second) = send(
            &rest,
            "GET",
            &format!("{apps}?limit=20&offset=20"),
            PLIVO,
            Body::None,
        )
        .await;
        assert_eq!(second["objects"].as_array().unwrap().len(), 5);
        assert!(second["meta"]["next"].is_null());
        assert_eq!(second["meta"]["total_count"], 25);
        let (status, _) = send(&rest, "GET", &format!("{apps}?limit=50"), PLIVO, Body::None).await;
        assert_eq!(status, 400, "Plivo pages hold at most 20");
    }
}

/// `AnswerText` speaks once per text turn, in either form (3.x `realtimeInput.text`, 2.5
/// `clientContent`), and stays silent for audio and for content that is not a turn.
#[tokio::test]
async fn gemini_answer_text_speaks_once_per_text_turn() {
    let mut fake = FakeGemini::start(Behaviour::AnswerText).await;
    let mut ws = raw_connect(&fake.url()).await.unwrap();
    send_text(&mut ws, setup_msg()).await;
    assert_eq!(
        next_json(&mut ws).await.unwrap().1,
        json!({"setupComplete": {}})
    );
    let mut session = fake.next_session(T).await;

    let assert_spoken_answer = |first: Value, second: Value| {
        let part = &first["serverContent"]["modelTurn"]["parts"][0]["inlineData"];
        assert_eq!(part["mimeType"], "audio/pcm;rate=24000", "{first}");
        let pcm =
            gemini::le_bytes_to_pcm16(&STANDARD.decode(part["data"].as_str().unwrap()).unwrap());
        assert_eq!(pcm.len(), gemini::SPOKEN_ANSWER_SAMPLES);
        assert!(pcm.iter().any(|s| *s != 0), "the answer is not silence");
        assert_eq!(second, json!({"serverContent": {"turnComplete": true}}));
    };
    send_text(&mut ws, json!({"realtimeInput": {"text": "Hello?"}})).await;
    let (binary, first) = next_json(&mut ws).await.unwrap();
    assert!(binary, "server frames are binary");
    assert_spoken_answer(first, next_json(&mut ws).await.unwrap().1);

    let turn = json!({"clientContent": {"turns": [{"role": "user", "parts": [{"text": "Hi"}]}], "turnComplete": true}});
    send_text(&mut ws, turn).await;
    let first = next_json(&mut ws).await.unwrap().1;
    assert_spoken_answer(first, next_json(&mut ws).await.unwrap().1);

    // Neither audio nor history without turnComplete asks for an answer.
    send_text(&mut ws, audio_msg(&[0; 160])).await;
    let history = json!({"clientContent": {"turns": [{"role": "user", "parts": [{"text": "Hi"}]}], "turnComplete": false}});
    send_text(&mut ws, history).await;
    assert!(
        tokio::time::timeout(SHORT, ws.next()).await.is_err(),
        "no answer without a text turn"
    );
    assert_eq!(
        session.recv(T).await.unwrap()["realtimeInput"]["text"],
        "Hello?"
    );
}

// ---- The fake Gemini acting as Vertex AI ----

/// Connects to the fake's Vertex URL with `Authorization: Bearer <bearer>`; the HTTP status
/// of a refused upgrade, or the socket.
async fn vertex_connect(url: &str, bearer: &str) -> Result<Client, u16> {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {bearer}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("unexpected error {other}"),
    }
}

#[tokio::test]
async fn fake_gemini_as_vertex_checks_the_bearer_token_path_and_model() {
    let fake = FakeGemini::start(Behaviour::Normal).await;
    let mode = gemini::VertexMode {
        live_tokens: Default::default(),
        project: "acme".into(),
        location: "us-central1".into(),
    };
    mode.live_tokens.lock().unwrap().insert("ya29.live".into());
    fake.act_as_vertex(mode.clone());

    // A token it never issued, or one that lapsed, is refused as Vertex refuses it.
    assert_eq!(
        vertex_connect(&fake.vertex_url(), "ya29.other").await.err(),
        Some(401)
    );
    // The AI Studio path is not a Vertex endpoint.
    assert_eq!(
        vertex_connect(&fake.url(), "ya29.live").await.err(),
        Some(404)
    );

    // An AI Studio model name is refused at setup.
    let mut ws = vertex_connect(&fake.vertex_url(), "ya29.live")
        .await
        .unwrap();
    send_text(&mut ws, setup_msg()).await;
    let (code, reason) = next_close(&mut ws)
        .await
        .expect("a close instead of setupComplete");
    assert_eq!(code, 1007);
    assert_eq!(
        reason,
        "Invalid Vertex model resource: models/gemini-3.8-live"
    );

    // The full Vertex model path with a live token completes setup.
    let mut ws = vertex_connect(&fake.vertex_url(), "ya29.live")
        .await
        .unwrap();
    let model = "projects/acme/locations/us-central1/publishers/google/models/gemini-live-2.5-flash-native-audio";
    send_text(
        &mut ws,
        json!({"setup": {"model": model, "generationConfig": {"responseModalities": ["AUDIO"]}}}),
    )
    .await;
    assert_eq!(
        next_json(&mut ws).await.unwrap().1,
        json!({"setupComplete": {}})
    );
    let handshakes = fake.handshakes();
    assert_eq!(
        handshakes.last().unwrap().header("authorization"),
        Some("Bearer ya29.live")
    );

    // Once the token lapses it is refused again.
    mode.live_tokens.lock().unwrap().clear();
    assert_eq!(
        vertex_connect(&fake.vertex_url(), "ya29.live").await.err(),
        Some(401)
    );
}

/// The fake phone's playout: frames play back to back from their arrival, marks fall due when
/// the audio before them has played, and a clear drops what has not (Twilio echoing the
/// pending marks, Plivo not).
#[test]
fn playback_plays_in_real_time_and_a_clear_drops_the_rest() {
    use playback::{FRAME, Playback};
    use tokio::time::Instant;

    for provider in [phone::Provider::Twilio, phone::Provider::Plivo] {
        let t0 = Instant::now();
        let mut played = Playback::new(provider);
        for _ in 0..10 {
            played.media(t0);
        }
        played.mark("m1".into(), t0);
        assert_eq!(played.max_held, FRAME * 10);
        assert_eq!(played.next_mark_due(), Some(t0 + FRAME * 10));
        assert!(played.marks_due(t0 + FRAME * 9).is_empty());
        assert_eq!(played.marks_due(t0 + FRAME * 10), ["m1"]);
        // A late frame after a gap starts playing when it arrives.
        let late = t0 + FRAME * 15;
        played.media(late);
        assert_eq!(played.held_at(late), FRAME);
        assert_eq!(played.heard_until(late + FRAME * 5), FRAME * 11);
        // Five more, then a clear two frames in: three frames never play.
        for _ in 0..5 {
            played.media(late + FRAME);
        }
        played.mark("m2".into(), late + FRAME);
        let clear_at = late + FRAME * 3;
        let echoed = played.clear(clear_at);
        assert_eq!(
            played.heard_between(clear_at, clear_at + FRAME * 10),
            Duration::ZERO
        );
        assert_eq!(played.heard_until(clear_at + FRAME * 10), FRAME * 13);
        let expected: &[&str] = match provider {
            phone::Provider::Twilio => &["m2"],
            phone::Provider::Plivo => &[],
        };
        assert_eq!(echoed, expected);
        assert_eq!(played.next_mark_due(), None);
    }
}

//! Function calling, end to end: the fake Gemini issues `toolCall`s; the tests check the
//! `toolResponse`s, the provider REST calls (hang-up, transfer, SMS) against the fake REST
//! API, and the user's HTTP tools against a local test server.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};
use support::gemini::{Behaviour, FakeGemini, GeminiSession};
use support::phone::{PlivoCaller, Provider, TwilioCaller, pcm_tone_24k};
use support::rest::{FakeRest, PLIVO_ID, TWILIO_SID};
use support::{API_TOKEN, TestServer};

const WAIT: Duration = Duration::from_secs(5);

/// One request to the tool service: endpoint, JSON body, `X-Api-Key` header.
type SeenRequest = (String, Value, Option<String>);

/// A local stand-in for the user's own HTTP services.
#[derive(Clone, Default)]
struct ToolService {
    seen: Arc<Mutex<Vec<SeenRequest>>>,
}

async fn tool_endpoint(
    State(service): State<ToolService>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (axum::http::StatusCode, Json<Value>) {
    let auth = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    service
        .seen
        .lock()
        .unwrap()
        .push((kind.clone(), body, auth));
    match kind.as_str() {
        "ok" => (
            axum::http::StatusCode::OK,
            Json(json!({"status": "shipped", "eta": "Tuesday"})),
        ),
        "fail" => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"oops": true})),
        ),
        "slow" => {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            (axum::http::StatusCode::OK, Json(json!({"late": true})))
        }
        "quick" => {
            tokio::time::sleep(Duration::from_millis(50)).await;
            (axum::http::StatusCode::OK, Json(json!({"quick": true})))
        }
        _ => (axum::http::StatusCode::NOT_FOUND, Json(json!({}))),
    }
}

struct World {
    rest: FakeRest,
    gemini: FakeGemini,
    server: TestServer,
    service: ToolService,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start(extra: &[(&str, &str)]) -> World {
        World::start_with_tools(extra, Vec::new()).await
    }

    /// Like [`World::start`], with `more_tools` added to the tools file; their `url` is a path
    /// on the local tool service (e.g. `/tool/ok`).
    async fn start_with_tools(extra: &[(&str, &str)], more_tools: Vec<Value>) -> World {
        let service = ToolService::default();
        let app = axum::Router::new()
            .route("/tool/{kind}", axum::routing::post(tool_endpoint))
            .with_state(service.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tools.json");
        let more_tools = more_tools.into_iter().map(|mut tool| {
            let path = tool["url"].as_str().unwrap_or_default().to_owned();
            tool["url"] = json!(format!("{base}{path}"));
            tool
        });
        let mut tools = json!({"tools": [
            {"name": "order_status", "description": "Order status by number",
             "parameters": {"type": "object", "properties": {"order_number": {"type": "string"}}, "required": ["order_number"]},
             "url": format!("{base}/tool/ok"), "headers": {"X-Api-Key": "k-123"}},
            {"name": "broken", "description": "Always fails", "url": format!("{base}/tool/fail")},
            {"name": "slow", "description": "Takes its time", "url": format!("{base}/tool/slow"), "timeout_ms": 300},
            {"name": "slow_ok", "description": "Takes its time", "url": format!("{base}/tool/slow"), "timeout_ms": 5000},
            {"name": "quick", "description": "Fast", "url": format!("{base}/tool/quick")}
        ]});
        tools["tools"].as_array_mut().unwrap().extend(more_tools);
        std::fs::write(&file, tools.to_string()).unwrap();

        let rest = FakeRest::start().await;
        let gemini = FakeGemini::start(Behaviour::Normal).await;
        let file = file.display().to_string();
        let mut vars = vec![
            ("BUILTIN_TOOLS", "end_call,transfer_call,send_sms"),
            ("TRANSFER_NUMBER", "+15550100000"),
            ("TOOL_ALLOWED_NUMBERS", "+15550100001"),
            ("TOOLS_FILE", file.as_str()),
        ];
        vars.extend_from_slice(extra);
        let server = TestServer::with_providers(&rest.url(), &gemini.url(), &vars).await;
        World {
            rest,
            gemini,
            server,
            service,
            _dir: dir,
        }
    }

    async fn twilio_call(&mut self, call_sid: &str) -> (TwilioCaller, GeminiSession) {
        let params = self
            .server
            .answer(
                Provider::Twilio,
                call_sid,
                &[("From", "+15557770000"), ("To", "+15550009999")],
            )
            .await;
        let params: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut caller = TwilioCaller::connect(&self.server.ws("/twilio/stream"), WAIT).await;
        caller.send_connected().await;
        caller.send_start(call_sid, "MZ1", &params).await;
        let mut session = self.gemini.next_session(WAIT).await;
        let _greeting = next_message(&mut session).await;
        (caller, session)
    }

    async fn plivo_call(&mut self, call_uuid: &str) -> (PlivoCaller, GeminiSession) {
        let params = self
            .server
            .answer(
                Provider::Plivo,
                call_uuid,
                &[("From", "15557770000"), ("To", "15550008888")],
            )
            .await;
        let extra = params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";");
        let mut caller = PlivoCaller::connect(&self.server.ws("/plivo/stream"), WAIT).await;
        caller.send_start(call_uuid, "s-1", &extra).await;
        let mut session = self.gemini.next_session(WAIT).await;
        let _greeting = next_message(&mut session).await;
        (caller, session)
    }
}

/// The next message from the bridge that is not caller audio.
async fn next_message(session: &mut GeminiSession) -> Value {
    loop {
        let msg = session.recv(WAIT).await.expect("a message from the bridge");
        if msg.pointer("/realtimeInput/audio").is_none() {
            return msg;
        }
    }
}

/// The next `functionResponses[0]`.
async fn next_tool_response(session: &mut GeminiSession) -> Value {
    let msg = next_message(session).await;
    msg["toolResponse"]["functionResponses"][0].clone()
}

#[tokio::test]
async fn tools_are_declared_in_setup() {
    let mut world = World::start(&[]).await;
    let (_caller, session) = world.twilio_call("CAdecl").await;
    let declarations = session.setup()["setup"]["tools"][0]["functionDeclarations"].clone();
    let names: Vec<&str> = declarations
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "end_call",
            "transfer_call",
            "send_sms",
            "order_status",
            "broken",
            "slow",
            "slow_ok",
            "quick"
        ]
    );
    assert_eq!(
        declarations[3]["parameters"],
        json!({"type": "OBJECT", "properties": {"order_number": {"type": "STRING"}}, "required": ["order_number"]})
    );
}

#[tokio::test]
async fn end_call_plays_the_goodbye_then_hangs_up() {
    let mut world = World::start(&[]).await;
    let (mut caller, mut session) = world
        .twilio_call("CAb7e00000000000000000000000000000")
        .await;
    session.send_audio(&pcm_tone_24k(440.0, 400, 8_000));
    session.send_tool_call("fc-1", "end_call", json!({"reason": "caller is done"}));
    // Audio of the same turn can follow the tool call.
    session.send_audio(&pcm_tone_24k(440.0, 200, 8_000));
    session.send_turn_complete();

    let response = next_tool_response(&mut session).await;
    assert_eq!(response["id"], "fc-1");
    assert_eq!(response["name"], "end_call");
    assert_eq!(
        response["scheduling"], "SILENT",
        "the model must not talk on after its goodbye"
    );

    let played = caller
        .recv_until(WAIT, |r| r.marks().contains(&"playout".to_string()))
        .await
        .expect("playout mark");
    // 600 ms of goodbye is 30 frames, plus the filter's tail.
    assert!(
        played.media_count() >= 30,
        "the whole goodbye is sent before the mark: {}",
        played.summary()
    );
    assert_eq!(
        played.events.last(),
        Some(&support::phone::Outbound::Mark("playout".into()))
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        world.rest.requests().is_empty(),
        "hung up before the goodbye was heard"
    );

    caller.send_mark_echo("playout").await;
    let requests = world.rest.wait_requests(1, WAIT).await;
    assert_eq!(
        requests[0].path,
        format!("/2010-04-01/Accounts/{TWILIO_SID}/Calls/CAb7e00000000000000000000000000000.json")
    );
    assert_eq!(requests[0].field("Status"), Some("completed"));
    assert!(caller.wait_closed(WAIT).await);
    assert!(session.wait_closed(WAIT).await);
    assert!(world.server.wait_active_calls(0, WAIT).await);
}

#[tokio::test]
async fn transfer_call_moves_the_call_with_each_providers_api() {
    let mut world = World::start(&[]).await;

    // Twilio: new TwiML on the live call.
    let (mut caller, mut session) = world
        .twilio_call("CAaf000000000000000000000000000000")
        .await;
    session.send_tool_call("fc-2", "transfer_call", json!({}));
    caller
        .recv_until(WAIT, |r| r.marks().contains(&"playout".to_string()))
        .await
        .expect("playout mark");
    caller.send_mark_echo("playout").await;
    let request = world.rest.wait_requests(1, WAIT).await.remove(0);
    assert_eq!(
        request.path,
        format!("/2010-04-01/Accounts/{TWILIO_SID}/Calls/CAaf000000000000000000000000000000.json")
    );
    assert_eq!(
        request.field("Twiml"),
        Some(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Dial>+15550100000</Dial></Response>"
        )
    );
    assert!(
        session.wait_closed(WAIT).await,
        "the Gemini session ends with the transfer"
    );

    // Plivo: the transfer API, pointing at our transfer XML.
    let (mut caller, mut session) = world
        .plivo_call("0000000a-0000-4000-8000-00000000000a")
        .await;
    session.send_tool_call("fc-3", "transfer_call", json!({"number": "+15550100001"}));
    caller
        .recv_until(WAIT, |r| r.marks().contains(&"playout".to_string()))
        .await
        .expect("checkpoint");
    caller.send_played_stream("playout").await;
    let request = world.rest.wait_requests(2, WAIT).await.remove(1);
    assert_eq!(
        request.path,
        format!("/v1/Account/{PLIVO_ID}/Call/0000000a-0000-4000-8000-00000000000a/")
    );
    let body = request.json.unwrap();
    assert_eq!(body["legs"], "aleg");
    assert_eq!(body["aleg_method"], "POST");
    assert_eq!(
        body["aleg_url"],
        "https://phone.example.com/plivo/transfer?to=15550100001"
    );
    assert!(session.wait_closed(WAIT).await);

    let (status, xml) = world
        .server
        .webhook("plivo", "/plivo/transfer?to=15550100001", &[])
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        xml,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Dial><Number>15550100001</Number></Dial></Response>"
    );
    let (status, _) = world
        .server
        .webhook("plivo", "/plivo/transfer?to=19005550000", &[])
        .await;
    assert_eq!(status, 403, "only configured numbers are dialled");
}

#[tokio::test]
async fn a_transfer_to_a_number_not_allowed_is_refused_to_the_model() {
    let mut world = World::start(&[]).await;
    let (_caller, mut session) = world.twilio_call("CAnope").await;
    session.send_tool_call("fc-4", "transfer_call", json!({"number": "+19005550000"}));
    let response = next_tool_response(&mut session).await;
    assert_eq!(response["id"], "fc-4");
    assert!(
        response["response"]["error"]
            .as_str()
            .unwrap()
            .contains("+19005550000")
    );
    assert!(world.rest.requests().is_empty());
}

#[tokio::test]
async fn send_sms_texts_the_caller_from_our_number() {
    let mut world = World::start(&[]).await;
    let (_caller, mut session) = world.twilio_call("CAsms").await;
    session.send_tool_call(
        "fc-5",
        "send_sms",
        json!({"body": "Your booking: Tue 3 pm"}),
    );
    let response = next_tool_response(&mut session).await;
    assert_eq!(response["response"]["result"], "sent", "{response}");
    let request = world.rest.requests().remove(0);
    assert_eq!(
        request.path,
        format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages.json")
    );
    assert_eq!(request.field("To"), Some("+15557770000"));
    assert_eq!(request.field("From"), Some("+15550009999"));
    assert_eq!(request.field("Body"), Some("Your booking: Tue 3 pm"));

    session.send_tool_call(
        "fc-6",
        "send_sms",
        json!({"body": "hi", "to": "+19005550000"}),
    );
    let refused = next_tool_response(&mut session).await;
    assert!(
        refused["response"]["error"]
            .as_str()
            .unwrap()
            .contains("+19005550000")
    );

    let (_caller, mut session) = world.plivo_call("uuid-s").await;
    session.send_tool_call("fc-7", "send_sms", json!({"body": "Tracking: ABC123"}));
    let response = next_tool_response(&mut session).await;
    assert_eq!(response["response"]["result"], "sent", "{response}");
    let request = world.rest.requests().pop().unwrap();
    assert_eq!(request.path, format!("/v1/Account/{PLIVO_ID}/Message/"));
    assert_eq!(
        request.json.unwrap(),
        json!({"src": "15550008888", "dst": "15557770000", "text": "Tracking: ABC123", "type": "sms"})
    );
}

#[tokio::test]
async fn http_tools_answer_with_their_json_or_a_clear_error() {
    let mut world = World::start(&[]).await;
    let (_caller, mut session) = world.twilio_call("CAhttp").await;

    session.send_tool_call("fc-8", "order_status", json!({"order_number": "AB729"}));
    let response = next_tool_response(&mut session).await;
    assert_eq!(response["id"], "fc-8");
    assert_eq!(response["name"], "order_status");
    assert_eq!(
        response["response"],
        json!({"status": "shipped", "eta": "Tuesday"})
    );
    let (kind, body, key) = world.service.seen.lock().unwrap()[0].clone();
    assert_eq!(kind, "ok");
    assert_eq!(key.as_deref(), Some("k-123"));
    assert_eq!(body["name"], "order_status");
    assert_eq!(body["args"], json!({"order_number": "AB729"}));
    assert_eq!(
        body["caller"],
        json!({"from": "+15557770000", "to": "+15550009999", "direction": "inbound"})
    );
    assert!(body["call_id"].as_str().is_some_and(|id| !id.is_empty()));

    session.send_tool_call("fc-9", "broken", json!({}));
    let failed = next_tool_response(&mut session).await;
    assert!(
        failed["response"]["error"]
            .as_str()
            .unwrap()
            .contains("HTTP 500"),
        "{failed}"
    );

    session.send_tool_call("fc-10", "slow", json!({}));
    let timed_out = next_tool_response(&mut session).await;
    assert_eq!(timed_out["id"], "fc-10");
    assert!(
        timed_out["response"]["error"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{timed_out}"
    );
}

#[tokio::test]
async fn parallel_calls_run_concurrently_and_cancellation_stops_one() {
    let mut world = World::start(&[]).await;
    let (_caller, mut session) = world.twilio_call("CApar").await;
    session.send(json!({"toolCall": {"functionCalls": [
        {"id": "a", "name": "slow_ok", "args": {}},
        {"id": "b", "name": "quick", "args": {}}
    ]}}));
    let first = next_tool_response(&mut session).await;
    assert_eq!(
        first["id"], "b",
        "the quick call must not wait for the slow one"
    );
    let second = next_tool_response(&mut session).await;
    assert_eq!(second["id"], "a");

    session
        .send(json!({"toolCall": {"functionCalls": [{"id": "c", "name": "slow_ok", "args": {}}]}}));
    tokio::time::sleep(Duration::from_millis(100)).await;
    session.send(json!({"toolCallCancellation": {"ids": ["c"]}}));
    session.send_tool_call("d", "quick", json!({}));
    assert_eq!(next_tool_response(&mut session).await["id"], "d");
    // The cancelled call would have answered after 1.5 s.
    let late = tokio::time::timeout(Duration::from_secs(2), next_message(&mut session)).await;
    assert!(late.is_err(), "a cancelled call was answered: {late:?}");
}

#[tokio::test]
async fn tool_calls_and_results_are_in_the_record() {
    let mut world = World::start(&[]).await;
    let http = reqwest::Client::new();
    let params = world
        .server
        .answer(
            Provider::Twilio,
            "CArec",
            &[("From", "+15557770000"), ("To", "+15550009999")],
        )
        .await;
    let id = support::record_param(&params);
    let params: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut caller = TwilioCaller::connect(&world.server.ws("/twilio/stream"), WAIT).await;
    caller.send_connected().await;
    caller.send_start("CArec", "MZr", &params).await;
    let mut session = world.gemini.next_session(WAIT).await;
    session.send_tool_call("fc-r", "order_status", json!({"order_number": "Z1"}));
    next_tool_response(&mut session).await;

    let deadline = tokio::time::Instant::now() + WAIT;
    let record: Value = loop {
        let record: Value = http
            .get(world.server.http(&format!("/calls/{id}")))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if record["tool_events"]
            .as_array()
            .is_some_and(|t| t.len() == 2)
            || tokio::time::Instant::now() > deadline
        {
            break record;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let events = record["tool_events"].as_array().unwrap();
    assert_eq!(events[0]["name"], "order_status");
    assert_eq!(events[0]["detail"]["args"], json!({"order_number": "Z1"}));
    assert_eq!(events[1]["detail"]["response"]["status"], "shipped");
}

/// A tool whose JSON Schema uses what the Live API's schema does not take as is: an integer
/// enum, `format: email`, a property without `type`, a nullable union, nested arrays and
/// objects, and keywords Gemini has no field for.
fn lookup_order_tool() -> Value {
    json!({
        "name": "lookup_order",
        "description": "Look an order up",
        "url": "/tool/ok",
        "parameters": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "quantity": {"type": "integer", "enum": [1, 2, 3]},
                "email": {"type": "string", "format": "email", "description": "Where the receipt goes"},
                "note": {"description": "Anything else the caller said"},
                "floor": {"type": ["integer", "null"]},
                "lines": {"type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "sku": {"type": "string"},
                        "size": {"enum": [38, 40, 42]},
                        "gift": {"type": "boolean", "default": false}
                    },
                    "required": ["sku"],
                    "additionalProperties": false
                }}
            },
            "required": ["quantity", "email"]
        }
    })
}

#[tokio::test]
async fn user_tool_schemas_are_sent_in_a_form_gemini_accepts() {
    let mut world = World::start_with_tools(
        &[],
        vec![
            lookup_order_tool(),
            json!({"name": "ping", "description": "No arguments", "url": "/tool/quick",
                   "parameters": {"type": "object", "properties": {}}}),
        ],
    )
    .await;
    // `twilio_call` reads the bridge's first message, which fails loudly if the fake Gemini
    // refused the setup (it checks `setup.tools` as the real service does).
    let (mut caller, mut session) = world.twilio_call("CAschema").await;
    assert_eq!(session.setup_refusal(), None);

    let declarations = session.setup()["setup"]["tools"][0]["functionDeclarations"].clone();
    let lookup = declarations
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "lookup_order")
        .expect("lookup_order is declared");
    let properties = &lookup["parameters"]["properties"];
    assert_eq!(properties["quantity"]["enum"], json!(["1", "2", "3"]));
    assert_eq!(
        properties["email"]["description"],
        "Where the receipt goes (format: email)"
    );
    assert_eq!(properties["note"]["type"], "STRING");
    assert_eq!(
        properties["floor"],
        json!({"type": "INTEGER", "nullable": true})
    );

    // The session works: the caller hears the model.
    session.send_audio(&pcm_tone_24k(440.0, 200, 8_000));
    let heard = caller.recv_audio(5, WAIT).await;
    assert!(heard.media_count() >= 5, "{}", heard.summary());

    // The model answers the enums with text; the endpoint gets the types it declared.
    session.send_tool_call(
        "fc-s",
        "lookup_order",
        json!({"quantity": "2", "email": "a@example.com", "lines": [{"sku": "X1", "size": "40"}]}),
    );
    let response = next_tool_response(&mut session).await;
    assert_eq!(response["id"], "fc-s");
    let (_, body, _) = world.service.seen.lock().unwrap()[0].clone();
    assert_eq!(
        body["args"],
        json!({"quantity": 2, "email": "a@example.com", "lines": [{"sku": "X1", "size": 40}]})
    );
}

#[tokio::test]
async fn a_tool_schema_gemini_cannot_take_stops_start_up_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tools.json");
    let mut tool = lookup_order_tool();
    tool["url"] = json!("http://127.0.0.1:9/tool");
    tool["parameters"]["properties"]["lines"]["items"]["properties"]["size"] =
        json!({"anyOf": [{"type": "integer"}, {"type": "string"}]});
    std::fs::write(&file, json!({"tools": [tool]}).to_string()).unwrap();
    let config = gemini_phone::config::ToolsConfig {
        tools_file: Some(file),
        ..Default::default()
    };
    let error = gemini_phone::tools::ToolBox::load(&config).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("TOOLS_FILE: tool `lookup_order`, parameter `lines[].size`: `anyOf`"),
        "{error}"
    );
}

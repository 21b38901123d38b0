//! Provider ids in REST paths (issue 8, row 5) and the call-status lookup.
//!
//! With `VERIFY_WEBHOOKS=false` anyone can post webhooks, so every call id they carry is
//! hostile: a forged `CallUUID=../Number/15550002222` once made the server send Plivo's
//! unrent-number `DELETE` with the account's credentials. These tests drive each route that
//! puts a webhook- or stream-supplied id into a REST path, and check against the fake REST
//! API that nothing but a well-formed call path is ever requested.

mod support;

use std::time::Duration;

use gemini_phone::config::{PlivoConfig, Secret, TwilioConfig};
use gemini_phone::telephony::plivo::PlivoClient;
use gemini_phone::telephony::rest::{CallControl, DialRequest, RestError, http_client};
use gemini_phone::telephony::twilio::TwilioClient;
use serde_json::{Value, json};
use support::gemini::{Behaviour, FakeGemini};
use support::phone::{PlivoCaller, Provider, TwilioCaller};
use support::rest::{FakeRest, PLIVO_ID, PLIVO_TOKEN, Recorded, TWILIO_SID, TWILIO_TOKEN};
use support::{API_TOKEN, TestServer};

const WAIT: Duration = Duration::from_secs(5);

/// The forgery measured against Plivo: relative segments up to the account's numbers.
const FORGED_UUID: &str = "../Number/15550002222";
/// The same trick against Twilio's account resources.
const FORGED_SID: &str = "../IncomingPhoneNumbers/PN00000000000000000000000000000001";
/// A well-formed Plivo call UUID, for the control cases.
const GOOD_UUID: &str = "0000000c-0000-4000-8000-00000000000c";
/// A well-formed Twilio call SID, for the control cases.
const GOOD_SID: &str = "CA0000000000000000000000000000000c";

/// True when `path` names one call: `…/Calls/CA{32 hex}.json` or `…/Call|Request/{uuid}/`.
fn is_call_path(path: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(file) = path.strip_prefix(&format!("/2010-04-01/Accounts/{TWILIO_SID}/Calls/")) {
        return file
            .strip_prefix("CA")
            .and_then(|f| f.strip_suffix(".json"))
            .is_some_and(|digits| hex(digits, 32));
    }
    let plivo = format!("/v1/Account/{PLIVO_ID}/");
    let Some(rest) = path.strip_prefix(&plivo) else {
        return false;
    };
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        ["Call" | "Request", uuid, ""] => {
            let groups: Vec<&str> = uuid.split('-').collect();
            groups.len() == 5
                && groups
                    .iter()
                    .zip([8, 4, 4, 4, 12])
                    .all(|(group, n)| hex(group, n))
        }
        _ => false,
    }
}

/// Fails with every request that is not a call path or that carries the forgery.
fn assert_only_call_paths(requests: &[Recorded]) {
    for request in requests {
        assert!(
            is_call_path(&request.path) && !request.path.contains("Number"),
            "{} {} reached the provider",
            request.method,
            request.path
        );
    }
}

async fn server_without_verification(rest: &FakeRest, gemini_url: &str) -> TestServer {
    TestServer::with_providers(
        &rest.url(),
        gemini_url,
        &[("VERIFY_WEBHOOKS", "false"), ("BUILTIN_TOOLS", "end_call")],
    )
    .await
}

/// The id of the record the server keeps for provider call id `call_id`.
async fn record_id(server: &TestServer, call_id: &str) -> String {
    let list: Value = reqwest::Client::new()
        .get(server.http("/calls"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("GET /calls")
        .json()
        .await
        .expect("call list");
    list["calls"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|call| call["provider_call_id"] == call_id)
        .and_then(|call| call["id"].as_str())
        .unwrap_or_else(|| panic!("no record for {call_id}: {list}"))
        .to_owned()
}

async fn hang_up_through_the_api(server: &TestServer, record: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(server.http(&format!("/calls/{record}/hangup")))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("POST /calls/{id}/hangup");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Answers an inbound call with `call_id`, then reports a machine on it: the server hangs
/// up on machines through the REST API, with the id the webhooks gave.
async fn answer_then_report_a_machine(server: &TestServer, provider: Provider, call_id: &str) {
    let (route, id_field, machine): (_, _, &[(&str, &str)]) = match provider {
        Provider::Twilio => ("twilio", "CallSid", &[("AnsweredBy", "machine_start")]),
        Provider::Plivo => ("plivo", "CallUUID", &[("Machine", "true")]),
    };
    server
        .answer(
            provider,
            call_id,
            &[("From", "+15550001111"), ("To", "+15550002222")],
        )
        .await;
    let mut fields = vec![(id_field, call_id), ("CallStatus", "in-progress")];
    fields.extend_from_slice(machine);
    let (status, body) = server
        .webhook(route, &format!("/{route}/status"), &fields)
        .await;
    assert_eq!(status, 204, "{body}");
}

#[tokio::test]
async fn forged_webhook_ids_never_reach_the_provider() {
    let rest = FakeRest::start().await;
    let server = server_without_verification(&rest, "ws://127.0.0.1:9/unused").await;

    for (provider, forged, good) in [
        (Provider::Plivo, FORGED_UUID, GOOD_UUID),
        (Provider::Twilio, FORGED_SID, GOOD_SID),
    ] {
        // Control: with a well-formed id the same callback does hang up through the API,
        // so silence below means the forgery was refused, not that the route is dead.
        let before = rest.requests().len();
        answer_then_report_a_machine(&server, provider, good).await;
        let requests = rest.wait_requests(before + 1, WAIT).await;
        assert_eq!(requests.len(), before + 1, "{provider:?}: no hang-up sent");
        assert!(
            requests[before].path.contains(good),
            "{:?}",
            requests[before]
        );

        let before = rest.requests().len();
        answer_then_report_a_machine(&server, provider, forged).await;
        // A machine-answered call is over, so the API hang-up is tried on a live one.
        let forged_live = format!("{forged}/live");
        server
            .answer(
                provider,
                &forged_live,
                &[("From", "+15550001111"), ("To", "+15550002222")],
            )
            .await;
        let record = record_id(&server, &forged_live).await;
        let (status, body) = hang_up_through_the_api(&server, &record).await;
        assert_eq!(status, 502, "{body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("refused") && error.contains("no request was sent"),
            "the operator is told why: {error}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            rest.requests().len(),
            before,
            "{provider:?}: a forged id produced a request: {:?}",
            &rest.requests()[before..]
        );
    }
    assert_only_call_paths(&rest.requests());
    server.stop().await;
}

#[tokio::test]
async fn a_forged_stream_call_id_is_not_hung_up_through_the_api() {
    let rest = FakeRest::start().await;
    let mut gemini = FakeGemini::start(Behaviour::Normal).await;
    let server = server_without_verification(&rest, &gemini.url()).await;

    // Twilio: the stream's `start.callSid` is the id the agent's hang-up uses.
    let params = server
        .answer(Provider::Twilio, FORGED_SID, &[("From", "+15550001111")])
        .await;
    let params: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut twilio = TwilioCaller::connect(&server.ws("/twilio/stream"), WAIT).await;
    twilio.send_connected().await;
    twilio.send_start(FORGED_SID, "MZ1", &params).await;
    let session = gemini.next_session(WAIT).await;
    session.send_tool_call("fc-1", "end_call", json!({"reason": "done"}));
    session.send_turn_complete();
    twilio
        .recv_until(WAIT, |r| r.marks().contains(&"playout".to_string()))
        .await
        .expect("playout mark");
    twilio.send_mark_echo("playout").await;
    assert!(twilio.wait_closed(WAIT).await, "the call still ends");

    // Plivo: `start.callId`.
    let params = server
        .answer(Provider::Plivo, FORGED_UUID, &[("From", "15550001111")])
        .await;
    let extra = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";");
    let mut plivo = PlivoCaller::connect(&server.ws("/plivo/stream"), WAIT).await;
    plivo.send_start(FORGED_UUID, "s-1", &extra).await;
    let session = gemini.next_session(WAIT).await;
    session.send_tool_call("fc-2", "end_call", json!({"reason": "done"}));
    session.send_turn_complete();
    plivo
        .recv_until(WAIT, |r| r.marks().contains(&"playout".to_string()))
        .await
        .expect("checkpoint");
    plivo.send_played_stream("playout").await;
    assert!(plivo.wait_closed(WAIT).await, "the call still ends");

    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        rest.requests().is_empty(),
        "forged stream ids reached the provider: {:?}",
        rest.requests()
    );
    server.stop().await;
}

fn twilio_client(rest: &FakeRest) -> TwilioClient {
    let config = TwilioConfig {
        account_sid: TWILIO_SID.into(),
        auth_token: Secret::new(TWILIO_TOKEN),
        phone_number: Some("+15550009999".into()),
        api_url: rest.url(),
    };
    TwilioClient::new(
        config,
        http_client(Duration::from_secs(2)).expect("HTTP client"),
    )
}

fn plivo_client(rest: &FakeRest) -> PlivoClient {
    let config = PlivoConfig {
        auth_id: PLIVO_ID.into(),
        auth_token: Secret::new(PLIVO_TOKEN),
        phone_number: Some("15550008888".into()),
        api_url: rest.url(),
    };
    PlivoClient::new(
        config,
        http_client(Duration::from_secs(2)).expect("HTTP client"),
    )
}

fn dial_request() -> DialRequest {
    DialRequest {
        to: "+15551234567".into(),
        from: "+15550009999".into(),
        record_id: "c1".into(),
        public_url: "https://phone.example.com".into(),
        time_limit_secs: 60,
        on_machine: gemini_phone::config::OnMachine::HangUp,
    }
}

/// Every operation that takes a call id refuses `forged` with `InvalidId` and sends nothing.
async fn assert_refused_everywhere(control: &dyn CallControl, rest: &FakeRest, forged: &str) {
    let before = rest.requests().len();
    let results = [
        control.hang_up(forged, true).await.err(),
        control.hang_up(forged, false).await.err(),
        control
            .transfer(forged, "+15550100000", "https://phone.example.com")
            .await
            .err(),
        control.call_status(forged).await.err(),
    ];
    for result in results {
        assert!(
            matches!(result, Some(RestError::InvalidId { .. })),
            "{}: {result:?}",
            control.provider()
        );
    }
    assert_eq!(rest.requests().len(), before, "a refused id sent a request");
}

#[tokio::test]
async fn twilio_call_status_follows_the_call() {
    let rest = FakeRest::start().await;
    let twilio = twilio_client(&rest);
    let sid = twilio.dial(&dial_request()).await.expect("dialled");
    assert_eq!(
        twilio.call_status(&sid).await.unwrap().as_deref(),
        Some("queued")
    );

    rest.set_call_status(&sid, "in-progress");
    assert_eq!(
        twilio.call_status(&sid).await.unwrap().as_deref(),
        Some("in-progress")
    );
    twilio.hang_up(&sid, true).await.expect("hung up");
    assert_eq!(
        twilio.call_status(&sid).await.unwrap().as_deref(),
        Some("completed"),
        "an ended call is still known"
    );
    let lookup = rest.requests().pop().expect("lookup");
    assert_eq!(lookup.method, "GET");
    assert_eq!(
        lookup.path,
        format!("/2010-04-01/Accounts/{TWILIO_SID}/Calls/{sid}.json")
    );

    assert_eq!(twilio.call_status(GOOD_SID).await.unwrap(), None, "unknown");
    rest.fail_next(
        500,
        json!({"code": 20500, "message": "Internal Server Error", "status": 500}),
    );
    assert!(
        twilio.call_status(&sid).await.is_err(),
        "an outage is not mistaken for an unknown call"
    );
    assert_refused_everywhere(&twilio, &rest, FORGED_SID).await;
    assert_refused_everywhere(&twilio, &rest, "CA1").await;
}

#[tokio::test]
async fn plivo_call_status_asks_live_then_queued_then_ended() {
    let rest = FakeRest::start().await;
    let plivo = plivo_client(&rest);
    let request_uuid = plivo.dial(&dial_request()).await.expect("dialled");
    assert_eq!(
        plivo.call_status(&request_uuid).await.unwrap().as_deref(),
        Some("queued")
    );

    for (set, expected) in [
        ("ringing", "ringing"),
        ("in-progress", "in-progress"),
        ("busy", "busy"),
        ("no-answer", "no-answer"),
        ("canceled", "canceled"),
        ("failed", "failed"),
    ] {
        rest.set_call_status(GOOD_UUID, set);
        assert_eq!(
            plivo.call_status(GOOD_UUID).await.unwrap().as_deref(),
            Some(expected)
        );
    }
    rest.set_call_status(GOOD_UUID, "in-progress");
    plivo.hang_up(GOOD_UUID, true).await.expect("hung up");
    assert_eq!(
        plivo.call_status(GOOD_UUID).await.unwrap().as_deref(),
        Some("completed"),
        "an ended call is read from its detail record"
    );

    let unknown = "0000000d-0000-4000-8000-00000000000d";
    let before = rest.requests().len();
    assert_eq!(plivo.call_status(unknown).await.unwrap(), None);
    let lookups: Vec<(String, Option<String>)> = rest.requests()[before..]
        .iter()
        .map(|r| (r.path.clone(), r.query.clone()))
        .collect();
    let path = format!("/v1/Account/{PLIVO_ID}/Call/{unknown}/");
    assert_eq!(
        lookups,
        [
            (path.clone(), Some("status=live".to_owned())),
            (path.clone(), Some("status=queued".to_owned())),
            (path, None),
        ]
    );

    rest.fail_next(500, json!({"api_id": "x", "error": "internal error"}));
    assert!(
        plivo.call_status(unknown).await.is_err(),
        "an outage is not mistaken for an unknown call"
    );
    assert_refused_everywhere(&plivo, &rest, FORGED_UUID).await;
    assert_refused_everywhere(&plivo, &rest, "uuid-1").await;
}

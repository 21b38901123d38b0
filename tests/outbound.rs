//! Outbound calls and call records, end to end: `POST /calls` → provider REST (a fake that
//! checks auth and every field) → answer webhook → media stream with the rendered prompt →
//! status callbacks → the record's history and transcript.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::gemini::{Behaviour, FakeGemini};
use support::phone::{Provider, pcm_tone_24k};
use support::rest::{FakeRest, PLIVO_ID, TWILIO_SID};
use support::{API_TOKEN, Caller, TestServer, provider_vars, stream_params};

const WAIT: Duration = Duration::from_secs(5);

struct World {
    rest: FakeRest,
    gemini: FakeGemini,
    server: TestServer,
    http: reqwest::Client,
}

impl World {
    async fn start(extra: &[(&str, &str)]) -> World {
        let rest = FakeRest::start().await;
        let gemini = FakeGemini::start(Behaviour::Normal).await;
        let server = TestServer::with_providers(&rest.url(), &gemini.url(), extra).await;
        World {
            rest,
            gemini,
            server,
            http: reqwest::Client::new(),
        }
    }

    async fn post_calls(&self, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.server.http("/calls"))
            .bearer_auth(API_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("POST /calls");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(self.server.http(path))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("GET");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A signed provider webhook; the provider is the path's first segment.
    async fn webhook(&self, path: &str, form: &[(&str, &str)]) -> (u16, String) {
        let route = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        self.server.webhook(route, path, form).await
    }

    /// Polls the record until `check` holds.
    async fn record_until(&self, id: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (_, record) = self.get(&format!("/calls/{id}")).await;
            if check(&record) || tokio::time::Instant::now() >= deadline {
                return record;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn history(record: &Value) -> Vec<String> {
    record["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter_map(|c| c["status"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn asha() -> Value {
    json!({"name": "Asha", "company": "Acme Dental", "reason": "confirming tomorrow's 3 pm appointment"})
}

#[tokio::test]
async fn the_api_needs_the_bearer_token_and_dials_nothing_without_it() {
    let world = World::start(&[]).await;
    let url = world.server.http("/calls");
    let body = json!({"to": "+15551234567", "provider": "twilio", "vars": asha()});
    let none = world.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    let wrong = world
        .http
        .post(&url)
        .bearer_auth("nope")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let list = world.http.get(&url).send().await.unwrap();
    assert_eq!(list.status(), 401);
    let one = world
        .http
        .get(world.server.http("/calls/c1"))
        .bearer_auth("x")
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 401);
    assert!(world.rest.requests().is_empty(), "something was dialled");

    let closed = TestServer::start(&[]).await;
    let response = world
        .http
        .post(closed.http("/calls"))
        .bearer_auth("")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        503,
        "without API_TOKEN the API is closed"
    );
}

#[tokio::test]
async fn bad_requests_say_what_is_wrong_and_dial_nothing() {
    let world = World::start(&[]).await;
    let cases = [
        (json!({"provider": "twilio"}), "to"),
        (
            json!({"to": "5551234567", "provider": "twilio", "vars": asha()}),
            "E.164",
        ),
        (
            json!({"to": "+15551234567", "provider": "telnyx", "vars": asha()}),
            "telnyx",
        ),
        (json!({"to": "+15551234567", "vars": asha()}), "provider"),
        (
            json!({"to": "+15551234567", "provider": "twilio", "prompt": "nosuch"}),
            "nosuch",
        ),
        (
            json!({"to": "+15551234567", "provider": "twilio", "prompt": "../inbound"}),
            "../inbound",
        ),
        (
            json!({"to": "+15551234567", "provider": "twilio", "vars": {"name": "Asha"}}),
            "company, reason",
        ),
        (
            json!({"to": "+15551234567", "provider": "twilio", "vars": asha(), "from": "12"}),
            "from",
        ),
        (
            json!({"to": "+15551234567", "provider": "twilio", "vars": asha(), "colour": "red"}),
            "colour",
        ),
    ];
    for (body, needle) in cases {
        let (status, answer) = world.post_calls(body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle),
            "{body}: {message:?} should mention {needle}"
        );
    }
    let not_json = world
        .http
        .post(world.server.http("/calls"))
        .bearer_auth(API_TOKEN)
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    assert!(world.rest.requests().is_empty(), "something was dialled");
}

#[tokio::test]
async fn a_twilio_outbound_call_from_post_to_transcript() {
    let mut world = World::start(&[]).await;
    let (status, created) = world
        .post_calls(json!({"to": "+15551234567", "provider": "twilio", "vars": asha(), "campaign": "spring"}))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let sid = created["provider_call_id"].as_str().unwrap().to_owned();
    assert_eq!(created["provider"], "twilio");
    assert_eq!(created["status"], "queued");
    assert!(sid.starts_with("CA"));

    let requests = world.rest.requests();
    assert_eq!(requests.len(), 1);
    let dial = &requests[0];
    assert_eq!(
        dial.path,
        format!("/2010-04-01/Accounts/{TWILIO_SID}/Calls.json")
    );
    assert_eq!(
        dial.basic_auth.as_deref(),
        Some(format!("{TWILIO_SID}:twilio-test-token").as_str())
    );
    assert_eq!(
        dial.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(dial.field("To"), Some("+15551234567"));
    assert_eq!(dial.field("From"), Some("+15550009999"));
    assert_eq!(
        dial.field("Url"),
        Some(format!("https://phone.example.com/twilio/answer?record={id}").as_str())
    );
    assert_eq!(dial.field("Method"), Some("POST"));
    assert_eq!(
        dial.field("StatusCallback"),
        Some(format!("https://phone.example.com/twilio/status?record={id}").as_str())
    );
    assert_eq!(
        dial.fields("StatusCallbackEvent"),
        ["initiated", "ringing", "answered", "completed"]
    );
    assert_eq!(dial.field("MachineDetection"), Some("Enable"));
    assert_eq!(dial.field("TimeLimit"), Some("1800"));

    let status_path = format!("/twilio/status?record={id}");
    let (code, _) = world
        .webhook(
            &status_path,
            &[("CallSid", &sid), ("CallStatus", "ringing")],
        )
        .await;
    assert_eq!(code, 204);
    let (code, xml) = world
        .webhook(
            &format!("/twilio/answer?record={id}"),
            &[
                ("CallSid", &sid),
                ("From", "+15550009999"),
                ("To", "+15551234567"),
                ("Direction", "outbound-api"),
                ("AnsweredBy", "human"),
            ],
        )
        .await;
    assert_eq!(code, 200);
    assert!(
        xml.contains(&format!("<Parameter name=\"record\" value=\"{id}\"/>")),
        "{xml}"
    );

    // The stream carries the record id back; the session gets the rendered prompt.
    let mut caller =
        Caller::start_with(&world.server, Provider::Twilio, &sid, &stream_params(&xml)).await;
    let mut session = world.gemini.next_session(WAIT).await;
    let prompt = session.setup()["setup"]["systemInstruction"]["parts"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(prompt.contains("on behalf of Acme Dental"), "{prompt}");
    assert!(
        prompt.contains("calling Asha about the following: confirming tomorrow's 3 pm appointment")
    );
    assert!(!prompt.contains("{{"));

    session.send_input_transcription("Hello?");
    session.send_audio_with_transcript(
        &pcm_tone_24k(440.0, 200, 8_000),
        "Hi Asha, this is Acme Dental.",
    );
    session.send_turn_complete();
    caller.recv_audio(10, WAIT).await;
    caller.hang_up().await;
    assert!(session.wait_closed(WAIT).await);
    world
        .webhook(
            &status_path,
            &[
                ("CallSid", &sid),
                ("CallStatus", "completed"),
                ("CallDuration", "42"),
            ],
        )
        .await;

    let record = world
        .record_until(&id, |r| {
            // The provider's `completed` can land before the bridge's end reason does.
            r["status"] == "completed"
                && r["transcript"].as_array().is_some_and(|t| t.len() == 2)
                && !r["end_reason"].is_null()
        })
        .await;
    assert_eq!(
        history(&record),
        ["queued", "ringing", "in-progress", "completed"],
        "{record}"
    );
    assert_eq!(record["direction"], "outbound");
    assert_eq!(record["campaign"], "spring");
    assert_eq!(record["prompt"], "outbound");
    assert_eq!(record["vars"], asha());
    assert_eq!(
        record["answered_by"],
        Value::Null,
        "human answers are not machines"
    );
    assert_eq!(record["duration_seconds"], 42);
    assert_eq!(record["end_reason"], "caller hung up");
    let transcript = record["transcript"].as_array().unwrap();
    assert_eq!(transcript[0]["who"], "caller");
    assert_eq!(transcript[0]["text"], "Hello?");
    assert_eq!(transcript[1]["who"], "agent");
    assert_eq!(transcript[1]["text"], "Hi Asha, this is Acme Dental.");
    world.server.stop().await;
}

#[tokio::test]
async fn a_plivo_outbound_call_from_post_to_hangup_callback() {
    let mut world = World::start(&[]).await;
    let (status, created) = world
        .post_calls(json!({"to": "+15551234567", "provider": "plivo", "from": "+15550007777", "vars": asha()}))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let request_uuid = created["provider_call_id"].as_str().unwrap().to_owned();

    let dial = &world.rest.requests()[0];
    assert_eq!(dial.path, format!("/v1/Account/{PLIVO_ID}/Call/"));
    assert_eq!(
        dial.basic_auth.as_deref(),
        Some(format!("{PLIVO_ID}:plivo-test-token").as_str())
    );
    let body = dial.json.as_ref().expect("JSON body");
    assert_eq!(body["from"], "15550007777");
    assert_eq!(body["to"], "15551234567");
    assert_eq!(
        body["answer_url"],
        format!("https://phone.example.com/plivo/answer?record={id}")
    );
    assert_eq!(body["answer_method"], "POST");
    assert_eq!(
        body["hangup_url"],
        format!("https://phone.example.com/plivo/hangup?record={id}")
    );
    assert_eq!(
        body["ring_url"],
        format!("https://phone.example.com/plivo/status?record={id}")
    );
    assert_eq!(body["machine_detection"], "hangup");
    assert_eq!(
        body["machine_detection_url"],
        format!("https://phone.example.com/plivo/status?record={id}")
    );
    assert_eq!(body["time_limit"], 1800);

    let (_, xml) = world
        .webhook(
            &format!("/plivo/answer?record={id}"),
            &[
                ("CallUUID", "uuid-1"),
                ("From", "15550007777"),
                ("To", "15551234567"),
                ("Direction", "outbound"),
                ("ALegRequestUUID", &request_uuid),
            ],
        )
        .await;
    assert!(xml.contains(&format!("record={id}")), "{xml}");

    let mut caller = Caller::start_with(
        &world.server,
        Provider::Plivo,
        "uuid-1",
        &stream_params(&xml),
    )
    .await;
    let mut session = world.gemini.next_session(WAIT).await;
    let prompt = session.setup()["setup"]["systemInstruction"]["parts"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(prompt.contains("calling Asha"), "{prompt}");
    caller.hang_up().await;
    assert!(session.wait_closed(WAIT).await);
    world
        .webhook(
            &format!("/plivo/hangup?record={id}"),
            &[
                ("CallUUID", "uuid-1"),
                ("CallStatus", "completed"),
                ("HangupCause", "NORMAL_CLEARING"),
                ("Duration", "7"),
            ],
        )
        .await;
    let record = world
        .record_until(&id, |r| {
            r["status"] == "completed" && r["duration_seconds"] == 7
        })
        .await;
    assert_eq!(
        record["provider_call_id"], "uuid-1",
        "the CallUUID replaces the request UUID"
    );
    assert_eq!(history(&record), ["queued", "in-progress", "completed"]);
    assert_eq!(record["duration_seconds"], 7);
    world.server.stop().await;
}

#[tokio::test]
async fn a_machine_is_hung_up_on_without_a_word() {
    let mut world = World::start(&[]).await;

    // Twilio detects synchronously: the answer webhook says who answered.
    let (_, created) = world
        .post_calls(json!({"to": "+15551234567", "provider": "twilio", "vars": asha()}))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let sid = created["provider_call_id"].as_str().unwrap().to_owned();
    let (code, xml) = world
        .webhook(
            &format!("/twilio/answer?record={id}"),
            &[
                ("CallSid", &sid),
                ("Direction", "outbound-api"),
                ("AnsweredBy", "machine_start"),
            ],
        )
        .await;
    assert_eq!(code, 200);
    assert!(
        xml.contains("<Hangup/>") && !xml.contains("<Stream"),
        "{xml}"
    );
    let record = world.record_until(&id, |r| r["status"] == "machine").await;
    assert_eq!(record["status"], "machine");
    assert_eq!(record["answered_by"], "machine_start");
    assert!(
        world
            .gemini
            .try_next_session(Duration::from_millis(200))
            .await
            .is_none(),
        "agent started"
    );

    // Plivo detects asynchronously: the detection callback hangs the live call up.
    let (_, created) = world
        .post_calls(json!({"to": "+15551234567", "provider": "plivo", "vars": asha()}))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    world
        .webhook(
            &format!("/plivo/answer?record={id}"),
            &[
                ("CallUUID", "00000009-0000-4000-8000-000000000009"),
                ("Direction", "outbound"),
            ],
        )
        .await;
    let (code, _) = world
        .webhook(
            &format!("/plivo/status?record={id}"),
            &[
                ("CallUUID", "00000009-0000-4000-8000-000000000009"),
                ("Machine", "true"),
                ("Event", "MachineDetection"),
                ("CallStatus", "in-progress"),
            ],
        )
        .await;
    assert_eq!(code, 204);
    let hangup = world
        .rest
        .requests()
        .into_iter()
        .find(|r| r.method == "DELETE")
        .expect("hang-up request");
    assert_eq!(
        hangup.path,
        format!("/v1/Account/{PLIVO_ID}/Call/00000009-0000-4000-8000-000000000009/")
    );
    let record = world.record_until(&id, |r| r["status"] == "machine").await;
    assert_eq!(record["answered_by"], "machine");
    world.server.stop().await;
}

#[tokio::test]
async fn a_provider_error_is_a_502_with_its_message_and_a_failed_record() {
    let world = World::start(&[]).await;
    world.rest.fail_next(
        400,
        json!({"code": 21211, "message": "The 'To' number +15551234567 is not a valid phone number.", "status": 400}),
    );
    let (status, answer) = world
        .post_calls(json!({"to": "+15551234567", "provider": "twilio", "vars": asha()}))
        .await;
    assert_eq!(status, 502, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("is not a valid phone number"),
        "{answer}"
    );
    let id = answer["id"]
        .as_str()
        .expect("the failed attempt is recorded");
    let (_, record) = world.get(&format!("/calls/{id}")).await;
    assert_eq!(record["status"], "failed");
    assert!(
        record["end_reason"]
            .as_str()
            .unwrap()
            .contains("not a valid phone number")
    );

    world.rest.fail_next(
        401,
        json!({"api_id": "x", "error": "Authentication credentials invalid."}),
    );
    let (status, answer) = world
        .post_calls(json!({"to": "+15551234567", "provider": "plivo", "vars": asha()}))
        .await;
    assert_eq!(status, 502);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("Authentication credentials invalid"),
        "{answer}"
    );
    world.server.stop().await;
}

#[tokio::test]
async fn a_provider_that_does_not_answer_in_time_is_a_502() {
    let world = World::start(&[("PROVIDER_TIMEOUT_SECS", "1")]).await;
    world.rest.delay_next(Duration::from_secs(3));
    let started = tokio::time::Instant::now();
    let (status, answer) = world
        .post_calls(json!({"to": "+15551234567", "provider": "twilio", "vars": asha()}))
        .await;
    assert_eq!(status, 502, "{answer}");
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "the time-out was not applied"
    );
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("could not be reached"),
        "{answer}"
    );
    let id = answer["id"].as_str().expect("the attempt is recorded");
    let (_, record) = world.get(&format!("/calls/{id}")).await;
    assert_eq!(record["status"], "failed");
    world.server.stop().await;
}

#[tokio::test]
async fn calls_are_listed_by_campaign_and_status_and_hung_up_through_the_api() {
    let world = World::start(&[]).await;
    let mut ids = Vec::new();
    for (campaign, provider) in [
        ("spring", "twilio"),
        ("spring", "plivo"),
        ("autumn", "twilio"),
    ] {
        let (status, created) = world
            .post_calls(json!({"to": "+15551234567", "provider": provider, "vars": asha(), "campaign": campaign}))
            .await;
        assert_eq!(status, 201);
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    let (_, spring) = world.get("/calls?campaign=spring").await;
    let listed: Vec<&str> = spring["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [ids[1].as_str(), ids[0].as_str()], "newest first");
    let (_, limited) = world.get("/calls?limit=1").await;
    assert_eq!(limited["calls"].as_array().unwrap().len(), 1);
    let (code, bad) = world.get("/calls?status=sleeping").await;
    assert_eq!(code, 400, "{bad}");

    // A ringing Twilio call is canceled; a live Plivo call is deleted.
    let (code, record) = world
        .http
        .post(world.server.http(&format!("/calls/{}/hangup", ids[0])))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(code, 200);
    let record: Value = record.json().await.unwrap();
    assert_eq!(record["status"], "canceled");
    let cancel = world.rest.requests().into_iter().last().unwrap();
    assert!(cancel.path.ends_with(&format!(
        "/Calls/{}.json",
        record["provider_call_id"].as_str().unwrap()
    )));
    assert_eq!(cancel.field("Status"), Some("canceled"));

    world
        .webhook(
            &format!("/plivo/answer?record={}", ids[1]),
            &[
                ("CallUUID", "00000005-0000-4000-8000-000000000005"),
                ("Direction", "outbound"),
            ],
        )
        .await;
    let response = world
        .http
        .post(world.server.http(&format!("/calls/{}/hangup", ids[1])))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let delete = world.rest.requests().into_iter().last().unwrap();
    assert_eq!(delete.method, "DELETE");
    assert_eq!(
        delete.path,
        format!("/v1/Account/{PLIVO_ID}/Call/00000005-0000-4000-8000-000000000005/")
    );

    let (_, canceled) = world.get("/calls?status=canceled").await;
    assert_eq!(canceled["calls"].as_array().unwrap().len(), 1);
    let (code, _) = world.get("/calls/cnosuchcall").await;
    assert_eq!(code, 404);
    world.server.stop().await;
}

#[tokio::test]
async fn records_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/nested/records.db", dir.path().display());
    let rest = FakeRest::start().await;
    let mut vars = provider_vars(&rest.url());
    vars.push(("DATABASE_URL", db));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let first = TestServer::start(&vars).await;
    let http = reqwest::Client::new();
    let created: Value = http
        .post(first.http("/calls"))
        .bearer_auth(API_TOKEN)
        .json(&json!({"to": "+15551234567", "provider": "twilio", "vars": asha()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    first.stop().await;
    assert!(
        dir.path().join("nested/records.db").exists(),
        "the folder and file are created"
    );

    let second = TestServer::start(&vars).await;
    let record: Value = http
        .get(second.http(&format!("/calls/{}", created["id"].as_str().unwrap())))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(record["vars"], asha());
    assert_eq!(record["provider_call_id"], created["provider_call_id"]);
    second.stop().await;
}

#[tokio::test]
async fn inbound_calls_are_recorded_with_their_transcript() {
    let mut world = World::start(&[]).await;
    let (_, xml) = world
        .webhook(
            "/twilio/answer",
            &[
                ("CallSid", "CAin"),
                ("From", "+15550001111"),
                ("To", "+15550009999"),
            ],
        )
        .await;
    let id = xml
        .split("name=\"record\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("record parameter")
        .to_owned();
    let mut caller = Caller::start_with(
        &world.server,
        Provider::Twilio,
        "CAin",
        &stream_params(&xml),
    )
    .await;
    let session = world.gemini.next_session(WAIT).await;
    session.send_input_transcription("Is the shop open on Sunday?");
    session.send_audio_with_transcript(&pcm_tone_24k(440.0, 100, 8_000), "Yes, from ten to four.");
    session.send_turn_complete();
    caller.recv_audio(5, WAIT).await;
    caller.hang_up().await;
    let record = world
        .record_until(&id, |r| r["status"] == "completed")
        .await;
    assert_eq!(record["direction"], "inbound");
    assert_eq!(record["from"], "+15550001111");
    assert_eq!(
        record["transcript"].as_array().map(Vec::len),
        Some(2),
        "{record}"
    );
    world.server.stop().await;
}

#[tokio::test]
async fn the_bridge_ends_a_call_at_max_call_seconds() {
    let mut world = World::start(&[("MAX_CALL_SECONDS", "1")]).await;
    let mut caller = Caller::start(&world.server, Provider::Plivo, "long").await;
    let mut session = world.gemini.next_session(WAIT).await;
    assert!(
        caller.wait_closed(Duration::from_secs(4)).await,
        "call outlived MAX_CALL_SECONDS"
    );
    assert!(session.wait_closed(WAIT).await);
    world.server.stop().await;
}

//! Who speaks first (`GREETING`) and what an answering machine gets (`ON_MACHINE`), end to
//! end: `POST /calls` → the fake provider REST API (which refuses parameters the real one
//! does not take) → answer webhook → the fake phone's stream → the fake Gemini.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::gemini::{Behaviour, GeminiSession};
use support::phone::{Provider, mulaw_silence, mulaw_tone};
use support::rest::{FakeRest, fake_uuid};
use support::world::World;
use support::{API_TOKEN, Caller, PROVIDERS, stream_params};

const WAIT: Duration = Duration::from_secs(5);

/// One outbound call as the test drives it.
struct Call {
    record: String,
    /// The provider's id of the answered call (Twilio CallSid, Plivo CallUUID).
    call_id: String,
    /// The stream parameters the answer XML gave (empty when it hung up).
    params: Vec<(String, String)>,
    answer_xml: String,
}

impl World {
    /// A server with both providers, whose fake Gemini answers every text turn with audio.
    async fn start(extra: &[(&str, &str)]) -> World {
        World::with(Behaviour::AnswerText, extra).await
    }

    /// Places a call to Asha on `provider` and answers it; `answered_by` is Twilio's
    /// synchronous detection verdict. Plivo's CallUUID is the `n`th fake UUID.
    async fn dial_and_answer(&self, provider: Provider, n: u32, answered_by: &str) -> Call {
        let route = support::route(provider);
        let created: Value = reqwest::Client::new()
            .post(self.server.http("/calls"))
            .bearer_auth(API_TOKEN)
            .json(&json!({"to": "+15551234567", "provider": route, "vars": {
                "name": "Asha", "company": "Acme Dental",
                "reason": "confirming tomorrow's 3 pm appointment"}}))
            .send()
            .await
            .expect("POST /calls")
            .json()
            .await
            .expect("created call JSON");
        let record = created["id"]
            .as_str()
            .unwrap_or_else(|| panic!("the fake provider took the dial: {created}"))
            .to_owned();
        let (call_id, mut form) = match provider {
            Provider::Twilio => {
                let sid = created["provider_call_id"]
                    .as_str()
                    .expect("sid")
                    .to_owned();
                (
                    sid,
                    vec![("Direction", "outbound-api"), ("AnsweredBy", answered_by)],
                )
            }
            Provider::Plivo => (fake_uuid(n), vec![("Direction", "outbound")]),
        };
        let id_field = match provider {
            Provider::Twilio => "CallSid",
            Provider::Plivo => "CallUUID",
        };
        form.push((id_field, &call_id));
        form.extend([("From", "+15550009999"), ("To", "+15551234567")]);
        let (code, answer_xml) = self
            .server
            .webhook(route, &format!("/{route}/answer?record={record}"), &form)
            .await;
        assert_eq!(code, 200, "{answer_xml}");
        let params = if answer_xml.contains("<Stream") {
            stream_params(&answer_xml)
        } else {
            Vec::new()
        };
        Call {
            record,
            call_id,
            params,
            answer_xml,
        }
    }

    /// The call's stream and its Gemini session.
    async fn connect(&mut self, provider: Provider, call: &Call) -> (Caller, GeminiSession) {
        let caller = Caller::start_with(&self.server, provider, &call.call_id, &call.params).await;
        let session = self.gemini.next_session(WAIT).await;
        (caller, session)
    }

    /// The call record once `done` holds for it (or as it is after [`WAIT`]).
    async fn record_until(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let record: Value = self.server.record(id).await;
            if done(&record) || tokio::time::Instant::now() >= deadline {
                return record;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A provider status / hang-up callback for the call.
    async fn callback(&self, provider: Provider, call: &Call, form: &[(&str, &str)]) -> u16 {
        let route = support::route(provider);
        let (path, id_field) = match provider {
            Provider::Twilio => ("status", "CallSid"),
            Provider::Plivo => ("hangup", "CallUUID"),
        };
        let mut fields = vec![(id_field, call.call_id.as_str())];
        fields.extend_from_slice(form);
        let (code, _) = self
            .server
            .webhook(
                route,
                &format!("/{route}/{path}?record={}", call.record),
                &fields,
            )
            .await;
        code
    }
}

/// The text of a typed turn, in either text path.
fn turn_text(msg: &Value) -> Option<&str> {
    msg.pointer("/realtimeInput/text")
        .or_else(|| msg.pointer("/clientContent/turns/0/parts/0/text"))
        .and_then(Value::as_str)
}

/// Everything the bridge sends Gemini within `window`: (typed turns, audio chunks).
async fn gemini_traffic(session: &mut GeminiSession, window: Duration) -> (Vec<String>, usize) {
    let deadline = tokio::time::Instant::now() + window;
    let (mut texts, mut audio) = (Vec::new(), 0);
    while let Some(msg) = session
        .recv(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        if let Some(text) = turn_text(&msg) {
            texts.push(text.to_owned());
        } else if msg.pointer("/realtimeInput/audio").is_some() {
            audio += 1;
        }
    }
    (texts, audio)
}

/// The next typed turn, skipping everything else.
async fn next_text_turn(session: &mut GeminiSession, within: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let Some(text) = turn_text(&session.recv(left).await?) {
            return Some(text.to_owned());
        }
    }
}

/// Sends `mulaw` in real time (one 20 ms frame every 20 ms), as a phone does.
async fn speak(caller: &mut Caller, mulaw: &[u8]) {
    let sent = match caller {
        Caller::Twilio(c) => c.send_media_realtime(mulaw).await,
        Caller::Plivo(c) => c.send_media_realtime(mulaw).await,
    };
    assert!(sent, "audio sent");
}

// ----- who speaks first ----------------------------------------------------------------------

#[tokio::test]
async fn an_outbound_agent_waits_for_the_callees_hello_before_it_says_a_word() {
    let mut world = World::start(&[("GREETING_SILENCE_MS", "5000")]).await;
    for (n, provider) in PROVIDERS.into_iter().enumerate() {
        // Twilio's detection heard nobody (`unknown`); Plivo's runs during the call.
        let call = world.dial_and_answer(provider, n as u32, "unknown").await;
        let (mut caller, mut session) = world.connect(provider, &call).await;

        // The line is open, the callee has not spoken yet: no greeting cue, and the line's
        // noise is not passed to the model either (it could answer it).
        assert!(caller.send_media(&mulaw_silence(300)).await);
        let (texts, audio) = gemini_traffic(&mut session, Duration::from_millis(700)).await;
        assert_eq!(
            texts,
            Vec::<String>::new(),
            "{provider:?}: greeted too early"
        );
        assert_eq!(audio, 0, "{provider:?}: caller audio reached the model");
        let early = caller.collect_for(Duration::from_millis(10)).await;
        assert_eq!(
            early.media_count(),
            0,
            "{provider:?}: agent audio before the hello"
        );

        // "Hello?" (400 ms), then the callee waits.
        speak(&mut caller, &mulaw_tone(300.0, 400)).await;
        let spoke_at = tokio::time::Instant::now();
        speak(&mut caller, &mulaw_silence(700)).await;
        let cue = next_text_turn(&mut session, WAIT)
            .await
            .expect("a greeting cue after the hello");
        let after = spoke_at.elapsed();
        assert!(cue.contains("answered with a few words"), "{cue}");
        assert!(
            after >= Duration::from_millis(450),
            "{provider:?}: greeted {after:?} after the hello, before its pause"
        );
        // The model's greeting reaches the phone, and the callee is heard from now on.
        caller.recv_audio(5, WAIT).await;
        speak(&mut caller, &mulaw_tone(300.0, 100)).await;
        assert!(
            !session.recv_audio(1_000, WAIT).await.is_empty(),
            "callee audio flows after the greeting"
        );
    }
}

#[tokio::test]
async fn a_silent_callee_is_greeted_after_greeting_silence_ms() {
    let mut world = World::start(&[("GREETING_SILENCE_MS", "400")]).await;
    let call = world.dial_and_answer(Provider::Twilio, 0, "unknown").await;
    let (mut caller, mut session) = world.connect(Provider::Twilio, &call).await;
    let ready = tokio::time::Instant::now();
    let cue = next_text_turn(&mut session, WAIT)
        .await
        .expect("a greeting cue");
    let waited = ready.elapsed();
    assert!(cue.contains("has not said anything"), "{cue}");
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(1_500),
        "greeted after {waited:?} with GREETING_SILENCE_MS=400"
    );
    caller.recv_audio(5, WAIT).await;
}

#[tokio::test]
async fn a_callee_twilio_detection_already_heard_is_greeted_at_once() {
    // Synchronous detection says `human` only after the callee spoke and paused.
    let mut world = World::start(&[("GREETING_SILENCE_MS", "5000")]).await;
    let call = world.dial_and_answer(Provider::Twilio, 0, "human").await;
    let (mut caller, mut session) = world.connect(Provider::Twilio, &call).await;
    let cue = next_text_turn(&mut session, Duration::from_millis(500))
        .await
        .expect("the greeting cue at once");
    assert!(cue.contains("answered with a few words"), "{cue}");
    caller.recv_audio(5, WAIT).await;
}

#[tokio::test]
async fn agent_first_greets_as_soon_as_the_session_is_ready() {
    // Inbound calls default to agent_first; GREETING=agent_first makes outbound ones too.
    let mut world = World::start(&[("GREETING", "agent_first")]).await;
    let call = world.dial_and_answer(Provider::Plivo, 1, "").await;
    let (mut caller, mut session) = world.connect(Provider::Plivo, &call).await;
    let cue = next_text_turn(&mut session, Duration::from_millis(500))
        .await
        .expect("the greeting cue at once");
    assert!(cue.contains("Greet the caller now"), "{cue}");
    caller.recv_audio(5, WAIT).await;

    let mut inbound = World::start(&[]).await;
    let params = inbound
        .server
        .answer(Provider::Twilio, "CAinbound", &[("From", "+15550001111")])
        .await;
    let _caller = Caller::start_with(&inbound.server, Provider::Twilio, "CAinbound", &params).await;
    let mut session = inbound.gemini.next_session(WAIT).await;
    let cue = next_text_turn(&mut session, Duration::from_millis(500))
        .await
        .expect("an inbound caller is greeted at once");
    assert!(cue.contains("Greet the caller now"), "{cue}");
}

// ----- voicemail ---------------------------------------------------------------------------

/// The model's message plays, the bridge marks its end, the phone confirms, and the call is
/// hung up through the provider's REST API; returns that request's path.
async fn message_plays_then_hang_up(world: &World, caller: &mut Caller, before: usize) -> String {
    let heard = caller
        .recv_until(WAIT, |r| r.marks().contains(&"playout".to_owned()))
        .await
        .expect("the message is followed by the playout mark");
    assert!(heard.media_count() > 0, "the message reached the phone");
    assert_eq!(
        world.rest.requests().len(),
        before,
        "no hang-up before the message has played"
    );
    assert!(caller.ack_mark("playout").await);
    let requests = world.rest.wait_requests(before + 1, WAIT).await;
    requests[before].path.clone()
}

fn history(record: &Value) -> Vec<&str> {
    record["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["status"].as_str())
        .collect()
}

#[tokio::test]
async fn on_twilio_a_message_is_left_after_the_beep_and_the_status_stays_machine() {
    let mut world = World::start(&[("ON_MACHINE", "message")]).await;
    let call = world
        .dial_and_answer(Provider::Twilio, 0, "machine_end_beep")
        .await;
    let dial = &world.rest.requests()[0];
    assert_eq!(dial.field("MachineDetection"), Some("DetectMessageEnd"));
    // Twilio fetched the answer URL after the beep: the stream connects to leave the message.
    assert!(call.answer_xml.contains("<Stream"), "{}", call.answer_xml);

    let (mut caller, mut session) = world.connect(Provider::Twilio, &call).await;
    let before = world.rest.requests().len();
    let request = next_text_turn(&mut session, WAIT)
        .await
        .expect("the message request");
    assert!(request.contains("answering machine"), "{request}");
    assert!(
        request.contains("Hello Asha, this is the automated assistant of Acme Dental, calling about confirming tomorrow's 3 pm appointment."),
        "prompts/voicemail.md rendered with the call's vars: {request}"
    );
    let path = message_plays_then_hang_up(&world, &mut caller, before).await;
    assert!(
        path.ends_with(&format!("/Calls/{}.json", call.call_id)),
        "{path}"
    );
    assert_eq!(
        world.rest.requests()[before].field("Status"),
        Some("completed")
    );

    assert_eq!(
        world
            .callback(
                Provider::Twilio,
                &call,
                &[("CallStatus", "completed"), ("CallDuration", "21")]
            )
            .await,
        204
    );
    let record = world
        .record_until(&call.record, |r| {
            r["end_reason"].is_string() && r["duration_seconds"] == 21
        })
        .await;
    assert_eq!(record["status"], "machine", "{record}");
    assert_eq!(record["answered_by"], "machine_end_beep");
    assert_eq!(record["end_reason"], "voicemail message left");
    assert_eq!(history(&record).last(), Some(&"machine"), "{record}");
}

#[tokio::test]
async fn on_plivo_a_message_is_left_after_the_machines_greeting_ends() {
    let mut world = World::start(&[("ON_MACHINE", "message")]).await;
    let call = world.dial_and_answer(Provider::Plivo, 7, "").await;
    let dial = world.rest.requests()[0].json.clone().expect("JSON dial");
    assert_eq!(dial["machine_detection"], "true", "Plivo keeps the call up");
    let (mut caller, mut session) = world.connect(Provider::Plivo, &call).await;

    // The machine's greeting plays; detection decides in the middle of it.
    speak(&mut caller, &mulaw_tone(300.0, 600)).await;
    assert_eq!(
        world
            .callback(
                Provider::Plivo,
                &call,
                &[
                    ("Machine", "true"),
                    ("Event", "MachineDetection"),
                    ("IfMachine", "continue"),
                    ("CallStatus", "in-progress"),
                ],
            )
            .await,
        204
    );
    let before = world.rest.requests().len();
    // The rest of the greeting, a pause between its sentences, the beep.
    speak(&mut caller, &mulaw_tone(300.0, 400)).await;
    speak(&mut caller, &mulaw_silence(600)).await;
    speak(&mut caller, &mulaw_tone(1_000.0, 300)).await;
    let (texts, audio) = gemini_traffic(&mut session, Duration::from_millis(10)).await;
    assert_eq!(
        texts,
        Vec::<String>::new(),
        "nothing asked of the model during the greeting"
    );
    assert_eq!(
        audio, 0,
        "the machine's greeting is not passed to the model"
    );
    assert_eq!(
        caller
            .collect_for(Duration::from_millis(10))
            .await
            .media_count(),
        0,
        "no agent audio during the greeting"
    );
    assert_eq!(world.rest.requests().len(), before, "not hung up on");

    // After the beep the machine records silence: the message goes.
    let quiet_from = tokio::time::Instant::now();
    speak(&mut caller, &mulaw_silence(1_400)).await;
    let request = next_text_turn(&mut session, WAIT)
        .await
        .expect("the message request");
    assert!(
        quiet_from.elapsed() >= Duration::from_millis(1_100),
        "the message waited for the greeting's end"
    );
    assert!(request.contains("Hello Asha"), "{request}");
    let path = message_plays_then_hang_up(&world, &mut caller, before).await;
    assert!(
        path.ends_with(&format!("/Call/{}/", call.call_id)),
        "{path}"
    );

    world
        .callback(
            Provider::Plivo,
            &call,
            &[
                ("CallStatus", "completed"),
                ("HangupCause", "NORMAL_CLEARING"),
                ("Duration", "9"),
            ],
        )
        .await;
    let record = world
        .record_until(&call.record, |r| {
            r["end_reason"].is_string() && r["duration_seconds"] == 9
        })
        .await;
    assert_eq!(record["status"], "machine", "{record}");
    assert_eq!(record["answered_by"], "machine");
    assert_eq!(record["end_reason"], "voicemail message left");
}

#[tokio::test]
async fn on_machine_hangup_still_hangs_up_without_a_word() {
    let mut world = World::start(&[]).await;
    let call = world
        .dial_and_answer(Provider::Twilio, 0, "machine_start")
        .await;
    assert_eq!(
        world.rest.requests()[0].field("MachineDetection"),
        Some("Enable")
    );
    assert!(
        call.answer_xml.contains("<Hangup/>") && !call.answer_xml.contains("<Stream"),
        "{}",
        call.answer_xml
    );

    let call = world.dial_and_answer(Provider::Plivo, 3, "").await;
    let dial = world.rest.requests()[1].json.clone().expect("JSON dial");
    assert_eq!(dial["machine_detection"], "hangup");
    let (_caller, mut session) = world.connect(Provider::Plivo, &call).await;
    let before = world.rest.requests().len();
    world
        .callback(
            Provider::Plivo,
            &call,
            &[
                ("Machine", "true"),
                ("Event", "MachineDetection"),
                ("CallStatus", "in-progress"),
            ],
        )
        .await;
    let requests = world.rest.wait_requests(before + 1, WAIT).await;
    assert_eq!(requests[before].method, "DELETE");
    assert_eq!(
        next_text_turn(&mut session, Duration::from_millis(300)).await,
        None,
        "no message asked for"
    );
    let record = world
        .record_until(&call.record, |r| r["status"] == "machine")
        .await;
    assert_eq!(record["status"], "machine");
}

#[tokio::test]
async fn the_fake_providers_refuse_dial_parameters_the_real_ones_do_not_take() {
    let rest = FakeRest::start().await;
    let http = reqwest::Client::new();
    let twilio = http
        .post(format!(
            "{}/2010-04-01/Accounts/{}/Calls.json",
            rest.url(),
            support::rest::TWILIO_SID
        ))
        .basic_auth(support::rest::TWILIO_SID, Some(support::rest::TWILIO_TOKEN))
        .form(&[("To", "+15551234567"), ("MachineDetection", "DetectBeep")])
        .send()
        .await
        .expect("Twilio dial");
    assert_eq!(twilio.status(), 400);
    let plivo = http
        .post(format!(
            "{}/v1/Account/{}/Call/",
            rest.url(),
            support::rest::PLIVO_ID
        ))
        .basic_auth(support::rest::PLIVO_ID, Some(support::rest::PLIVO_TOKEN))
        .json(&json!({"to": "15551234567", "machine_detection_beep": true}))
        .send()
        .await
        .expect("Plivo dial");
    assert_eq!(plivo.status(), 400);
}

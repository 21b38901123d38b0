//! Call timelines and latency, end to end: a fake phone speaks (synthetic speech, then line
//! noise, in real time), a fake Gemini answers each utterance after a known delay, and the
//! call's record must show that delay as the turn's response latency (±20 ms), for both
//! providers; a scripted call's timeline must list what happened in order; the timeline's cap
//! must hold and count what it left out.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::gemini::{Behaviour, FakeGemini, GeminiSession};
use support::phone::{Provider, mulaw_encode, pcm_tone_24k};
use support::rest::FakeRest;
use support::{Caller, PROVIDERS, TestServer};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(5);
/// How far a recorded latency may be from the delay the fake Gemini took.
const TOLERANCE_MS: i64 = 20;
/// Samples per 20 ms frame.
const FRAME: usize = 160;

/// A spoken phrase over faint line noise: `syllables` voiced syllables (harmonics of a
/// falling pitch under a syllable envelope) with short gaps, at about -20 dBFS, ending
/// exactly at the end of its last 20 ms frame so that the phrase ends when that frame is sent.
fn phrase(syllables: usize, seed: &mut u32) -> Vec<u8> {
    let mut pcm = Vec::new();
    let mut phase = 0.0f32;
    for s in 0..syllables {
        let n = 8 * (150 + 40 * (s % 3));
        let f0 = 170.0 - 12.0 * s as f32;
        for i in 0..n {
            phase += std::f32::consts::TAU * f0 * (1.0 - 0.1 * i as f32 / n as f32) / 8_000.0;
            let voice: f32 = (1..=18).map(|k| (k as f32 * phase).sin() / k as f32).sum();
            let edge = i.min(n - 1 - i) as f32 / 120.0;
            let envelope = if edge >= 1.0 {
                1.0
            } else {
                0.5 - 0.5 * (std::f32::consts::PI * edge).cos()
            };
            pcm.push((3_000.0 * voice * envelope) as i16);
        }
        if s + 1 < syllables {
            pcm.extend(std::iter::repeat_n(0i16, 8 * 70));
        }
    }
    // Leading quiet makes the length whole frames; the phrase's end stays at the very end.
    let pad = (FRAME - pcm.len() % FRAME) % FRAME;
    let mut padded = vec![0i16; pad];
    padded.extend(pcm);
    for sample in &mut padded {
        *sample = sample.saturating_add(noise_sample(seed));
    }
    mulaw_encode(&padded)
}

/// One sample of faint line noise (about -55 dBFS).
fn noise_sample(seed: &mut u32) -> i16 {
    *seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
    ((*seed >> 16) as i16 >> 6) / 4
}

/// `ms` of faint line noise.
fn line_noise(ms: u32, seed: &mut u32) -> Vec<u8> {
    let pcm: Vec<i16> = (0..ms * 8).map(|_| noise_sample(seed)).collect();
    mulaw_encode(&pcm)
}

/// Sends μ-law one frame every 20 ms, as a live call does; returns when the last frame went.
async fn send_realtime(caller: &mut Caller, mulaw: &[u8]) -> Instant {
    let sent = match caller {
        Caller::Twilio(c) => c.send_media_realtime(mulaw).await,
        Caller::Plivo(c) => c.send_media_realtime(mulaw).await,
    };
    assert!(sent, "the bridge stopped taking the caller's audio");
    Instant::now()
}

async fn press(caller: &mut Caller, digit: char) {
    let sent = match caller {
        Caller::Twilio(c) => c.send_dtmf(digit).await,
        Caller::Plivo(c) => c.send_dtmf(digit).await,
    };
    assert!(sent);
}

/// Answers a call through the webhook and starts its stream; returns the caller and the
/// call's record id.
async fn start_call(server: &TestServer, provider: Provider, call_id: &str) -> (Caller, String) {
    let form = [
        ("From", "+15550001111"),
        ("To", "+15550002222"),
        ("Direction", "inbound"),
    ];
    let params = server.answer(provider, call_id, &form).await;
    let record = params
        .iter()
        .find(|(name, _)| name == "record")
        .map(|(_, id)| id.clone())
        .expect("the answer webhook names the call's record");
    let caller = Caller::start_with(server, provider, call_id, &params).await;
    (caller, record)
}

/// The agent greets: 300 ms of audio and the end of its turn.
fn greet(session: &GeminiSession) {
    session.send_audio(&pcm_tone_24k(440.0, 300, 6_000));
    session.send_turn_complete();
}

/// `GET /calls/{id}` once its latency summary is there (the call has ended and its timeline
/// was written).
async fn ended_record(server: &TestServer, id: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let record: Value = server.record(id).await;
        if !record["latency"].is_null() {
            return record;
        }
        assert!(Instant::now() < deadline, "no latency in time: {record}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kinds(record: &Value) -> Vec<String> {
    record["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| e["kind"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The response-latency histogram's observation count, from the metrics text.
fn response_latency_count(server: &TestServer) -> f64 {
    let text = server.app.metrics.encode().expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix("gemini_phone_response_latency_seconds_count "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn each_turns_response_latency_is_the_delay_the_agent_took_for_both_providers() {
    let rest = FakeRest::start().await;
    let mut gemini = FakeGemini::start(Behaviour::Normal).await;
    let server = TestServer::with_providers(&rest.url(), &gemini.url(), &[]).await;
    // One reply quicker than the detector's 250 ms hangover, two slower.
    let delays = [
        Duration::from_millis(180),
        Duration::from_millis(450),
        Duration::from_millis(800),
    ];
    let mut seed = 7;
    for (n, provider) in PROVIDERS.into_iter().enumerate() {
        let (mut caller, record) = start_call(&server, provider, &format!("CAlat{n}")).await;
        let session = gemini.next_session(WAIT).await;
        greet(&session);
        send_realtime(&mut caller, &line_noise(400, &mut seed)).await;
        for (turn, delay) in delays.iter().enumerate() {
            let stopped = send_realtime(&mut caller, &phrase(3 + turn, &mut seed)).await;
            session.answer_at(stopped + *delay, &pcm_tone_24k(300.0, 200, 6_000));
            send_realtime(
                &mut caller,
                &line_noise(delay.as_millis() as u32 + 500, &mut seed),
            )
            .await;
        }
        caller.hang_up().await;

        let record = ended_record(&server, &record).await;
        let turns: Vec<i64> = record["latency"]["response_ms"]["turns"]
            .as_array()
            .map(|t| t.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default();
        println!("{provider:?}: delays {delays:?} recorded as {turns:?} ms");
        assert_eq!(
            turns.len(),
            delays.len(),
            "{provider:?}: {}",
            record["latency"]
        );
        for (measured, delay) in turns.iter().zip(delays) {
            let expected = delay.as_millis() as i64;
            assert!(
                (measured - expected).abs() <= TOLERANCE_MS,
                "{provider:?}: a reply after {expected} ms was recorded as {measured} ms"
            );
        }
        assert_eq!(
            record["latency"]["response_ms"]["max"].as_i64(),
            turns.iter().copied().max()
        );
    }
    assert_eq!(
        response_latency_count(&server),
        (PROVIDERS.len() * delays.len()) as f64,
        "every turn is observed in gemini_phone_response_latency_seconds"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_scripted_calls_timeline_lists_what_happened_in_order() {
    let rest = FakeRest::start().await;
    let mut gemini = FakeGemini::start(Behaviour::Normal).await;
    let server = TestServer::with_providers(&rest.url(), &gemini.url(), &[]).await;
    let mut seed = 3;
    // The answer webhook opens the session (pre-warming) before the provider's stream starts,
    // so the timeline shows Gemini connected before the stream's `start`.
    let form = [
        ("From", "+15550001111"),
        ("To", "+15550002222"),
        ("Direction", "inbound"),
    ];
    let params = server.answer(Provider::Twilio, "CAtimeline", &form).await;
    let record = params
        .iter()
        .find(|(name, _)| name == "record")
        .map(|(_, id)| id.clone())
        .expect("the answer webhook names the call's record");
    let mut session = gemini.next_session(WAIT).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut caller = Caller::start_with(&server, Provider::Twilio, "CAtimeline", &params).await;
    greet(&session);
    send_realtime(&mut caller, &line_noise(300, &mut seed)).await;

    // A question answered after 400 ms.
    let stopped = send_realtime(&mut caller, &phrase(3, &mut seed)).await;
    session.answer_at(
        stopped + Duration::from_millis(400),
        &pcm_tone_24k(300.0, 200, 6_000),
    );
    send_realtime(&mut caller, &line_noise(800, &mut seed)).await;

    // A tool the agent does not have, answered with an error at once.
    session.send_tool_call("fc-1", "launch_rockets", json!({}));
    loop {
        let message = session.recv(WAIT).await.expect("the tool's answer");
        if message.get("toolResponse").is_some() {
            break;
        }
    }
    press(&mut caller, '7').await;
    send_realtime(&mut caller, &line_noise(100, &mut seed)).await;

    // The agent talks; the caller talks over it and Gemini cuts it off.
    session.send_audio(&pcm_tone_24k(300.0, 2_000, 6_000));
    let words = phrase(4, &mut seed);
    let (first, second) = words.split_at(words.len() / 2 / FRAME * FRAME);
    send_realtime(&mut caller, first).await;
    session.send_interrupted();
    send_realtime(&mut caller, second).await;
    send_realtime(&mut caller, &line_noise(600, &mut seed)).await;

    // Gemini asks to move (resumed at once, the agent being silent), then the new
    // connection drops (resumed again).
    session.send_resumption_update("handle-1");
    session.send_go_away("30s");
    let resumed = gemini.next_session(WAIT).await;
    resumed.send_resumption_update("handle-2");
    send_realtime(&mut caller, &line_noise(100, &mut seed)).await;
    resumed.close(1011, "Internal error occurred.");
    let _again = gemini.next_session(WAIT).await;
    send_realtime(&mut caller, &line_noise(100, &mut seed)).await;
    caller.hang_up().await;

    let record = ended_record(&server, &record).await;
    if std::env::var_os("SHOW_TIMELINE").is_some() {
        println!(
            "{:#}",
            json!({"events": record["events"], "events_dropped": record["events_dropped"], "latency": record["latency"]})
        );
    }
    assert_eq!(
        kinds(&record),
        [
            "answer_webhook",
            "gemini_connected",
            "stream_start",
            "gemini_setup_complete",
            "first_agent_audio",
            "agent_turn_start",
            "caller_turn_end",
            "agent_turn_start",
            "tool_call",
            "dtmf",
            "agent_turn_start",
            "interrupted",
            "caller_turn_end",
            "gemini_connected",
            "gemini_resumed",
            "gemini_closed",
            "gemini_connected",
            "gemini_resumed",
            "end",
        ],
        "{:#}",
        record["events"]
    );
    let events = record["events"].as_array().cloned().unwrap_or_default();
    let times: Vec<&str> = events.iter().filter_map(|e| e["at"].as_str()).collect();
    assert_eq!(times.len(), events.len(), "every entry has a time");
    assert!(
        times.windows(2).all(|pair| pair[0] <= pair[1]),
        "times only rise: {times:?}"
    );
    let detail = |kind: &str| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e["kind"] == kind)
            .map(|e| e.get("detail").cloned().unwrap_or(Value::Null))
            .collect()
    };
    assert_eq!(detail("stream_start"), [Value::Null], "no empty detail");
    let latency = detail("agent_turn_start")[1]["latency_ms"]
        .as_i64()
        .unwrap_or(0);
    assert!(
        (latency - 400).abs() <= TOLERANCE_MS,
        "latency {latency} ms"
    );
    assert_eq!(
        detail("tool_call")[0],
        json!({"name": "unknown", "duration_ms": detail("tool_call")[0]["duration_ms"], "outcome": "error"})
    );
    assert_eq!(detail("dtmf"), [json!({"digit": "7"})]);
    assert_eq!(
        detail("gemini_resumed"),
        [
            json!({"cause": "go_away"}),
            json!({"cause": "connection_lost"})
        ]
    );
    assert_eq!(
        detail("gemini_closed"),
        [json!({"code": 1011, "reason": "Internal error occurred."})]
    );
    assert_eq!(detail("end"), [json!({"reason": "caller hung up"})]);

    let summary = &record["latency"];
    assert_eq!(summary["barge_ins"], 1, "{summary}");
    assert_eq!(summary["resumptions"], 2, "{summary}");
    assert_eq!(
        summary["response_ms"]["turns"].as_array().map(Vec::len),
        Some(1)
    );
    let greeting = summary["greeting_ms"].as_i64().unwrap_or(-1);
    let from_start = summary["greeting_from_start_ms"].as_i64().unwrap_or(-1);
    assert!(
        from_start >= 0 && greeting >= from_start,
        "the answer webhook came before the stream: {summary}"
    );
    assert_eq!(record["events_dropped"], 0);
    server.stop().await;
}

#[tokio::test]
async fn the_timeline_keeps_at_most_its_cap_and_counts_the_rest() {
    let rest = FakeRest::start().await;
    let mut gemini = FakeGemini::start(Behaviour::Normal).await;
    let server = TestServer::with_providers(&rest.url(), &gemini.url(), &[]).await;
    let (mut caller, record) = start_call(&server, Provider::Plivo, "plivo-cap").await;
    let mut session = gemini.next_session(WAIT).await;
    // The session was opened at the answer webhook; once it gets its greeting cue the call
    // has taken it (setup complete is on the timeline) and the presses come after.
    session.recv(WAIT).await.expect("the greeting cue");
    let presses = 600;
    for _ in 0..presses {
        press(&mut caller, '1').await;
    }
    caller.hang_up().await;

    let record = ended_record(&server, &record).await;
    let cap = gemini_phone::bridge::machine::MAX_EVENTS;
    // The bridge saw the stream start, the session open (two entries) and the presses; the
    // end is always kept, and the answer webhook's entry is added from the record.
    let seen = 3 + presses;
    assert_eq!(record["events_dropped"], (seen - cap) as u64);
    let kinds = kinds(&record);
    assert_eq!(kinds.len(), cap + 2);
    assert_eq!(kinds.first().map(String::as_str), Some("answer_webhook"));
    assert_eq!(kinds.last().map(String::as_str), Some("end"));
    server.stop().await;
}

/// A stored timeline reads back as `GET /calls/{id}` shows it, with the answer webhook's
/// entry and greeting latency taken from the record's `in-progress` time, and a second write
/// replaces the first; on SQLite, and on PostgreSQL when `TEST_POSTGRES_URL` is set.
#[tokio::test]
async fn timelines_are_stored_whole_and_read_back_on_both_databases() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = format!("sqlite://{}/records.db", dir.path().display());
    check_timeline_storage(&sqlite).await;
    let Ok(server) = std::env::var("TEST_POSTGRES_URL") else {
        eprintln!("SKIPPED the PostgreSQL half: set TEST_POSTGRES_URL to run it");
        return;
    };
    use sqlx::Connection as _;
    let schema = format!("gp_test_timeline_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&server)
        .await
        .expect("postgres");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .expect("create a test schema");
    let joiner = if server.contains('?') { '&' } else { '?' };
    let url = format!("{server}{joiner}options=-c%20search_path%3D{schema}");
    let checked = tokio::spawn(async move { check_timeline_storage(&url).await }).await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut admin)
        .await
        .expect("drop the test schema");
    checked.expect("the PostgreSQL half passes");
}

async fn check_timeline_storage(url: &str) {
    use gemini_phone::calls::store::{
        CallTimeline, LatencySummary, ResponseLatency, TimelineEntry,
    };
    use gemini_phone::calls::{CallStatus, CallStore, NewCall};

    let store = CallStore::connect(url).await.expect("store");
    let record = store
        .create(NewCall {
            provider: "twilio".into(),
            provider_call_id: Some("CAstore".into()),
            direction: gemini_phone::telephony::Direction::Inbound,
            from: "+15550001111".into(),
            to: "+15550002222".into(),
            campaign: None,
            prompt: None,
            vars: serde_json::Map::new(),
            status: CallStatus::Ringing,
        })
        .await
        .expect("create");
    let before = store.get(&record.id).await.expect("get").expect("record");
    assert!(before.latency.is_none() && before.events.is_empty());
    store
        .record_status(&record.id, CallStatus::InProgress)
        .await
        .expect("answered");
    let answered = store
        .get(&record.id)
        .await
        .expect("get")
        .expect("record")
        .history[1]
        .at
        .clone();
    let answered_ms = support_unix_ms(&answered);
    let entry = |at_ms: i64, kind: &str, detail: Value| TimelineEntry {
        at_ms,
        kind: kind.into(),
        detail: detail.as_object().cloned().unwrap_or_default(),
    };
    let mut timeline = CallTimeline {
        events: vec![
            entry(answered_ms + 40, "stream_start", json!({})),
            entry(answered_ms + 900, "first_agent_audio", json!({})),
            entry(
                answered_ms + 5_000,
                "end",
                json!({"reason": "caller hung up"}),
            ),
        ],
        events_dropped: 3,
        latency: LatencySummary {
            greeting_from_start_ms: Some(860),
            response_ms: ResponseLatency::of(vec![612, 540]),
            barge_ins: 1,
            ..LatencySummary::default()
        },
        first_agent_audio_ms: Some(answered_ms + 900),
    };
    store
        .save_timeline(&record.id, &timeline)
        .await
        .expect("save");
    let shown = serde_json::to_value(store.get(&record.id).await.expect("get").expect("record"))
        .expect("JSON");
    assert_eq!(
        kinds(&shown),
        ["answer_webhook", "stream_start", "first_agent_audio", "end"]
    );
    assert_eq!(shown["events"][0]["at"], answered.as_str());
    assert_eq!(
        shown["events"][3]["detail"],
        json!({"reason": "caller hung up"})
    );
    assert_eq!(shown["events_dropped"], 3);
    assert_eq!(
        shown["latency"],
        json!({
            "greeting_ms": 900, "greeting_from_start_ms": 860,
            "response_ms": {"turns": [612, 540], "p50": 540, "p95": 612, "max": 612},
            "barge_ins": 1, "resumptions": 0
        })
    );
    timeline.events_dropped = 0;
    store
        .save_timeline(&record.id, &timeline)
        .await
        .expect("save again");
    let again = store.get(&record.id).await.expect("get").expect("record");
    assert_eq!((again.events.len(), again.events_dropped), (4, 0));
    store.close().await;
}

/// Unix milliseconds of an RFC 3339 UTC time with milliseconds, as records show them.
fn support_unix_ms(at: &str) -> i64 {
    let field = |range: std::ops::Range<usize>| at[range].parse::<i64>().expect("digits");
    let (year, month, day) = (field(0..4), field(5..7), field(8..10));
    // Days from the civil date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + field(11..13) * 3_600 + field(14..16) * 60 + field(17..19);
    seconds * 1_000 + field(20..23)
}

//! Pre-warming, end to end on both providers: the Gemini session opens at the answer webhook,
//! the stream's `start` takes it (so the caller hears the agent sooner), and a session whose
//! stream never comes, whose call ended first, that failed, or that the server's shutdown
//! finds waiting is closed (or, having failed, replaced).

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::gemini::{Behaviour, Delays, GeminiSession};
use support::phone::Provider;
use support::world::World;
use support::{API_TOKEN, Caller, PROVIDERS, route};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(5);

/// What the issue measures against: the handshake, `setupComplete` and first audio of a
/// real session, roughly.
const LIVE_DELAYS: Delays = Delays {
    handshake: Duration::from_millis(150),
    setup_complete: Duration::from_millis(300),
    first_audio: Duration::from_millis(400),
};

impl World {
    async fn start(extra: &[(&str, &str)]) -> World {
        World::with(Behaviour::AnswerText, extra).await
    }

    /// Answers an inbound call of `provider` and returns its stream parameters.
    async fn answer(&self, provider: Provider, call_id: &str) -> Vec<(String, String)> {
        let (from, to) = numbers(provider);
        self.server
            .answer(provider, call_id, &[("From", from), ("To", to)])
            .await
    }

    /// Connects the call's stream, sends `start` and returns how long the first agent frame
    /// took to reach the phone from there.
    async fn start_to_first_frame(
        &self,
        provider: Provider,
        call_id: &str,
        params: &[(String, String)],
    ) -> (Caller, Duration) {
        let started = Instant::now();
        let mut caller = Caller::start_with(&self.server, provider, call_id, params).await;
        caller.recv_audio(1, WAIT).await;
        (caller, started.elapsed())
    }
}

fn numbers(provider: Provider) -> (&'static str, &'static str) {
    match provider {
        Provider::Twilio => ("+15550001111", "+15550009999"),
        Provider::Plivo => ("15550001111", "15550008888"),
    }
}

/// The greeting cue, the first thing the model is sent on a new session.
async fn expect_greeting_cue(session: &mut GeminiSession) {
    let cue = session
        .recv(WAIT)
        .await
        .expect("the session gets the greeting cue");
    let text = cue["realtimeInput"]["text"]
        .as_str()
        .or(cue["clientContent"]["turns"][0]["parts"][0]["text"].as_str())
        .unwrap_or_default();
    // Inbound calls are greeted at once; outbound ones once the callee is heard or has been
    // silent (`GREETING=callee_first`): both cues ask the model to greet.
    assert!(text.contains("Greet"), "greeting cue: {cue}");
}

#[tokio::test]
async fn first_words_come_sooner_with_a_session_opened_at_the_webhook() {
    let mut warm = World::start(&[]).await;
    let cold = World::start(&[("GEMINI_PREWARM_SECS", "0")]).await;
    warm.gemini.set_delays(LIVE_DELAYS);
    cold.gemini.set_delays(LIVE_DELAYS);
    for provider in PROVIDERS {
        let cold_params = cold.answer(provider, "CA-cold").await;
        let (mut cold_call, without) = cold
            .start_to_first_frame(provider, "CA-cold", &cold_params)
            .await;
        cold_call.hang_up().await;

        // A loaded machine can slow one call down; the best of three shows what pre-warming
        // does (a cold session cannot beat 850 ms however fast the machine is).
        let mut with = Duration::MAX;
        for attempt in 0..3 {
            let call_id = format!("CA-warm-{attempt}");
            let params = warm.answer(provider, &call_id).await;
            // The provider takes a while to open its stream; meanwhile the session opens.
            let mut session = warm.gemini.next_session(WAIT).await;
            let (mut call, took) = warm.start_to_first_frame(provider, &call_id, &params).await;
            expect_greeting_cue(&mut session).await;
            call.hang_up().await;
            assert!(session.wait_closed(WAIT).await, "the call's end closes it");
            with = with.min(took);
            if with < Duration::from_millis(600) {
                break;
            }
        }
        eprintln!(
            "{provider:?}: start → first agent frame {} ms with pre-warming, {} ms without",
            with.as_millis(),
            without.as_millis()
        );
        assert!(
            without >= Duration::from_millis(850),
            "{provider:?}: without pre-warming the session's opening is on the path: {without:?}"
        );
        assert!(
            with < Duration::from_millis(600),
            "{provider:?}: with pre-warming only the first audio should be: {with:?}"
        );
        assert!(
            with + Duration::from_millis(250) < without,
            "{provider:?}: {with:?} with pre-warming, {without:?} without"
        );
        assert!(
            warm.gemini
                .try_next_session(Duration::from_millis(100))
                .await
                .is_none(),
            "{provider:?}: a call opened a second session"
        );
    }
}

#[tokio::test]
async fn a_stream_takes_the_session_opened_at_its_webhook_even_while_it_is_opening() {
    let mut world = World::start(&[]).await;
    world.gemini.set_delays(LIVE_DELAYS);
    for provider in PROVIDERS {
        let before = world.gemini.connection_count();
        let call_id = format!("CA-inflight-{}", route(provider));
        let params = world.answer(provider, &call_id).await;
        assert!(
            world.gemini.wait_connections(before + 1, WAIT).await,
            "{provider:?}: the answer webhook opened no session"
        );
        // The stream starts while the session waits for `setupComplete`.
        let (mut call, _) = world
            .start_to_first_frame(provider, &call_id, &params)
            .await;
        let mut session = world.gemini.next_session(WAIT).await;
        expect_greeting_cue(&mut session).await;
        assert_eq!(
            world.gemini.connection_count(),
            before + 1,
            "{provider:?}: one Gemini session per call"
        );
        assert_eq!(world.server.app.prewarm.waiting(), 0);
        call.hang_up().await;
        assert!(session.wait_closed(WAIT).await);
    }
}

#[tokio::test]
async fn an_outbound_call_gets_its_rendered_prompt_in_the_prewarmed_session() {
    let mut world = World::start(&[]).await;
    for provider in PROVIDERS {
        let created: Value = reqwest::Client::new()
            .post(world.server.http("/calls"))
            .bearer_auth(API_TOKEN)
            .json(&json!({
                "to": "+15551234567",
                "provider": route(provider),
                "vars": {"name": "Asha", "company": "Acme Dental", "reason": "a reminder"},
            }))
            .send()
            .await
            .expect("POST /calls")
            .json()
            .await
            .expect("JSON");
        let id = created["id"].as_str().expect("record id").to_owned();
        let call_id = format!("CA-out-{}", route(provider));
        let (id_field, direction) = match provider {
            Provider::Twilio => ("CallSid", "outbound-api"),
            Provider::Plivo => ("CallUUID", "outbound"),
        };
        let (from, _) = numbers(provider);
        let (status, xml) = world
            .server
            .webhook(
                route(provider),
                &format!("/{}/answer?record={id}", route(provider)),
                &[
                    (id_field, &call_id),
                    ("From", from),
                    ("To", "+15551234567"),
                    ("Direction", direction),
                ],
            )
            .await;
        assert_eq!(status, 200, "{xml}");
        let mut session = world.gemini.next_session(WAIT).await;
        let prompt = session.setup()["setup"]["systemInstruction"]["parts"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(prompt.contains("Acme Dental"), "{provider:?}: {prompt}");
        let params = support::stream_params(&xml);
        let (mut call, _) = world
            .start_to_first_frame(provider, &call_id, &params)
            .await;
        expect_greeting_cue(&mut session).await;
        call.hang_up().await;
        assert!(session.wait_closed(WAIT).await);
    }
    assert!(
        world
            .gemini
            .try_next_session(Duration::from_millis(100))
            .await
            .is_none(),
        "a stream opened a second session"
    );
}

#[tokio::test]
async fn a_webhook_whose_stream_never_comes_closes_its_session() {
    let mut world = World::start(&[("GEMINI_PREWARM_SECS", "1")]).await;
    for provider in PROVIDERS {
        let answered = Instant::now();
        world
            .answer(provider, &format!("CA-nostream-{}", route(provider)))
            .await;
        let mut session = world.gemini.next_session(WAIT).await;
        assert_eq!(world.server.app.prewarm.waiting(), 1);
        assert!(
            session.wait_closed(Duration::from_secs(3)).await,
            "{provider:?}: the unused session stays open"
        );
        let waited = answered.elapsed();
        assert!(
            waited >= Duration::from_millis(900),
            "{provider:?}: closed after {waited:?}, before its stream had its chance"
        );
        assert_eq!(
            session.client_close().map(|(code, _)| code),
            Some(1000),
            "{provider:?}: closed politely"
        );
        assert_eq!(world.server.app.prewarm.waiting(), 0, "{provider:?}");
        assert_eq!(world.server.health().await["active_calls"], 0);
    }
}

#[tokio::test]
async fn a_call_that_ends_before_its_stream_closes_its_session_at_once() {
    let mut world = World::start(&[]).await;
    for provider in PROVIDERS {
        let call_id = format!("CA-gone-{}", route(provider));
        world.answer(provider, &call_id).await;
        let mut session = world.gemini.next_session(WAIT).await;
        let (path, id_field) = match provider {
            Provider::Twilio => ("/twilio/status", "CallSid"),
            Provider::Plivo => ("/plivo/hangup", "CallUUID"),
        };
        let form = [(id_field, call_id.as_str()), ("CallStatus", "completed")];
        let (status, body) = world.server.webhook(route(provider), path, &form).await;
        assert_eq!(status, 204, "{body}");
        // Well before the 10 s a session waits for a stream that might still come.
        assert!(
            session.wait_closed(Duration::from_secs(2)).await,
            "{provider:?}: the ended call's session stays open"
        );
        assert_eq!(world.server.app.prewarm.waiting(), 0);
    }
}

#[tokio::test]
async fn a_session_that_failed_to_prewarm_is_replaced_at_the_start() {
    let mut world = World::start(&[]).await;
    for provider in PROVIDERS {
        world.gemini.set_behaviour(Behaviour::RejectHandshake(503));
        let before = world.gemini.connection_count();
        let call_id = format!("CA-failed-{}", route(provider));
        let params = world.answer(provider, &call_id).await;
        assert!(world.gemini.wait_connections(before + 1, WAIT).await);
        world.gemini.set_behaviour(Behaviour::AnswerText);
        let (mut call, _) = world
            .start_to_first_frame(provider, &call_id, &params)
            .await;
        let mut session = world.gemini.next_session(WAIT).await;
        expect_greeting_cue(&mut session).await;
        assert_eq!(
            world.gemini.connection_count(),
            before + 2,
            "{provider:?}: the refused session, then the start's own"
        );
        call.hang_up().await;
    }
}

#[tokio::test]
async fn shutdown_closes_the_sessions_waiting_for_a_stream() {
    let mut world = World::start(&[]).await;
    let mut sessions = Vec::new();
    for provider in PROVIDERS {
        world
            .answer(provider, &format!("CA-shutdown-{}", route(provider)))
            .await;
        sessions.push(world.gemini.next_session(WAIT).await);
    }
    assert_eq!(world.server.app.prewarm.waiting(), 2);
    let shutdown = &world.server.app.shutdown;
    shutdown.begin();
    assert!(
        shutdown.drain(Duration::from_secs(2)).await,
        "the waiting sessions end before the drain deadline"
    );
    // Closed with a close frame once open, or dropped if the server had not yet read its
    // `setupComplete`: either way the session is gone at once.
    for mut session in sessions {
        assert!(session.wait_closed(Duration::from_millis(500)).await);
    }
    assert_eq!(world.server.app.prewarm.waiting(), 0);
}

/// When the stream's `start` is sent, in the benchmark.
#[derive(Clone, Copy, Debug)]
enum StartAt {
    /// Once the pre-warmed session is open (the provider took ≥ 450 ms to open its stream).
    SessionOpen,
    /// As soon as the answer webhook is answered (the least pre-warming can gain).
    AnswerReturned,
}

/// The benchmark behind the pre-warm figures: `start` → first agent frame, with pre-warming
/// (the session open when `start` comes, or still opening) and without, against the
/// delaying fake. Not part of the suite (it takes ~30 s):
/// `cargo test --test prewarm -- --ignored --nocapture bench_`, with
/// `PREWARM_BENCH_RUNS` calls per figure (default 7).
#[tokio::test]
#[ignore = "benchmark"]
async fn bench_start_to_first_agent_frame() {
    let runs: usize = std::env::var("PREWARM_BENCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(7);
    let mut warm = World::start(&[]).await;
    let mut cold = World::start(&[("GEMINI_PREWARM_SECS", "0")]).await;
    warm.gemini.set_delays(LIVE_DELAYS);
    cold.gemini.set_delays(LIVE_DELAYS);
    println!("| provider | pre-warm | start sent | median | min | max | runs |");
    println!("|---|---|---|---|---|---|---|");
    for provider in PROVIDERS {
        let cases = [
            ("on", Some(StartAt::SessionOpen)),
            ("on", Some(StartAt::AnswerReturned)),
            ("off", None),
        ];
        for (label, start_at) in cases {
            let world = if start_at.is_some() {
                &mut warm
            } else {
                &mut cold
            };
            let mut figures = Vec::with_capacity(runs);
            for run in 0..runs {
                let call_id = format!("CA-bench-{label}-{start_at:?}-{run}");
                let params = world.answer(provider, &call_id).await;
                if let Some(StartAt::SessionOpen) = start_at {
                    // Held, so the fake keeps it open; the call takes it over.
                    let _opened = world.gemini.next_session(WAIT).await;
                    let (mut call, took) = world
                        .start_to_first_frame(provider, &call_id, &params)
                        .await;
                    figures.push(took);
                    call.hang_up().await;
                } else {
                    let (mut call, took) = world
                        .start_to_first_frame(provider, &call_id, &params)
                        .await;
                    figures.push(took);
                    call.hang_up().await;
                    let _ = world.gemini.next_session(WAIT).await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            figures.sort();
            let ms = |d: &Duration| d.as_millis();
            let sent = match start_at {
                Some(StartAt::SessionOpen) => "session open",
                Some(StartAt::AnswerReturned) => "right after the answer",
                None => "after the answer",
            };
            println!(
                "| {provider:?} | {label} | {sent} | {} ms | {} ms | {} ms | {runs} |",
                ms(&figures[runs / 2]),
                ms(&figures[0]),
                ms(&figures[runs - 1]),
            );
        }
    }
}

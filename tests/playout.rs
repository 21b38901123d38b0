//! Paced playout end to end: the fake phones of both providers play what the server sends
//! in real time (support::playback), and a caller barges in halfway through a long answer
//! that the model produced in one burst.
//!
//! What a caller would notice: with `PLAYOUT_LEAD_MS` at its default the provider never
//! holds more than the lead (so a barge-in, or a clear that got lost, lets at most that much
//! through), and the record's agent line says only what the caller heard, marked
//! `interrupted`. Unpaced (`PLAYOUT_LEAD_MS=0`) the same burst sits whole at the provider.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::gemini::{Behaviour, FakeGemini, GeminiSession};
use support::phone::Provider;
use support::playback::Playback;
use support::rest::FakeRest;
use support::{Caller, PROVIDERS, TestServer};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(5);
/// The default lead, and the slack the issue allows the fake phone's measurements.
const LEAD: Duration = Duration::from_millis(200);
const SLACK: Duration = Duration::from_millis(40);
/// The model's answer: three seconds, produced at once.
const ANSWER: Duration = Duration::from_secs(3);
const ANSWER_TEXT: &str = "Thanks for calling Rivera Dental. Your cleaning is booked for Thursday the ninth at half past two, and we will text you a reminder the day before.";
/// How long the caller listens before talking over the agent.
const LISTENED: Duration = Duration::from_millis(1_500);

/// What one barged-in call measured.
struct BargeIn {
    /// Most audio the provider held at any moment.
    max_held: Duration,
    /// Audio the provider held when the model said the caller interrupted: what a caller
    /// would hear if the clear were lost.
    held_at_interruption: Duration,
    /// Audio played after the interruption (the clear honoured).
    heard_after_interruption: Duration,
    /// Audio heard in all.
    heard: Duration,
    clears: usize,
    /// The agent's line in the record.
    agent_line: Value,
}

async fn barge_in(provider: Provider, extra: &[(&str, &str)]) -> BargeIn {
    let rest = FakeRest::start().await;
    let mut gemini = FakeGemini::start(Behaviour::Normal).await;
    let server = TestServer::with_providers(&rest.url(), &gemini.url(), extra).await;
    let (call_id, from, to) = match provider {
        Provider::Twilio => (
            "CA00000000000000000000000000playout",
            "+15550001111",
            "+15550009999",
        ),
        Provider::Plivo => ("playout-0000-0000", "15550001111", "15550008888"),
    };
    let params = server
        .answer(provider, call_id, &[("From", from), ("To", to)])
        .await;
    let record = support::record_param(&params);
    let mut caller = Caller::start_with(&server, provider, call_id, &params).await;
    let session = gemini.next_session(WAIT).await;

    let mut playback = Playback::new(provider);
    answer_in_one_burst(&session);
    caller.play(&mut playback, LISTENED).await;
    let interrupted_at = Instant::now();
    let held_at_interruption = playback.held_at(interrupted_at);
    session.send_interrupted();
    session.send_turn_complete();
    caller.play(&mut playback, Duration::from_millis(600)).await;
    let end = Instant::now();

    let agent_line = record_line(&server, &record, "agent").await;
    let measured = BargeIn {
        max_held: playback.max_held,
        held_at_interruption,
        heard_after_interruption: playback.heard_between(interrupted_at, end),
        heard: playback.heard_until(end),
        clears: playback.clears.len(),
        agent_line,
    };
    eprintln!(
        "{provider:?} {extra:?}: held at most {:?}, {:?} at the interruption, heard {:?} after it and {:?} in all",
        measured.max_held,
        measured.held_at_interruption,
        measured.heard_after_interruption,
        measured.heard
    );
    server.stop().await;
    measured
}

/// Three seconds of a 440 Hz tone with the words it stands for, all at once in 240 ms
/// chunks (the model generates faster than real time, in chunks of about that size).
fn answer_in_one_burst(session: &GeminiSession) {
    let samples = (ANSWER.as_millis() as usize) * 24;
    let pcm: Vec<i16> = (0..samples)
        .map(|i| {
            let phase = std::f32::consts::TAU * 440.0 * i as f32 / 24_000.0;
            (8_000.0 * phase.sin()) as i16
        })
        .collect();
    session.send_output_transcription(ANSWER_TEXT);
    for chunk in pcm.chunks(24 * 240) {
        session.send_audio(chunk);
    }
}

/// `who`'s first transcript line in the call's record, once it is there.
async fn record_line(server: &TestServer, record: &str, who: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let call = server.record(record).await;
        let line = call["transcript"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|line| line["who"] == who);
        if let Some(line) = line {
            return line.clone();
        }
        assert!(Instant::now() < deadline, "no {who} line in {call}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks the agent's line is the start of the answer, cut near the share that was heard.
fn assert_cut_to_what_was_heard(provider: Provider, measured: &BargeIn) {
    let line = &measured.agent_line;
    assert_eq!(line["interrupted"], true, "{provider:?}: {line}");
    let text = line["text"].as_str().expect("text");
    assert!(
        ANSWER_TEXT.starts_with(text) && !text.is_empty(),
        "{provider:?}: {text:?} is not the start of the answer"
    );
    let kept = text.chars().count() as f64 / ANSWER_TEXT.chars().count() as f64;
    let heard = measured.heard.as_secs_f64() / ANSWER.as_secs_f64();
    // Within a word or two (the cut ends at a word) and the network's few milliseconds.
    assert!(
        (kept - heard).abs() < 0.08,
        "{provider:?}: the line keeps {kept:.2} of the words, the caller heard {heard:.2}: {text:?}"
    );
}

#[tokio::test]
async fn a_barge_in_lets_through_at_most_the_lead_and_the_line_says_what_was_heard() {
    for provider in PROVIDERS {
        let measured = barge_in(provider, &[]).await;
        assert!(
            measured.max_held <= LEAD + SLACK,
            "{provider:?}: the provider held {:?}",
            measured.max_held
        );
        assert!(
            measured.held_at_interruption <= LEAD + SLACK,
            "{provider:?}: {:?} would still play if the clear were lost",
            measured.held_at_interruption
        );
        assert!(
            measured.held_at_interruption >= Duration::from_millis(100),
            "{provider:?}: the provider ran nearly dry ({:?}): the caller would hear gaps",
            measured.held_at_interruption
        );
        assert!(
            measured.heard_after_interruption <= LEAD + SLACK,
            "{provider:?}: heard {:?} after the interruption",
            measured.heard_after_interruption
        );
        assert_eq!(measured.clears, 1, "{provider:?}");
        // The caller heard the answer up to the barge-in, without gaps.
        let heard = measured.heard.as_secs_f64();
        assert!(
            (1.3..1.75).contains(&heard),
            "{provider:?}: heard {heard:.2} s of the answer"
        );
        assert_cut_to_what_was_heard(provider, &measured);
    }
}

#[tokio::test]
async fn unpaced_the_whole_burst_waits_at_the_provider() {
    // The comparison that shows what the pacing is for, and that the fake phone can tell.
    let measured = barge_in(Provider::Twilio, &[("PLAYOUT_LEAD_MS", "0")]).await;
    assert!(
        measured.held_at_interruption >= Duration::from_millis(1_400),
        "held {:?}",
        measured.held_at_interruption
    );
    assert!(measured.max_held >= ANSWER - Duration::from_millis(100));
    // The record still estimates what was heard from the time that passed.
    assert_cut_to_what_was_heard(Provider::Twilio, &measured);
}

//! Paced playout through the whole machine: model audio arriving in bursts reaches the phone
//! at real time plus the lead, a barge-in drops at most the lead and cuts the agent's line
//! to what was heard, and the provider's position marks slow the pace when it falls behind.

use super::*;

const LEAD: Duration = Duration::from_millis(200);

/// A live machine that paces its playout at [`LEAD`].
fn paced() -> CallMachine {
    let mut m = live();
    m.set_playout_lead(Some(LEAD));
    m
}

/// Phone commands in order: `play`, `clear`, or `mark:NAME`; other outputs are skipped.
fn phone(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Phone(text) => {
                let v: Value = serde_json::from_str(text).ok()?;
                Some(match v["event"].as_str()? {
                    "media" => "play".to_owned(),
                    "mark" => format!("mark:{}", v["mark"]["name"].as_str()?),
                    other => other.to_owned(),
                })
            }
            _ => None,
        })
        .collect()
}

fn plays(outputs: &[Output]) -> usize {
    phone(outputs).iter().filter(|e| *e == "play").count()
}

/// What the provider sends when the audio before mark `name` has played.
fn mark_played(name: &str) -> String {
    format!(
        r#"{{"event":"mark","sequenceNumber":"9","streamSid":"MZ1","mark":{{"name":"{name}"}}}}"#
    )
}

/// A provider playing what the machine sends: 20 ms a frame from when it arrives, and marks
/// echoed once the audio before them has played.
#[derive(Default)]
struct Provider {
    plays_until: Option<Instant>,
    marks: std::collections::VecDeque<(Instant, String)>,
}

impl Provider {
    /// Takes what the machine sent at `at`.
    fn hear(&mut self, outputs: &[Output], at: Instant) {
        for event in phone(outputs) {
            let from = self.plays_until.map_or(at, |until| until.max(at));
            match event.strip_prefix("mark:") {
                Some(name) => self.marks.push_back((from, name.to_owned())),
                None if event == "play" => self.plays_until = Some(from + pacer::FRAME),
                None => {}
            }
        }
    }

    fn next_echo(&self) -> Option<Instant> {
        self.marks.front().map(|(at, _)| *at)
    }

    /// Echoes the next mark to `m` (at its time).
    fn echo(&mut self, m: &mut CallMachine) -> Option<Instant> {
        let (at, name) = self.marks.pop_front()?;
        m.handle_phone_text(&mark_played(&name), at);
        Some(at)
    }
}

/// Runs the machine's timers and the provider's mark echoes from `from` to `to`, as the
/// task would, returning what each step sent.
fn run_timers(
    m: &mut CallMachine,
    provider: &mut Provider,
    from: Instant,
    to: Instant,
) -> Vec<(Instant, Vec<Output>)> {
    let mut steps = Vec::new();
    let mut now = from;
    loop {
        let timer = m.poll_timeout().filter(|&due| due <= to);
        let echo = provider.next_echo().filter(|&due| due <= to);
        now = match (timer, echo) {
            (None, Some(_)) => provider.echo(m).unwrap_or(now).max(now),
            (Some(t), Some(e)) if e <= t => provider.echo(m).unwrap_or(now).max(now),
            (Some(t), _) => {
                let at = t.max(now);
                m.handle_timeout(at);
                at
            }
            (None, None) => return steps,
        };
        let out = drain(m);
        provider.hear(&out, now);
        steps.push((now, out));
    }
}

#[test]
fn a_burst_from_the_model_reaches_the_phone_at_real_time_plus_the_lead() {
    let mut m = paced();
    let mut provider = Provider::default();
    let t0 = Instant::now();
    // Two seconds of audio in one message (the model generates faster than real time).
    m.handle_gemini_frame(&model_audio(48_000), t0);
    let first = drain(&mut m);
    provider.hear(&first, t0);
    assert_eq!(plays(&first), 10, "the first 200 ms go at once");
    assert_eq!(
        phone(&first)[..2],
        ["play", "mark:p1"],
        "where did it start?"
    );
    assert_eq!(phone(&first).last().map(String::as_str), Some("mark:p10"));
    m.handle_gemini_frame(br#"{"serverContent":{"turnComplete":true}}"#, t0);
    assert_eq!(plays(&drain(&mut m)), 0, "the rest waits");

    // No caller audio: the pacing timer alone keeps the provider fed, never more than
    // the lead ahead.
    let mut sent_frames = 10u32;
    let mut last_sent = t0;
    for (now, out) in run_timers(&mut m, &mut provider, t0, t0 + Duration::from_secs(3)) {
        let n = plays(&out) as u32;
        sent_frames += n;
        if n > 0 {
            last_sent = now;
        }
        let played_by_now = now.saturating_duration_since(t0);
        let ahead = (pacer::FRAME * sent_frames).saturating_sub(played_by_now);
        assert!(ahead <= LEAD, "{ahead:?} ahead at {played_by_now:?}");
        if n > 0 && sent_frames < 101 {
            // Topped up to the lead again (within a frame) while audio waits.
            assert!(
                ahead > LEAD - pacer::FRAME,
                "topped up to only {ahead:?} at {played_by_now:?}"
            );
        }
    }
    // 100 frames, and the resampler's tail padded into one more.
    assert_eq!(sent_frames, 101);
    assert!(phone(&drain(&mut m)).is_empty());
    let took = last_sent - t0;
    // 2.02 s of audio: the last of it goes out between 200 ms (the lead) and 140 ms (the
    // top-up threshold plus the timer's slack) before it plays.
    assert!(
        took >= Duration::from_millis(1_820) && took <= Duration::from_millis(1_880),
        "two seconds of audio sent over {took:?}"
    );
}

#[test]
fn caller_frames_carry_the_top_ups_so_the_timer_rarely_wakes_the_task() {
    let mut m = paced();
    let t0 = Instant::now();
    m.handle_gemini_frame(&model_audio(48_000), t0);
    drain(&mut m);
    // The provider says where it is.
    m.handle_phone_text(&mark_played("p1"), t0 + pacer::FRAME);
    let mut from_caller = plays(&drain(&mut m));
    for k in 2..=90u32 {
        let now = t0 + Duration::from_millis(20) * k;
        // The task wakes for whichever comes first: the pacing timer or the caller's frame.
        if m.poll_timeout().is_some_and(|due| due < now) {
            m.handle_timeout(m.poll_timeout().unwrap());
            assert_eq!(plays(&drain(&mut m)), 0, "a caller frame came first");
        }
        m.handle_phone_text(&media(&[0xFF; 160]), now);
        from_caller += plays(&drain(&mut m));
    }
    assert!(
        from_caller >= 89,
        "{from_caller} frames went out beside caller frames"
    );
}

#[test]
fn a_barge_in_drops_at_most_the_lead_and_cuts_the_line_to_what_was_heard() {
    let mut m = paced();
    let mut provider = Provider::default();
    let t0 = Instant::now();
    let mut msg: Value = serde_json::from_slice(&model_audio(48_000)).unwrap();
    msg["serverContent"]["outputTranscription"] =
        json!({"text": "Your table for four is booked for Friday at eight in the evening."});
    m.handle_gemini_frame(msg.to_string().as_bytes(), t0);
    provider.hear(&drain(&mut m), t0);
    let barge_in = t0 + Duration::from_millis(1_000);
    run_timers(&mut m, &mut provider, t0, barge_in);
    m.handle_gemini_frame(br#"{"serverContent":{"interrupted":true}}"#, barge_in);
    let out = drain(&mut m);
    assert_eq!(phone(&out), ["clear"]);
    let Some(Output::Transcript {
        speaker: Speaker::Agent,
        text,
        interrupted: true,
    }) = out.iter().find(|o| matches!(o, Output::Transcript { .. }))
    else {
        panic!("no interrupted agent line in {out:?}");
    };
    // One second of two was heard: about half the words.
    assert_eq!(text, "Your table for four is booked for");
    // The timeline says how much, of how much.
    let timeline = m
        .timeline_mut()
        .finish(&EndReason::CallerHungUp, 0, barge_in, 0);
    let interrupted = timeline
        .events
        .iter()
        .find(|e| e.kind == "interrupted")
        .expect("an interrupted event");
    assert_eq!(interrupted.detail["heard_ms"], 1_000);
    assert_eq!(interrupted.detail["produced_ms"], 2_000);
    // Nothing of the old turn is sent after the clear, and the pacing timer is off.
    assert_eq!(m.timers.get(Timer::Pace), None);
    let mut provider = Provider::default();
    let after: Vec<String> = run_timers(
        &mut m,
        &mut provider,
        barge_in,
        barge_in + Duration::from_secs(3),
    )
    .iter()
    .flat_map(|(_, out)| phone(out))
    .collect();
    assert!(after.is_empty(), "{after:?}");
}

#[test]
fn a_provider_behind_our_estimate_is_fed_later() {
    let mut m = paced();
    let t0 = Instant::now();
    m.handle_gemini_frame(&model_audio(48_000), t0);
    drain(&mut m);
    // The provider started playing 150 ms late: frame 10 played at 350 ms, not 200 ms.
    m.handle_phone_text(&mark_played("p1"), t0 + Duration::from_millis(170));
    drain(&mut m);
    let acked = t0 + Duration::from_millis(350);
    let mut silent = Provider::default();
    let before: usize = run_timers(&mut m, &mut silent, t0, acked)
        .iter()
        .map(|(_, o)| plays(o))
        .sum();
    m.handle_phone_text(&mark_played("p10"), acked);
    drain(&mut m);
    // By our clock 17 frames are due by 350 ms (10 + 7); the provider holds `before` of
    // them, which it will play by 350 + 20 × before ms, so the next top-up waits for that.
    let next = m.poll_timeout().expect("more audio waits");
    assert!(
        next >= acked + pacer::FRAME * before as u32 - (LEAD - Duration::from_millis(40)),
        "fed again at {:?} after the ack though the provider holds {before} frames",
        next - acked
    );
}

#[test]
fn a_hang_up_waits_for_paced_audio_then_its_mark() {
    let mut m = paced();
    let t0 = Instant::now();
    m.handle_gemini_frame(&model_audio(24_000), t0);
    m.handle_after_playout(AfterPlayout::HangUp, t0);
    m.handle_gemini_frame(br#"{"serverContent":{"turnComplete":true}}"#, t0);
    let mut provider = Provider::default();
    let first = drain(&mut m);
    provider.hear(&first, t0);
    let mut events = phone(&first);
    let mut played_out_at = None;
    for (now, out) in run_timers(&mut m, &mut provider, t0, t0 + Duration::from_secs(2)) {
        events.extend(phone(&out));
        if out.contains(&Output::PlayedOut(AfterPlayout::HangUp)) {
            played_out_at = Some(now);
        }
    }
    let tail: Vec<&str> = events.iter().rev().take(2).map(String::as_str).collect();
    assert_eq!(tail, ["mark:playout", "mark:turn-1"], "{events:?}");
    assert_eq!(events.iter().filter(|e| *e == "play").count(), 51);
    // The hang-up goes ahead when the provider has played the last frame (51 × 20 ms).
    assert_eq!(played_out_at, Some(t0 + pacer::FRAME * 51));
}

#[test]
fn a_barge_in_during_a_waiting_hang_up_sends_the_playout_mark_after_the_clear() {
    let mut m = paced();
    let t0 = Instant::now();
    m.handle_gemini_frame(&model_audio(48_000), t0);
    m.handle_after_playout(AfterPlayout::HangUp, t0);
    drain(&mut m);
    m.handle_gemini_frame(br#"{"serverContent":{"interrupted":true}}"#, t0);
    assert_eq!(phone(&drain(&mut m)), ["clear", "mark:playout"]);
}

#[test]
fn a_hang_up_after_a_long_queued_answer_waits_for_all_of_it() {
    let mut m = paced();
    let t0 = Instant::now();
    // Twenty seconds of goodbye, produced at once, then the model hangs up.
    m.handle_gemini_frame(&model_audio(480_000), t0);
    m.handle_gemini_frame(br#"{"serverContent":{"turnComplete":true}}"#, t0);
    drain(&mut m);
    m.handle_after_playout(AfterPlayout::HangUp, t0);
    let deadline = m.timers.get(Timer::Playout).expect("a deadline");
    assert!(
        deadline > t0 + Duration::from_secs(20) && deadline > t0 + PLAYOUT_TIMEOUT,
        "the hang-up would cut the goodbye at {:?}",
        deadline - t0
    );
}

#[test]
fn after_a_barge_in_the_next_turn_still_gets_its_marks_and_its_hang_up() {
    let mut m = paced();
    let mut provider = Provider::default();
    let t0 = Instant::now();
    // Two seconds produced at once; the caller talks over it after half a second, so most
    // of it is dropped before it was ever sent.
    m.handle_gemini_frame(&model_audio(48_000), t0);
    provider.hear(&drain(&mut m), t0);
    let barge_in = t0 + Duration::from_millis(500);
    run_timers(&mut m, &mut provider, t0, barge_in);
    m.handle_gemini_frame(br#"{"serverContent":{"interrupted":true}}"#, barge_in);
    drain(&mut m);

    // The next answer, then the agent hangs up.
    let next = barge_in + Duration::from_millis(300);
    let mut provider = Provider::default();
    let mut msg: Value = serde_json::from_slice(&model_audio(12_000)).unwrap();
    msg["serverContent"]["outputTranscription"] = json!({"text": "Sorry, go ahead."});
    m.handle_gemini_frame(msg.to_string().as_bytes(), next);
    m.handle_after_playout(AfterPlayout::HangUp, next);
    m.handle_gemini_frame(br#"{"serverContent":{"turnComplete":true}}"#, next);
    let first = drain(&mut m);
    provider.hear(&first, next);
    let mut events = phone(&first);
    let mut played_out = false;
    for (_, out) in run_timers(&mut m, &mut provider, next, next + Duration::from_secs(2)) {
        events.extend(phone(&out));
        played_out |= out.contains(&Output::PlayedOut(AfterPlayout::HangUp));
    }
    assert!(events.contains(&"mark:turn-1".to_owned()), "{events:?}");
    assert!(events.contains(&"mark:playout".to_owned()), "{events:?}");
    assert!(
        played_out,
        "the hang-up waited for a mark that never went out"
    );
}

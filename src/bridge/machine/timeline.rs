//! The call's timeline and latency, kept as plain data beside the other sub-machines: what
//! happened when (stream start, Gemini sessions, turns, barge-ins, tool calls, keys, the
//! end), and how long the caller waited for the agent.
//!
//! **Response latency** of a turn is the time from the caller's end of speech (found by the
//! [`EndpointDetector`] on their audio) to the first frame of the agent's reply queued for
//! the phone. The agent's first turn is the greeting, timed from the stream's start instead;
//! anything the caller said before it is not a turn the agent answered, nor is what they say
//! over the agent without cutting it off. A reply that starts
//! while the detector's hangover is still running settles that the caller's turn is over, so
//! the turn is ended there and then, where the speech stopped.
//!
//! Entries are stamped with the monotonic clock and turned into wall-clock milliseconds once,
//! when the call ends, so they are in order whatever the wall clock does meanwhile. The
//! timeline holds at most [`MAX_EVENTS`] entries (the end is always kept) and counts the rest;
//! nothing here allocates per audio frame.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::playout::TurnHeard;
use super::session::ResumeCause;
use super::types::EndReason;
use crate::audio::endpoint::{EndpointDetector, TurnEnd};
use crate::calls::store::{CallTimeline, LatencySummary, ResponseLatency, TimelineEntry};

/// Entries kept per call; later ones are counted in `events_dropped`, except the end.
pub const MAX_EVENTS: usize = 500;
/// Characters of a DTMF event's digit kept (providers send one).
const MAX_DIGIT_CHARS: usize = 4;
/// Turn latencies kept per call (several hours of conversation); later turns go uncounted.
const MAX_TURNS: usize = 4_096;

/// What happened, as the record names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The provider's `start` arrived.
    StreamStart,
    /// The WebSocket handshake with Gemini finished.
    GeminiConnected,
    /// Gemini answered the first session's setup: the agent is live.
    GeminiSetupComplete,
    /// A resumed session is live again.
    GeminiResumed,
    /// Gemini (or the network) closed the live session.
    GeminiClosed,
    /// The agent's first audio went to the phone.
    FirstAgentAudio,
    /// The caller stopped speaking (the end of their speech, not of the hangover).
    CallerTurnEnd,
    /// The agent started a turn.
    AgentTurnStart,
    /// The caller talked over the agent, which was cut off.
    Interrupted,
    /// A tool call finished.
    ToolCall,
    /// The caller pressed a key.
    Dtmf,
    /// The call ended.
    End,
}

impl EventKind {
    /// The snake_case name in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::StreamStart => "stream_start",
            EventKind::GeminiConnected => "gemini_connected",
            EventKind::GeminiSetupComplete => "gemini_setup_complete",
            EventKind::GeminiResumed => "gemini_resumed",
            EventKind::GeminiClosed => "gemini_closed",
            EventKind::FirstAgentAudio => "first_agent_audio",
            EventKind::CallerTurnEnd => "caller_turn_end",
            EventKind::AgentTurnStart => "agent_turn_start",
            EventKind::Interrupted => "interrupted",
            EventKind::ToolCall => "tool_call",
            EventKind::Dtmf => "dtmf",
            EventKind::End => "end",
        }
    }
}

/// One entry, as kept during the call.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    at: Instant,
    kind: EventKind,
    detail: Detail,
}

/// An entry's facts, compact while the call lasts (a JSON map costs a tree node each) and
/// turned into the record's `detail` object when it ends.
#[derive(Debug, Clone, PartialEq)]
enum Detail {
    None,
    SpeechMs(u32),
    LatencyMs(u32),
    Resumed(ResumeCause),
    Closed {
        code: u16,
        reason: Box<str>,
    },
    Tool {
        name: Box<str>,
        duration_ms: u32,
        outcome: &'static str,
    },
    Digit(Box<str>),
    Reason(Box<str>),
    Heard {
        heard_ms: u64,
        produced_ms: u64,
    },
}

impl Detail {
    fn into_map(self) -> Map<String, Value> {
        let fields: Vec<(&str, Value)> = match self {
            Detail::None => Vec::new(),
            Detail::SpeechMs(ms) => vec![("speech_ms", json!(ms))],
            Detail::LatencyMs(ms) => vec![("latency_ms", json!(ms))],
            Detail::Resumed(cause) => vec![("cause", json!(cause_name(cause)))],
            Detail::Closed { code, reason } => {
                vec![("code", json!(code)), ("reason", json!(reason))]
            }
            Detail::Tool {
                name,
                duration_ms,
                outcome,
            } => vec![
                ("name", json!(name)),
                ("duration_ms", json!(duration_ms)),
                ("outcome", json!(outcome)),
            ],
            Detail::Digit(digit) => vec![("digit", json!(digit))],
            Detail::Reason(reason) => vec![("reason", json!(reason))],
            Detail::Heard {
                heard_ms,
                produced_ms,
            } => vec![
                ("heard_ms", json!(heard_ms)),
                ("produced_ms", json!(produced_ms)),
            ],
        };
        fields
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect()
    }
}

/// The timeline of one call.
#[derive(Debug, Default)]
pub struct Timeline {
    events: Vec<Event>,
    dropped: u64,
    detector: EndpointDetector,
    /// When the caller last stopped speaking, until the agent answers.
    unanswered: Option<Instant>,
    stream_started: Option<Instant>,
    first_agent_audio: Option<Instant>,
    /// Response latency of each turn, in milliseconds.
    turns: Vec<u32>,
    /// Turns already handed out by [`Timeline::next_unreported_latency`].
    reported: usize,
    barge_ins: u32,
    /// Why the session being reopened was closed.
    resuming: Option<ResumeCause>,
}

impl Timeline {
    /// A frame of the caller's μ-law that arrived at `now`: the detector's arithmetic, and a
    /// turn end when one is found. A turn that ends while the agent is speaking (and was not
    /// cut off) is recorded but not awaiting an answer: the agent's next turn follows the
    /// current one, not the caller's words, so timing it from them would say nothing.
    pub fn caller_audio(&mut self, mulaw: &[u8], now: Instant, agent_speaking: bool) {
        if let Some(turn) = self.detector.push(mulaw, now) {
            self.caller_turn_ended(turn);
            if agent_speaking {
                self.unanswered = None;
            }
        }
    }

    /// The provider's `start` arrived at `now`.
    pub fn stream_started(&mut self, now: Instant) {
        self.stream_started.get_or_insert(now);
        self.record(now, EventKind::StreamStart, Detail::None);
    }

    /// The WebSocket handshake with Gemini finished at `at` (setup follows).
    pub fn gemini_connected(&mut self, at: Instant) {
        self.record(at, EventKind::GeminiConnected, Detail::None);
    }

    /// A session answered its setup at `now`; `resumed` when it replaced a closed one.
    pub fn gemini_ready(&mut self, resumed: bool, now: Instant) {
        match self.resuming.take().filter(|_| resumed) {
            Some(cause) => {
                self.record(now, EventKind::GeminiResumed, Detail::Resumed(cause));
            }
            None => self.record(now, EventKind::GeminiSetupComplete, Detail::None),
        }
    }

    /// The live session is being closed to be resumed, for `cause`.
    pub fn resuming(&mut self, cause: ResumeCause) {
        self.resuming = Some(cause);
    }

    /// Gemini or the network closed the live session at `now`.
    pub fn gemini_closed(&mut self, code: u16, reason: &str, now: Instant) {
        let reason = reason.into();
        self.record(
            now,
            EventKind::GeminiClosed,
            Detail::Closed { code, reason },
        );
    }

    /// The first frame of an agent turn was queued for the phone at `now`.
    pub fn agent_turn_started(&mut self, now: Instant) {
        // The agent answering settles that a caller who paused has finished.
        if let Some(turn) = self.detector.end_turn_early() {
            self.caller_turn_ended(turn);
        }
        if self.first_agent_audio.is_none() {
            // The greeting: what the caller said before it is not something it answers.
            self.first_agent_audio = Some(now);
            self.unanswered = None;
            self.record(now, EventKind::FirstAgentAudio, Detail::None);
            self.record(now, EventKind::AgentTurnStart, Detail::None);
            return;
        }
        let Some(stopped) = self.unanswered.take() else {
            self.record(now, EventKind::AgentTurnStart, Detail::None);
            return;
        };
        let latency_ms = millis(now.saturating_duration_since(stopped));
        if self.turns.len() < MAX_TURNS {
            self.turns.push(latency_ms);
        }
        let detail = Detail::LatencyMs(latency_ms);
        self.record(now, EventKind::AgentTurnStart, detail);
    }

    /// The caller barged in at `now`: the agent was cut off, having been heard for `heard`
    /// of its turn (when a turn was under way).
    pub fn interrupted(&mut self, heard: Option<TurnHeard>, now: Instant) {
        self.barge_ins = self.barge_ins.saturating_add(1);
        let detail = match heard.map(TurnHeard::millis) {
            Some((heard_ms, produced_ms)) => Detail::Heard {
                heard_ms,
                produced_ms,
            },
            None => Detail::None,
        };
        self.record(now, EventKind::Interrupted, detail);
    }

    /// A tool call that started at `started` finished at `now` with `outcome`.
    pub fn tool_call(&mut self, name: &str, outcome: &'static str, started: Instant, now: Instant) {
        let detail = Detail::Tool {
            name: name.into(),
            duration_ms: millis(now.saturating_duration_since(started)),
            outcome,
        };
        self.record(now, EventKind::ToolCall, detail);
    }

    /// The caller pressed `digit` at `now`.
    pub fn dtmf(&mut self, digit: &str, now: Instant) {
        // A key is one character; a hostile stream's long "digit" is not kept whole.
        let digit: String = digit.chars().take(MAX_DIGIT_CHARS).collect();
        self.record(now, EventKind::Dtmf, Detail::Digit(digit.into()));
    }

    /// The next turn latency not yet handed out (for the metrics), oldest first.
    pub fn next_unreported_latency(&mut self) -> Option<Duration> {
        let latency = *self.turns.get(self.reported)?;
        self.reported += 1;
        Some(Duration::from_millis(u64::from(latency)))
    }

    /// Ends the timeline: the call ended at `now` for `reason` after `resumptions` session
    /// resumptions, and the wall clock read `wall_now_ms` (unix milliseconds) at `now`.
    pub fn finish(
        &mut self,
        reason: &EndReason,
        resumptions: u32,
        now: Instant,
        wall_now_ms: i64,
    ) -> CallTimeline {
        let detail = Detail::Reason(reason.to_string().into());
        self.record(now, EventKind::End, detail);
        let wall_ms = |at: Instant| {
            let before = now.saturating_duration_since(at).as_millis();
            wall_now_ms.saturating_sub(i64::try_from(before).unwrap_or(i64::MAX))
        };
        let greeting_from_start = match (self.stream_started, self.first_agent_audio) {
            (Some(start), Some(first)) => Some(u64::from(millis(first - start))),
            _ => None,
        };
        CallTimeline {
            events: std::mem::take(&mut self.events)
                .into_iter()
                .map(|event| TimelineEntry {
                    at_ms: wall_ms(event.at),
                    kind: event.kind.as_str().to_owned(),
                    detail: event.detail.into_map(),
                })
                .collect(),
            events_dropped: self.dropped,
            latency: LatencySummary {
                greeting_ms: None,
                greeting_from_start_ms: greeting_from_start,
                response_ms: ResponseLatency::of(
                    self.turns.iter().copied().map(u64::from).collect(),
                ),
                barge_ins: self.barge_ins,
                resumptions,
            },
            first_agent_audio_ms: self.first_agent_audio.map(wall_ms),
        }
    }

    fn caller_turn_ended(&mut self, turn: TurnEnd) {
        self.unanswered = Some(turn.at);
        let detail = Detail::SpeechMs(millis(turn.speech));
        self.record(turn.at, EventKind::CallerTurnEnd, detail);
    }

    /// Adds an entry in time order: a caller's turn end is found a hangover after the
    /// speech stopped, so it may belong before entries already made.
    fn record(&mut self, at: Instant, kind: EventKind, detail: Detail) {
        if self.events.len() >= MAX_EVENTS && kind != EventKind::End {
            self.dropped += 1;
            return;
        }
        let place = self
            .events
            .iter()
            .rposition(|event| event.at <= at)
            .map_or(0, |i| i + 1);
        self.events.insert(place, Event { at, kind, detail });
    }
}

fn cause_name(cause: ResumeCause) -> &'static str {
    match cause {
        ResumeCause::GoAway => "go_away",
        ResumeCause::ConnectionLost => "connection_lost",
        ResumeCause::Stalled => "stalled",
    }
}

/// Whole milliseconds, saturating (a call lasts hours at most).
fn millis(span: Duration) -> u32 {
    u32::try_from(span.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(timeline: &CallTimeline) -> Vec<&str> {
        timeline.events.iter().map(|e| e.kind.as_str()).collect()
    }

    #[test]
    fn a_late_turn_end_goes_in_time_order_and_timestamps_only_rise() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut timeline = Timeline::default();
        timeline.stream_started(ms(0));
        timeline.agent_turn_started(ms(600));
        timeline.dtmf("5", ms(1_200));
        // A turn that ended at 1 100 ms, found after the hangover.
        timeline.caller_turn_ended(TurnEnd {
            at: ms(1_100),
            speech: Duration::from_millis(400),
        });
        timeline.agent_turn_started(ms(1_800));
        let done = timeline.finish(&EndReason::CallerHungUp, 0, ms(2_000), 1_000_000);
        assert_eq!(
            kinds(&done),
            [
                "stream_start",
                "first_agent_audio",
                "agent_turn_start",
                "caller_turn_end",
                "dtmf",
                "agent_turn_start",
                "end"
            ]
        );
        let times: Vec<i64> = done.events.iter().map(|e| e.at_ms).collect();
        assert_eq!(
            times,
            [
                998_000, 998_600, 998_600, 999_100, 999_200, 999_800, 1_000_000
            ]
        );
        assert_eq!(done.latency.response_ms.turns, [700]);
        assert_eq!(done.latency.greeting_from_start_ms, Some(600));
        assert_eq!(done.first_agent_audio_ms, Some(998_600));
        assert_eq!(done.events[5].detail["latency_ms"], 700);
    }

    #[test]
    fn speech_before_the_greeting_is_not_a_turn_answered() {
        let t0 = Instant::now();
        let mut timeline = Timeline::default();
        timeline.caller_turn_ended(TurnEnd {
            at: t0,
            speech: Duration::from_millis(300),
        });
        timeline.agent_turn_started(t0 + Duration::from_millis(900));
        // A later turn with nothing said before it has no latency either.
        timeline.agent_turn_started(t0 + Duration::from_millis(3_000));
        assert_eq!(timeline.next_unreported_latency(), None);
        let done = timeline.finish(&EndReason::CallerHungUp, 0, t0 + Duration::from_secs(4), 0);
        assert!(done.latency.response_ms.turns.is_empty());
        assert!(
            done.events
                .iter()
                .all(|e| !e.detail.contains_key("latency_ms"))
        );
    }

    /// Feeds 200 ms of digital silence, 400 ms of a loud 200 Hz tone, then `quiet_ms` of
    /// silence, as 20 ms frames arriving in real time from `from`; returns when the tone
    /// stopped.
    fn speak(
        timeline: &mut Timeline,
        from: Instant,
        quiet_ms: u64,
        agent_speaking: bool,
    ) -> Instant {
        let tone: Vec<u8> = std::iter::repeat_n(0xFF, 1_600)
            .chain((0..3_200).map(|i| {
                let phase = std::f32::consts::TAU * 200.0 * i as f32 / 8_000.0;
                crate::audio::codec::encode((8_000.0 * phase.sin()) as i16)
            }))
            .chain(std::iter::repeat_n(0xFF, quiet_ms as usize * 8))
            .collect();
        for (k, frame) in tone.chunks(160).enumerate() {
            let arrived = from + Duration::from_millis(20 * (k as u64 + 1));
            timeline.caller_audio(frame, arrived, agent_speaking);
        }
        from + Duration::from_millis(600)
    }

    #[test]
    fn words_said_over_the_agent_are_not_a_turn_it_answers() {
        let t0 = Instant::now();
        let mut timeline = Timeline::default();
        timeline.agent_turn_started(t0);
        // Over the agent, which goes on: recorded, but the next turn is not its answer.
        let over = speak(&mut timeline, t0, 400, true);
        timeline.agent_turn_started(over + Duration::from_millis(900));
        assert_eq!(timeline.next_unreported_latency(), None);
        // With the agent silent, the next turn answers it.
        let from = t0 + Duration::from_secs(3);
        let stopped = speak(&mut timeline, from, 400, false);
        timeline.agent_turn_started(stopped + Duration::from_millis(700));
        let latency = timeline.next_unreported_latency().unwrap_or_default();
        assert!(
            latency.abs_diff(Duration::from_millis(700)) <= Duration::from_millis(20),
            "{latency:?}"
        );
        let done = timeline.finish(&EndReason::CallerHungUp, 0, t0 + Duration::from_secs(6), 0);
        let ends = done
            .events
            .iter()
            .filter(|e| e.kind == "caller_turn_end")
            .count();
        assert_eq!(ends, 2, "both turns are on the timeline");
    }

    #[test]
    fn the_cap_keeps_the_first_entries_and_the_end_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut timeline = Timeline::default();
        for n in 0..(MAX_EVENTS as u64 + 42) {
            timeline.dtmf("1", t0 + Duration::from_millis(n));
        }
        let done = timeline.finish(&EndReason::AgentHungUp, 2, t0 + Duration::from_secs(5), 0);
        assert_eq!(done.events.len(), MAX_EVENTS + 1);
        assert_eq!(done.events_dropped, 42);
        assert_eq!(done.events.last().map(|e| e.kind.as_str()), Some("end"));
        assert_eq!(done.latency.resumptions, 2);
    }

    #[test]
    fn latencies_are_handed_out_once_each_in_order() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut timeline = Timeline::default();
        timeline.agent_turn_started(ms(500));
        for (stop, answer) in [(1_000, 1_612), (3_000, 3_540)] {
            timeline.caller_turn_ended(TurnEnd {
                at: ms(stop),
                speech: Duration::from_millis(500),
            });
            timeline.agent_turn_started(ms(answer));
        }
        assert_eq!(
            timeline.next_unreported_latency(),
            Some(Duration::from_millis(612))
        );
        assert_eq!(
            timeline.next_unreported_latency(),
            Some(Duration::from_millis(540))
        );
        assert_eq!(timeline.next_unreported_latency(), None);
        let done = timeline.finish(&EndReason::CallerHungUp, 0, ms(4_000), 0);
        let response = done.latency.response_ms;
        assert_eq!(
            (response.p50, response.p95, response.max),
            (Some(540), Some(612), Some(612))
        );
    }
}

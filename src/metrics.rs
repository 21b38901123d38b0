//! The server's Prometheus metrics: the one place that names every metric and label, and the
//! small typed functions the rest of the code records through.
//!
//! Built on `prometheus-client` (the Prometheus project's own Rust client): its registry is a
//! plain value owned by [`crate::app::App`], so every server in a test process keeps its own
//! counts, and its counters and gauges are atomics behind cheap handles. Nothing here is
//! called per audio frame: a call counts its frames in plain integers ([`FrameCounts`]) and
//! adds them here every few seconds and at its end; labelled families (a short lock and a
//! hash lookup) are touched once per call, tool call, session or rejected webhook.
//!
//! Values that already live elsewhere — live calls, the record writer's queue — are read
//! when `/metrics` is scraped ([`Metrics::sample`]) rather than tracked twice.

use std::fmt;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::bridge::EndReason;

/// Every metric's name starts with this (the contract's `gemini_phone_`).
const PREFIX: &str = "gemini_phone";

/// The `Content-Type` of [`Metrics::encode`]'s output (OpenMetrics 1.0 text, which
/// Prometheus scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Buckets (seconds) for how long a caller waits for the agent: dense from 0.2 s to 3 s,
/// where a voice agent's latency lives, with a tail that still tells "slow" from "broken".
const LATENCY_BUCKETS: [f64; 14] = [
    0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0,
];
/// Buckets (seconds) for whole calls: ten seconds to an hour.
const CALL_DURATION_BUCKETS: [f64; 10] = [
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1_200.0, 1_800.0, 3_600.0,
];
/// Buckets (seconds) for tool calls: quick lookups to the slowest a tool may take.
const TOOL_DURATION_BUCKETS: [f64; 11] =
    [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Frames a call counts before it adds them to the registry: about five seconds of audio
/// each way, so the totals stay current during long calls at a cost of one atomic add per
/// 250 frames.
pub const FRAME_FLUSH_EVERY: u64 = 250;

/// How a call ended, as the `outcome` label of `gemini_phone_calls_total`: a short, fixed
/// list (the full reason is in the call's record and log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// The caller (or the provider) hung up.
    CallerHungUp,
    /// The agent ended the call with `end_call`.
    AgentHungUp,
    /// The agent transferred the call.
    Transferred,
    /// Gemini failed and the caller heard the fallback message.
    FellBack,
    /// Gemini failed and there was no fallback message.
    GeminiFailed,
    /// The phone stream failed, went silent or flooded us.
    PhoneFailed,
    /// `MAX_CALL_SECONDS` was reached.
    MaxDuration,
    /// The stream was not opened by our answer webhook (or never sent `start`).
    Refused,
    /// Every call slot was taken.
    OverCapacity,
    /// The server shut down during the call.
    Shutdown,
    /// The line stayed silent (`IDLE_HANGUP_SECONDS`) and the agent hung up.
    Idle,
}

impl CallOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::CallerHungUp => "caller_hung_up",
            CallOutcome::AgentHungUp => "agent_hung_up",
            CallOutcome::Transferred => "transferred",
            CallOutcome::FellBack => "fell_back",
            CallOutcome::GeminiFailed => "gemini_failed",
            CallOutcome::PhoneFailed => "phone_failed",
            CallOutcome::MaxDuration => "max_duration",
            CallOutcome::Refused => "refused",
            CallOutcome::OverCapacity => "over_capacity",
            CallOutcome::Shutdown => "shutdown",
            CallOutcome::Idle => "idle",
        }
    }
}

impl From<&EndReason> for CallOutcome {
    fn from(reason: &EndReason) -> Self {
        match reason {
            EndReason::CallerHungUp => CallOutcome::CallerHungUp,
            // Leaving a voicemail is the agent ending the call after its last words.
            EndReason::AgentHungUp | EndReason::VoicemailLeft => CallOutcome::AgentHungUp,
            EndReason::Transferred(_) => CallOutcome::Transferred,
            EndReason::FellBack { .. } => CallOutcome::FellBack,
            EndReason::GeminiUnavailable(_)
            | EndReason::GeminiClosed { .. }
            | EndReason::GeminiStalled => CallOutcome::GeminiFailed,
            EndReason::PhoneError(_) | EndReason::PhoneSilent | EndReason::AudioFlood => {
                CallOutcome::PhoneFailed
            }
            EndReason::MaxDuration => CallOutcome::MaxDuration,
            EndReason::NoStart | EndReason::Unauthorized(_) => CallOutcome::Refused,
            EndReason::OverCapacity => CallOutcome::OverCapacity,
            EndReason::ServerShutdown => CallOutcome::Shutdown,
            EndReason::Idle => CallOutcome::Idle,
        }
    }
}

/// What became of one attempt to open a Gemini Live session (first or resumed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOutcome {
    /// The socket opened and `setupComplete` arrived.
    Opened,
    /// The handshake or setup failed or timed out.
    Failed,
}

/// Why a live Gemini session was closed and resumed with its handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeReason {
    /// Gemini announced it would close the connection (`goAway`).
    GoAway,
    /// The connection dropped or closed abnormally.
    ConnectionLost,
    /// The model went quiet when it owed the caller an answer.
    Stalled,
}

impl ResumeReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ResumeReason::GoAway => "go_away",
            ResumeReason::ConnectionLost => "connection_lost",
            ResumeReason::Stalled => "stalled",
        }
    }
}

/// What became of one tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolOutcome {
    /// The tool answered with a result.
    Ok,
    /// The tool answered with an error (failed, timed out, refused, unknown tool).
    Error,
    /// The model cancelled the call before it finished.
    Cancelled,
    /// The phone call ended before the tool finished.
    Abandoned,
}

impl ToolOutcome {
    /// The label value (`ok`, `error`, `cancelled`, `abandoned`), also used in call timelines.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolOutcome::Ok => "ok",
            ToolOutcome::Error => "error",
            ToolOutcome::Cancelled => "cancelled",
            ToolOutcome::Abandoned => "abandoned",
        }
    }
}

/// Why a provider webhook was refused (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookRejection {
    /// The path names no provider.
    NoSuchProvider,
    /// The body is unreadable.
    BadBody,
    /// The signature is missing or wrong.
    BadSignature,
}

impl WebhookRejection {
    fn as_str(self) -> &'static str {
        match self {
            WebhookRejection::NoSuchProvider => "no_such_provider",
            WebhookRejection::BadBody => "bad_body",
            WebhookRejection::BadSignature => "bad_signature",
        }
    }
}

/// Messages one call moved since it last reported them, counted in plain integers on the
/// call's own task (no atomics, no locks per frame).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FrameCounts {
    /// WebSocket messages received from the phone.
    pub from_phone: u64,
    /// WebSocket messages sent to the phone.
    pub to_phone: u64,
    /// WebSocket messages received from Gemini.
    pub from_gemini: u64,
    /// WebSocket messages sent to Gemini.
    pub to_gemini: u64,
}

impl FrameCounts {
    /// All messages counted, every direction together.
    pub fn total(&self) -> u64 {
        self.from_phone + self.to_phone + self.from_gemini + self.to_gemini
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallLabels {
    provider: &'static str,
    direction: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ToolLabels {
    tool: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ToolLabel {
    tool: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WebhookLabels {
    provider: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

/// The frame counters, one handle per direction, made once so adding to them is a plain
/// atomic add.
#[derive(Debug)]
struct FrameCounters {
    from_phone: Counter,
    to_phone: Counter,
    from_gemini: Counter,
    to_gemini: Counter,
}

/// The registry and a handle on every metric in it.
pub struct Metrics {
    registry: Registry,
    calls_active: Gauge,
    calls: Family<CallLabels, Counter>,
    call_duration: Histogram,
    response_latency: Histogram,
    greeting_latency: Histogram,
    gemini_sessions: Family<OutcomeLabel, Counter>,
    gemini_resumptions: Family<ReasonLabel, Counter>,
    tool_calls: Family<ToolLabels, Counter>,
    tool_duration: HistogramFamily<ToolLabel>,
    webhooks_rejected: Family<WebhookLabels, Counter>,
    frames: FrameCounters,
    record_queue_depth: Gauge,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered (at zero) and the process collector.
    pub fn new() -> Self {
        let mut root = Registry::default();
        // Prometheus' standard names (`process_…`) carry no application prefix.
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix(PREFIX);
        let calls_active = Gauge::default();
        registry.register(
            "calls_active",
            "Calls bridged right now",
            calls_active.clone(),
        );
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "calls",
            "Media streams that ended, by provider, call direction (unknown for streams refused before they proved themselves) and outcome",
            calls.clone(),
        );
        let call_duration = Histogram::new(CALL_DURATION_BUCKETS);
        registry.register_with_unit(
            "call_duration",
            "How long admitted calls lasted, from stream start to end",
            Unit::Seconds,
            call_duration.clone(),
        );
        let response_latency = Histogram::new(LATENCY_BUCKETS);
        registry.register_with_unit(
            "response_latency",
            "Per turn: the caller stopped speaking to the first frame of the agent's reply sent to the phone",
            Unit::Seconds,
            response_latency.clone(),
        );
        let greeting_latency = Histogram::new(LATENCY_BUCKETS);
        registry.register_with_unit(
            "greeting_latency",
            "Per call: the stream's start to the first agent audio frame sent to the phone",
            Unit::Seconds,
            greeting_latency.clone(),
        );
        let gemini_sessions = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "gemini_sessions",
            "Attempts to open a Gemini Live session (first or resumed), by outcome (opened, failed)",
            gemini_sessions.clone(),
        );
        let gemini_resumptions = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "gemini_resumptions",
            "Live Gemini sessions closed and resumed with their handle, by reason (go_away, connection_lost, stalled)",
            gemini_resumptions.clone(),
        );
        let tool_calls = Family::<ToolLabels, Counter>::default();
        registry.register(
            "tool_calls",
            "Tool calls the model made, by tool and outcome (ok, error, cancelled, abandoned)",
            tool_calls.clone(),
        );
        let tool_duration: HistogramFamily<ToolLabel> =
            Family::new_with_constructor(|| Histogram::new(TOOL_DURATION_BUCKETS));
        registry.register_with_unit(
            "tool_duration",
            "How long tool calls took to answer, by tool",
            Unit::Seconds,
            tool_duration.clone(),
        );
        let webhooks_rejected = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhooks_rejected",
            "Provider webhooks refused before they were acted on, by provider and reason",
            webhooks_rejected.clone(),
        );
        let frame_family = Family::<DirectionLabel, Counter>::default();
        let frame = |direction| frame_family.get_or_create_owned(&DirectionLabel { direction });
        let frames = FrameCounters {
            from_phone: frame("from_phone"),
            to_phone: frame("to_phone"),
            from_gemini: frame("from_gemini"),
            to_gemini: frame("to_gemini"),
        };
        registry.register(
            "frames",
            "WebSocket messages moved by calls, by direction (from_phone, to_phone, from_gemini, to_gemini); added every few seconds of a call and at its end",
            frame_family,
        );
        let record_queue_depth = Gauge::default();
        registry.register(
            "record_queue_depth",
            "Call-record updates waiting for the database writer",
            record_queue_depth.clone(),
        );
        Self {
            registry: root,
            calls_active,
            calls,
            call_duration,
            response_latency,
            greeting_latency,
            gemini_sessions,
            gemini_resumptions,
            tool_calls,
            tool_duration,
            webhooks_rejected,
            frames,
            record_queue_depth,
        }
    }

    /// A media stream ended: `direction` is `inbound`, `outbound` or anything else (counted
    /// as `unknown`); `duration` is the admitted call's length (`None` for a stream that was
    /// refused before it became a call).
    pub fn call_ended(
        &self,
        provider: &'static str,
        direction: &str,
        outcome: CallOutcome,
        duration: Option<Duration>,
    ) {
        let direction = match direction {
            "inbound" => "inbound",
            "outbound" => "outbound",
            _ => "unknown",
        };
        self.calls
            .get_or_create(&CallLabels {
                provider,
                direction,
                outcome: outcome.as_str(),
            })
            .inc();
        if let Some(duration) = duration {
            self.call_duration.observe(duration.as_secs_f64());
        }
    }

    /// One turn's response latency: the caller stopped speaking → first reply frame sent.
    pub fn observe_response_latency(&self, latency: Duration) {
        self.response_latency.observe(latency.as_secs_f64());
    }

    /// One call's greeting latency: stream start → first agent frame sent.
    pub fn observe_greeting_latency(&self, latency: Duration) {
        self.greeting_latency.observe(latency.as_secs_f64());
    }

    /// An attempt to open a Gemini session finished.
    pub fn gemini_session(&self, outcome: SessionOutcome) {
        let outcome = match outcome {
            SessionOutcome::Opened => "opened",
            SessionOutcome::Failed => "failed",
        };
        self.gemini_sessions
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// `count` live sessions were resumed for `reason`.
    pub fn gemini_resumed(&self, reason: ResumeReason, count: u64) {
        if count > 0 {
            self.gemini_resumptions
                .get_or_create(&ReasonLabel {
                    reason: reason.as_str(),
                })
                .inc_by(count);
        }
    }

    /// A tool call finished (`duration`: from the model's request to the answer). `tool`
    /// must be a configured tool's name or `unknown`, never the model's raw text, so the
    /// label's values stay few.
    pub fn tool_call(&self, tool: &str, outcome: ToolOutcome, duration: Duration) {
        self.tool_calls
            .get_or_create(&ToolLabels {
                tool: tool.to_owned(),
                outcome: outcome.as_str(),
            })
            .inc();
        self.tool_duration
            .get_or_create(&ToolLabel {
                tool: tool.to_owned(),
            })
            .observe(duration.as_secs_f64());
    }

    /// A provider webhook was refused; `provider` is `unknown` when the path named none.
    pub fn webhook_rejected(&self, provider: &'static str, reason: WebhookRejection) {
        self.webhooks_rejected
            .get_or_create(&WebhookLabels {
                provider,
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Adds a call's frame counts (and leaves them at zero for the next batch).
    pub fn add_frames(&self, counts: &mut FrameCounts) {
        let counts = std::mem::take(counts);
        self.frames.from_phone.inc_by(counts.from_phone);
        self.frames.to_phone.inc_by(counts.to_phone);
        self.frames.from_gemini.inc_by(counts.from_gemini);
        self.frames.to_gemini.inc_by(counts.to_gemini);
    }

    /// Sets the values read at scrape time: calls live now and the record writer's backlog.
    pub fn sample(&self, calls_active: usize, record_queue_depth: usize) {
        self.calls_active.set(saturating_i64(calls_active));
        self.record_queue_depth
            .set(saturating_i64(record_queue_depth));
    }

    /// Every metric in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

fn saturating_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Prometheus' standard process metrics (CPU seconds, resident and virtual memory, open and
/// maximum file descriptors, threads, start time), read from `/proc` on each scrape by the
/// `metrics-process` crate's collector. A value the platform cannot give is left out.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let process = metrics_process::collector::collect();
        if let Some(seconds) = process.cpu_seconds_total {
            let counter = ConstCounter::new(seconds);
            let metric = encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent",
                Some(&Unit::Seconds),
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        let gauges: [(&str, &str, Option<Unit>, Option<u64>); 6] = [
            (
                "process_resident_memory",
                "Resident memory size",
                Some(Unit::Bytes),
                process.resident_memory_bytes,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size",
                Some(Unit::Bytes),
                process.virtual_memory_bytes,
            ),
            (
                "process_open_fds",
                "Open file descriptors",
                None,
                process.open_fds,
            ),
            (
                "process_max_fds",
                "Most file descriptors the process may open (0: unlimited)",
                None,
                process.max_fds,
            ),
            ("process_threads", "OS threads", None, process.threads),
            (
                "process_start_time",
                "Start time of the process since the Unix epoch",
                Some(Unit::Seconds),
                process.start_time_seconds,
            ),
        ];
        for (name, help, unit, value) in gauges {
            let Some(value) = value else { continue };
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            let metric =
                encoder.encode_descriptor(name, help, unit.as_ref(), gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

//! The Tokio task that runs one call. It only moves bytes and timers: frames between the
//! phone socket, the Gemini socket and the [`CallMachine`]; the machine's timer; finished
//! [`jobs`](super::jobs) and the shutdown signal as inputs. Everything else — records, REST,
//! tools — runs as a job whose result comes back as an input, so a slow database or
//! provider never stops the audio.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as PhoneMessage, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, Stream, StreamExt};
use serde_json::json;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as GeminiMessage;
use tracing::Instrument;

mod actions;
mod observe;
mod turns;

use super::jobs::{self, AdmittedCall, JobDone, Jobs, TransferFor};
use super::machine::{CallMachine, EndReason, Mode, Output};
use super::prewarm::WarmSession;
use crate::admission::LiveCall;
use crate::app::App;
use crate::calls::CallStatus;
use crate::config::AgentKind;
use crate::gemini::{self, ConnectError, GeminiSocket};
use crate::metrics::{
    CallOutcome, FRAME_FLUSH_EVERY, FrameCounts, ResumeReason, SessionOutcome, ToolOutcome,
};
use crate::telephony::{MediaStream, Provider};
use crate::tools::CallerInfo;

type PhoneSink = SplitSink<WebSocket, PhoneMessage>;
type GeminiSink = SplitSink<GeminiSocket, GeminiMessage>;
type GeminiStream = SplitStream<GeminiSocket>;
/// An opening session: the socket and when its handshake finished, once setup is complete.
type Connecting = Pin<Box<dyn Future<Output = Result<Connected, ConnectError>> + Send>>;
type Connected = (GeminiSocket, std::time::Instant);

/// How long closing a socket may take before we simply drop it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs one call to its end. Everything it opens is closed or dropped before it returns.
pub async fn run_call(socket: WebSocket, provider: &'static dyn Provider, app: Arc<App>) {
    run_stream(socket, provider, provider.media_stream(), app).await;
}

/// [`run_call`] with the stream's codec given: one that already knows what its `start` stands
/// for (a browser call's URL token, [`crate::telephony::web::WebStream::for_call`]).
pub async fn run_stream(
    socket: WebSocket,
    provider: &'static dyn Provider,
    stream: Box<dyn MediaStream>,
    app: Arc<App>,
) {
    let span = tracing::info_span!(
        "call",
        provider = provider.name(),
        call_id = tracing::field::Empty
    );
    CallTask::new(socket, provider, stream, app)
        .run()
        .instrument(span)
        .await;
}

/// What is known about the call once its stream proved itself.
struct Admitted {
    /// Holds the call's admission slot until the task ends.
    _live: LiveCall,
    record: Option<String>,
    caller: CallerInfo,
    provider_call_id: String,
    started_at: Instant,
}

struct CallTask {
    app: Arc<App>,
    provider: &'static dyn Provider,
    machine: CallMachine,
    phone_tx: PhoneSink,
    phone_rx: SplitStream<WebSocket>,
    /// False once the phone socket closed or a write to it failed: nothing more is sent.
    phone_writable: bool,
    gemini_tx: Option<GeminiSink>,
    gemini_rx: Option<GeminiStream>,
    connecting: Option<Connecting>,
    /// The session opened at the answer webhook, until the first connection takes it.
    warm_session: Option<WarmSession>,
    jobs: Jobs,
    call: Option<Admitted>,
    /// Messages moved since they were last added to the metrics (plain integers: the
    /// per-frame cost of metrics is one increment).
    frames: FrameCounts,
    /// When the stream started, until the agent's first audio reaches the phone.
    greeting_from: Option<Instant>,
    /// Tool calls not yet answered: the model's id → the tool's metric label and start.
    tools_in_flight: HashMap<String, (String, Instant)>,
}

impl CallTask {
    fn new(
        socket: WebSocket,
        provider: &'static dyn Provider,
        stream: Box<dyn MediaStream>,
        app: Arc<App>,
    ) -> Self {
        let mode = match app.config.agent {
            AgentKind::Gemini => Mode::Gemini,
            AgentKind::Echo => Mode::Echo,
        };
        let now = Instant::now().into_std();
        let mut machine = CallMachine::new(mode, stream, now);
        machine.set_call_deadline(now + app.config.max_call_duration);
        machine.set_stall_timeout(app.config.limits.gemini_stall);
        machine.set_fallback_clip(app.fallback_clip.share());
        let conversation = &app.config.conversation;
        machine.set_conversation(conversation.dtmf, Some(conversation.idle));
        machine.set_playout_lead(conversation.playout_lead);
        let (phone_tx, phone_rx) = socket.split();
        Self {
            app,
            provider,
            machine,
            phone_tx,
            phone_rx,
            phone_writable: true,
            gemini_tx: None,
            gemini_rx: None,
            connecting: None,
            warm_session: None,
            jobs: Jobs::default(),
            call: None,
            frames: FrameCounts::default(),
            greeting_from: None,
            tools_in_flight: HashMap::new(),
        }
    }

    async fn run(mut self) {
        let shutdown = self.app.shutdown.signal();
        tokio::pin!(shutdown);
        let mut shutdown_heard = false;
        let reason = loop {
            if let Some(reason) = self.carry_out().await {
                break reason;
            }
            if self.frames.total() >= FRAME_FLUSH_EVERY {
                self.app.metrics.add_frames(&mut self.frames);
            }
            let deadline = self.machine.poll_timeout().map(Instant::from_std);
            tokio::select! {
                frame = self.phone_rx.next() => self.on_phone_frame(frame),
                frame = next_or_pending(&mut self.gemini_rx) => self.on_gemini_frame(frame),
                result = connect_or_pending(&mut self.connecting) => {
                    self.connecting = None;
                    self.on_connected(result);
                },
                done = self.jobs.next() => self.on_job(done),
                () = &mut shutdown, if !shutdown_heard => {
                    shutdown_heard = true;
                    self.machine.handle_shutdown(Instant::now().into_std());
                },
                () = sleep_until_or_pending(deadline) => {
                    self.machine.handle_timeout(Instant::now().into_std());
                },
            }
        };
        self.shut_down(&reason).await;
    }

    fn on_phone_frame(&mut self, frame: Option<Result<PhoneMessage, axum::Error>>) {
        match frame {
            Some(Ok(PhoneMessage::Text(text))) => {
                self.frames.from_phone += 1;
                self.machine
                    .handle_phone_text(&text, Instant::now().into_std())
            }
            Some(Ok(PhoneMessage::Binary(_))) => self.machine.handle_phone_binary(),
            Some(Ok(PhoneMessage::Close(_))) | None => {
                self.phone_writable = false;
                self.machine.handle_phone_closed(None);
            }
            Some(Ok(_)) => {}
            // A protocol error (an oversized message, say) leaves the socket writable, so
            // the provider still gets a close frame saying why.
            Some(Err(e)) => self.machine.handle_phone_closed(Some(e.to_string())),
        }
    }

    fn on_gemini_frame(
        &mut self,
        frame: Option<Result<GeminiMessage, tokio_tungstenite::tungstenite::Error>>,
    ) {
        let now = Instant::now().into_std();
        match frame {
            Some(Ok(GeminiMessage::Binary(bytes))) => {
                self.frames.from_gemini += 1;
                self.machine.handle_gemini_frame(&bytes, now)
            }
            Some(Ok(GeminiMessage::Text(text))) => {
                self.frames.from_gemini += 1;
                self.machine.handle_gemini_frame(text.as_bytes(), now)
            }
            Some(Ok(GeminiMessage::Close(close))) => {
                let (code, reason) = crate::gemini::client::close_status(close);
                self.drop_gemini();
                self.machine.handle_gemini_closed(code, reason, now);
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                self.drop_gemini();
                self.machine.handle_gemini_closed(1006, e.to_string(), now);
            }
            None => {
                self.drop_gemini();
                self.machine
                    .handle_gemini_closed(1006, "connection ended".into(), now);
            }
        }
        self.report_response_latency();
    }

    fn on_connected(&mut self, result: Result<Connected, ConnectError>) {
        let now = Instant::now().into_std();
        match result {
            Ok((socket, handshake_done)) => {
                self.machine.timeline_mut().gemini_connected(handshake_done);
                let (tx, rx) = socket.split();
                self.gemini_tx = Some(tx);
                self.gemini_rx = Some(rx);
                tracing::info!("Gemini session open");
                self.app.metrics.gemini_session(SessionOutcome::Opened);
                self.machine.handle_gemini_ready(now);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not open a Gemini session");
                self.app.metrics.gemini_session(SessionOutcome::Failed);
                self.machine.handle_gemini_failed(e.to_string(), now);
            }
        }
    }

    fn on_job(&mut self, done: JobDone) {
        let now = Instant::now().into_std();
        match done {
            JobDone::Started(Ok(call)) => self.on_admitted(*call),
            JobDone::Started(Err(reason)) => {
                tracing::warn!(%reason, "refusing the media stream");
                self.machine.finish(reason);
            }
            JobDone::Tool { id, name, response } => {
                self.answer_tool(&id, &name, &response, None, now);
            }
            JobDone::HungUp { reason } => self.machine.finish(reason),
            JobDone::MachineAnswered(answered) => self.machine_answered(answered),
            JobDone::Transferred {
                to,
                purpose,
                result: Ok(()),
            } => {
                tracing::info!(%to, "call transferred");
                if let TransferFor::Tool(id) = &purpose {
                    self.tool_finished(id, ToolOutcome::Ok);
                }
                self.machine.finish(match purpose {
                    TransferFor::Tool(_) => EndReason::Transferred(to),
                    TransferFor::Fallback(cause) => EndReason::FellBack {
                        cause: Box::new(cause),
                        transferred_to: Some(to),
                    },
                });
            }
            JobDone::Transferred {
                purpose: TransferFor::Tool(tool_call),
                result: Err(why),
                ..
            } => {
                tracing::warn!(%why, "transfer failed");
                let error = json!({"error": format!("the transfer failed: {why}")});
                self.answer_tool(&tool_call, "transfer_call", &error, None, now);
            }
            JobDone::Transferred {
                purpose: TransferFor::Fallback(cause),
                result: Err(why),
                ..
            } => {
                tracing::warn!(%why, "transfer after the fallback message failed; hanging up");
                let reason = EndReason::FellBack {
                    cause: Box::new(cause),
                    transferred_to: None,
                };
                self.hang_up_then(reason);
            }
        }
    }

    fn on_admitted(&mut self, call: AdmittedCall) {
        tracing::info!(
            record = call.record.as_deref().unwrap_or(""),
            from = %call.caller.from,
            to = %call.caller.to,
            "call started"
        );
        self.start_turns(&call.caller.direction, call.voicemail);
        // Before the setup: the connection it asks for takes the pre-warmed session.
        self.warm_session = call.warm_session;
        if let Some(setup) = call.setup {
            self.machine.handle_session_setup(setup);
        }
        let recording = self
            .app
            .recordings
            .record_call(call.record.as_deref(), &self.app.store);
        if let Some(tap) = recording {
            self.machine.set_audio_tap(Box::new(tap));
        }
        self.call = Some(Admitted {
            _live: call.live,
            record: call.record,
            caller: call.caller,
            provider_call_id: call.provider_call_id,
            started_at: Instant::now(),
        });
    }

    /// Carries out every queued command; returns the end reason once the call is over.
    async fn carry_out(&mut self) -> Option<EndReason> {
        let mut phone_dirty = false;
        let mut gemini_dirty = false;
        let mut ended = None;
        while let Some(output) = self.machine.poll_output() {
            match output {
                Output::Phone(text) => {
                    if self.phone_writable {
                        let sent = self.write_phone(PhoneMessage::Text(text.into())).await;
                        phone_dirty |= sent;
                        if sent {
                            self.frames.to_phone += 1;
                            self.note_greeting();
                        }
                    }
                }
                Output::Gemini(text) => {
                    if self.gemini_tx.is_some() {
                        let sent = self.write_gemini(Some(GeminiMessage::text(text))).await;
                        gemini_dirty |= sent;
                        self.frames.to_gemini += u64::from(sent);
                    }
                }
                Output::Started(start) => {
                    tracing::Span::current().record("call_id", start.call_id.as_str());
                    self.greeting_from = Some(Instant::now());
                    self.jobs
                        .spawn(jobs::admit_stream(Arc::clone(&self.app), start));
                }
                Output::ConnectGemini(setup) => {
                    if let Some(config) = self.app.config.gemini.clone() {
                        let warm = self.warm_session.take();
                        self.connecting = Some(Box::pin(async move {
                            match warm {
                                Some(warm) => warm.connect(&config, &setup).await,
                                None => gemini::client::connect_timed(&config, &setup).await,
                            }
                        }));
                    }
                }
                Output::CloseGemini => self.close_gemini().await,
                Output::Transcript {
                    speaker,
                    text,
                    interrupted,
                } => {
                    let who = speaker.as_str();
                    tracing::info!(speaker = who, %text, interrupted, "transcript");
                    if let Some(id) = self.record() {
                        let recorder = &self.app.recorder;
                        match interrupted {
                            true => recorder.interrupted_transcript(id, who, &text),
                            false => recorder.transcript(id, who, &text),
                        }
                    }
                }
                Output::ToolCalls(calls) => {
                    for call in calls {
                        self.start_tool(call);
                    }
                }
                Output::CancelToolCalls(ids) => {
                    for id in ids {
                        if self.jobs.cancel_tool(&id) {
                            tracing::info!(%id, "tool call cancelled");
                        }
                        self.tool_finished(&id, ToolOutcome::Cancelled);
                    }
                }
                Output::PlayedOut(action) => self.after_playout(action),
                Output::End(reason) => ended = Some(reason),
            }
        }
        if phone_dirty && self.phone_writable {
            self.flush_phone().await;
        }
        if gemini_dirty {
            self.write_gemini(None).await;
        }
        ended
    }

    /// Sends one phone message within the write deadline; a peer that does not drain in
    /// time ends the call. Returns whether the message was queued.
    async fn write_phone(&mut self, message: PhoneMessage) -> bool {
        let limit = self.app.config.limits.stream_write_timeout;
        match with_deadline(limit, self.phone_tx.feed(message)).await {
            Ok(()) => true,
            Err(why) => {
                self.phone_writable = false;
                self.machine
                    .handle_phone_closed(Some(format!("writing to the phone: {why}")));
                false
            }
        }
    }

    async fn flush_phone(&mut self) {
        let limit = self.app.config.limits.stream_write_timeout;
        if let Err(why) = with_deadline(limit, self.phone_tx.flush()).await {
            self.phone_writable = false;
            self.machine
                .handle_phone_closed(Some(format!("writing to the phone: {why}")));
        }
    }

    /// Sends one Gemini message (or flushes, with `None`) within the write deadline; a
    /// Gemini that does not drain in time counts as a dropped connection (and is resumed).
    async fn write_gemini(&mut self, message: Option<GeminiMessage>) -> bool {
        let limit = self.app.config.limits.stream_write_timeout;
        let Some(tx) = &mut self.gemini_tx else {
            return false;
        };
        let written = match message {
            Some(message) => with_deadline(limit, tx.feed(message)).await,
            None => with_deadline(limit, tx.flush()).await,
        };
        match written {
            Ok(()) => true,
            Err(why) => {
                self.drop_gemini();
                self.machine.handle_gemini_closed(
                    1006,
                    format!("writing to Gemini: {why}"),
                    Instant::now().into_std(),
                );
                false
            }
        }
    }

    fn record(&self) -> Option<&str> {
        self.call.as_ref().and_then(|c| c.record.as_deref())
    }

    fn provider_call_id(&self) -> String {
        self.call
            .as_ref()
            .map(|c| c.provider_call_id.clone())
            .unwrap_or_default()
    }

    /// The first agent audio reached the phone: the caller has been greeted.
    fn note_greeting(&mut self) {
        if let Some(started) = self.greeting_from
            && self.machine.agent_has_spoken()
        {
            self.greeting_from = None;
            self.app.metrics.observe_greeting_latency(started.elapsed());
        }
    }

    /// Adds what the call did to the metrics: its outcome and length, the frames and
    /// resumptions it counted, and tool calls it left unanswered.
    fn report_metrics(&mut self, reason: &EndReason) {
        let metrics = &self.app.metrics;
        metrics.add_frames(&mut self.frames);
        let resumed = self.machine.resumptions();
        metrics.gemini_resumed(ResumeReason::GoAway, resumed.go_away.into());
        metrics.gemini_resumed(ResumeReason::ConnectionLost, resumed.connection_lost.into());
        metrics.gemini_resumed(ResumeReason::Stalled, resumed.stalled.into());
        for (_, (tool, started)) in self.tools_in_flight.drain() {
            metrics.tool_call(&tool, ToolOutcome::Abandoned, started.elapsed());
        }
        let (direction, duration) = match &self.call {
            Some(call) => (
                call.caller.direction.as_str(),
                Some(call.started_at.elapsed()),
            ),
            None => ("unknown", None),
        };
        metrics.call_ended(
            self.provider.name(),
            direction,
            CallOutcome::from(reason),
            duration,
        );
    }

    async fn close_gemini(&mut self) {
        if let Some(mut tx) = self.gemini_tx.take() {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, tx.close()).await;
        }
        self.gemini_rx = None;
    }

    fn drop_gemini(&mut self) {
        self.gemini_tx = None;
        self.gemini_rx = None;
    }

    async fn shut_down(mut self, reason: &EndReason) {
        tracing::info!(%reason, dropped_caller_frames = self.machine.dropped_caller_frames(), "call ended");
        self.report_metrics(reason);
        self.hand_over_timeline(reason);
        if let Some(call) = &self.call
            && let Some(id) = &call.record
        {
            let seconds = call.started_at.elapsed().as_secs() as i64;
            self.app
                .recorder
                .finish(id, Some(seconds), reason.to_string());
            self.app.recorder.status(id, CallStatus::Completed);
        }
        self.connecting = None;
        self.close_gemini().await;
        if self.phone_writable {
            let close = PhoneMessage::Close(Some(CloseFrame {
                code: reason.close_code(),
                reason: truncate(&reason.to_string(), 120).into(),
            }));
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                let _ = self.phone_tx.send(close).await;
                let _ = self.phone_tx.close().await;
            })
            .await;
        }
    }
}

/// Runs a socket write, failing when it takes longer than `limit` or errs.
async fn with_deadline<E: std::fmt::Display>(
    limit: Duration,
    write: impl Future<Output = Result<(), E>>,
) -> Result<(), String> {
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "the peer stopped reading for {} ms",
            limit.as_millis()
        )),
    }
}

/// A close reason must fit in a control frame (125 bytes).
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

async fn next_or_pending<S: Stream + Unpin>(stream: &mut Option<S>) -> Option<S::Item> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

async fn connect_or_pending(
    connecting: &mut Option<Connecting>,
) -> Result<Connected, ConnectError> {
    match connecting {
        Some(future) => future.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_or_pending(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

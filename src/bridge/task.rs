//! The Tokio task that runs one call: it pumps the phone socket, the Gemini socket and the
//! machine's timer into a [`CallMachine`], and carries out what the machine asks for.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as PhoneMessage, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, Stream, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as GeminiMessage;
use tracing::Instrument;

use super::machine::{CallMachine, EndReason, Mode, Output};
use crate::calls::CallStatus;
use crate::config::AgentKind;
use crate::gemini::protocol::tool_response_message;
use crate::gemini::{self, ConnectError, GeminiSocket, SessionSetup};
use crate::server::App;
use crate::telephony::{Direction, Provider, RECORD_PARAM, StreamStart};

type PhoneSink = SplitSink<WebSocket, PhoneMessage>;
type GeminiSink = SplitSink<GeminiSocket, GeminiMessage>;
type GeminiStream = SplitStream<GeminiSocket>;
type Connecting = Pin<Box<dyn Future<Output = Result<GeminiSocket, ConnectError>> + Send>>;

/// How long closing a socket may take before we simply drop it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs one call to its end. Everything it opens is closed or dropped before it returns.
pub async fn run_call(socket: WebSocket, provider: &'static dyn Provider, app: Arc<App>) {
    let counted = Arc::clone(&app);
    let _active = counted.active_calls.enter();
    let span = tracing::info_span!(
        "call",
        provider = provider.name(),
        call_id = tracing::field::Empty
    );
    CallTask::new(socket, provider, app)
        .run()
        .instrument(span)
        .await;
}

struct CallTask {
    app: Arc<App>,
    machine: CallMachine,
    phone_tx: PhoneSink,
    phone_rx: SplitStream<WebSocket>,
    gemini_tx: Option<GeminiSink>,
    gemini_rx: Option<GeminiStream>,
    connecting: Option<Connecting>,
    phone_open: bool,
    /// Our call record, once the stream's parameters name it.
    record_id: Option<String>,
    started_at: Option<Instant>,
}

impl CallTask {
    fn new(socket: WebSocket, provider: &'static dyn Provider, app: Arc<App>) -> Self {
        let mode = match app.config.agent {
            AgentKind::Gemini => Mode::Gemini,
            AgentKind::Echo => Mode::Echo,
        };
        let now = Instant::now().into_std();
        let mut machine = CallMachine::new(mode, provider.media_stream(), now);
        machine.set_call_deadline(now + app.config.max_call_duration);
        let (phone_tx, phone_rx) = socket.split();
        Self {
            app,
            machine,
            phone_tx,
            phone_rx,
            gemini_tx: None,
            gemini_rx: None,
            connecting: None,
            phone_open: true,
            record_id: None,
            started_at: None,
        }
    }

    async fn run(mut self) {
        let reason = loop {
            if let Some(reason) = self.carry_out().await {
                break reason;
            }
            let deadline = self.machine.poll_timeout().map(Instant::from_std);
            tokio::select! {
                frame = self.phone_rx.next() => match frame {
                    Some(Ok(PhoneMessage::Text(text))) => self.machine.handle_phone_text(&text),
                    Some(Ok(PhoneMessage::Binary(_))) => self.machine.handle_phone_binary(),
                    Some(Ok(PhoneMessage::Close(_))) | None => {
                        self.phone_open = false;
                        self.machine.phone_closed(None);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        self.phone_open = false;
                        self.machine.phone_closed(Some(e.to_string()));
                    }
                },
                frame = next_or_pending(&mut self.gemini_rx) => match frame {
                    Some(Ok(GeminiMessage::Binary(bytes))) => self.machine.handle_gemini_frame(&bytes),
                    Some(Ok(GeminiMessage::Text(text))) => self.machine.handle_gemini_frame(text.as_bytes()),
                    Some(Ok(GeminiMessage::Close(close))) => {
                        let (code, reason) = close
                            .map(|c| (u16::from(c.code), c.reason.to_string()))
                            .unwrap_or((1005, String::new()));
                        self.drop_gemini();
                        self.machine.gemini_closed(code, reason);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        self.drop_gemini();
                        self.machine.gemini_closed(1006, e.to_string());
                    }
                    None => {
                        self.drop_gemini();
                        self.machine.gemini_closed(1006, "connection ended".into());
                    }
                },
                result = connect_or_pending(&mut self.connecting) => {
                    self.connecting = None;
                    match result {
                        Ok(socket) => {
                            let (tx, rx) = socket.split();
                            self.gemini_tx = Some(tx);
                            self.gemini_rx = Some(rx);
                            tracing::info!("Gemini session open");
                            self.machine.gemini_ready();
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "could not open a Gemini session");
                            self.machine.gemini_failed(e.to_string());
                        }
                    }
                },
                () = sleep_until_or_pending(deadline) => self.machine.handle_timeout(Instant::now().into_std()),
            }
        };
        self.shut_down(&reason).await;
    }

    /// Carries out every queued command; returns the end reason once the call is over.
    async fn carry_out(&mut self) -> Option<EndReason> {
        let mut phone_dirty = false;
        let mut gemini_dirty = false;
        let mut ended = None;
        while let Some(output) = self.machine.poll_output() {
            match output {
                Output::Phone(text) => {
                    if self.phone_open {
                        if let Err(e) = self.phone_tx.feed(PhoneMessage::Text(text.into())).await {
                            self.phone_open = false;
                            self.machine.phone_closed(Some(e.to_string()));
                        }
                        phone_dirty = true;
                    }
                }
                Output::Gemini(text) => {
                    if let Some(tx) = &mut self.gemini_tx {
                        if let Err(e) = tx.feed(GeminiMessage::text(text)).await {
                            self.drop_gemini();
                            self.machine.gemini_closed(1006, e.to_string());
                        }
                        gemini_dirty = true;
                    }
                }
                Output::Started(start) => self.on_started(start).await,
                Output::ConnectGemini(setup) => {
                    if let Some(config) = self.app.config.gemini.clone() {
                        self.connecting =
                            Some(Box::pin(
                                async move { gemini::connect(&config, &setup).await },
                            ));
                    }
                }
                Output::CloseGemini => self.close_gemini().await,
                Output::Transcript(speaker, text) => {
                    tracing::info!(speaker = speaker.as_str(), %text, "transcript");
                    if let Some(id) = &self.record_id {
                        self.app.recorder.transcript(id, speaker.as_str(), &text);
                    }
                }
                Output::ToolCalls(calls) => {
                    for call in calls {
                        tracing::warn!(name = %call.name, "model called a tool that is not offered");
                        let response = serde_json::json!({
                            "error": format!("no tool named `{}` is available on this call", call.name)
                        });
                        self.machine
                            .send_to_gemini(tool_response_message(&call.id, &call.name, &response));
                    }
                }
                Output::CancelToolCalls(ids) => tracing::debug!(?ids, "tool calls cancelled"),
                Output::End(reason) => ended = Some(reason),
            }
        }
        if phone_dirty
            && self.phone_open
            && let Err(e) = self.phone_tx.flush().await
        {
            self.phone_open = false;
            tracing::debug!(error = %e, "phone socket flush failed");
        }
        if gemini_dirty
            && let Some(tx) = &mut self.gemini_tx
            && let Err(e) = tx.flush().await
        {
            tracing::debug!(error = %e, "Gemini socket flush failed");
        }
        ended
    }

    async fn on_started(&mut self, start: StreamStart) {
        tracing::Span::current().record("call_id", start.call_id.as_str());
        self.started_at = Some(Instant::now());
        self.record_id = start.params.get(RECORD_PARAM).cloned();
        tracing::info!(
            stream_id = %start.stream_id,
            record = self.record_id.as_deref().unwrap_or(""),
            from = start.params.get("from").map_or("", String::as_str),
            to = start.params.get("to").map_or("", String::as_str),
            "call started"
        );
        if let Some(config) = &self.app.config.gemini {
            let prompt = system_prompt(&Arc::clone(&self.app), self.record_id.clone()).await;
            self.machine.open_session(SessionSetup::new(config, prompt));
        }
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
        tracing::info!(%reason, "call ended");
        if let Some(id) = &self.record_id {
            let seconds = self.started_at.map(|t| t.elapsed().as_secs() as i64);
            self.app.recorder.finish(id, seconds, reason.to_string());
            self.app.recorder.status(id, CallStatus::Completed);
        }
        self.connecting = None;
        self.close_gemini().await;
        if self.phone_open {
            let close = PhoneMessage::Close(Some(CloseFrame {
                code: 1000,
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
) -> Result<GeminiSocket, ConnectError> {
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

/// The rendered prompt of an outbound call's record, or the inbound prompt.
async fn system_prompt(app: &App, record_id: Option<String>) -> String {
    let Some(id) = record_id else {
        return app.inbound_prompt.clone();
    };
    let record = match app.store.get(&id).await {
        Ok(Some(record)) => record,
        Ok(None) => {
            tracing::warn!(record = %id, "stream names an unknown call record; using the inbound prompt");
            return app.inbound_prompt.clone();
        }
        Err(error) => {
            tracing::error!(%error, "could not read the call record; using the inbound prompt");
            return app.inbound_prompt.clone();
        }
    };
    match (&record.direction, &record.prompt) {
        (Direction::Outbound, Some(name)) => match app.prompts.render(name, &record.vars) {
            Ok(prompt) => prompt,
            Err(error) => {
                tracing::error!(%error, "could not render the call's prompt; using the inbound prompt");
                app.inbound_prompt.clone()
            }
        },
        _ => app.inbound_prompt.clone(),
    }
}

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

use std::collections::HashMap;

use serde_json::{Value, json};
use tokio::task::{AbortHandle, JoinSet};

use super::machine::{AfterPlayout, CallMachine, EndReason, Mode, Output};
use crate::app::App;
use crate::calls::CallStatus;
use crate::config::AgentKind;
use crate::gemini::protocol::FunctionCall;
use crate::gemini::protocol::tool_response_message;
use crate::gemini::{self, ConnectError, GeminiSocket, SessionSetup};
use crate::telephony::{Direction, Provider, StreamStart};
use crate::tools::{Builtin, CallerInfo, Tool};

type PhoneSink = SplitSink<WebSocket, PhoneMessage>;
type GeminiSink = SplitSink<GeminiSocket, GeminiMessage>;
type GeminiStream = SplitStream<GeminiSocket>;
type Connecting = Pin<Box<dyn Future<Output = Result<GeminiSocket, ConnectError>> + Send>>;

/// How long closing a socket may take before we simply drop it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs one call to its end. Everything it opens is closed or dropped before it returns.
pub async fn run_call(socket: WebSocket, provider: &'static dyn Provider, app: Arc<App>) {
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
    /// The provider's id for the call, for REST hang-up and transfer.
    provider_call_id: Option<String>,
    provider: &'static dyn Provider,
    caller: CallerInfo,
    /// Tool calls in flight; aborted with the call, so none outlives it.
    tools: JoinSet<ToolResult>,
    tool_aborts: HashMap<String, AbortHandle>,
    /// The call's admission slot, held from a valid `start` to the end.
    live: Option<crate::admission::LiveCall>,
}

/// A finished tool call: (call id, tool name, response for the model).
type ToolResult = (String, String, Value);

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
            provider_call_id: None,
            provider,
            caller: CallerInfo::default(),
            tools: JoinSet::new(),
            tool_aborts: HashMap::new(),
            live: None,
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
                    Some(Ok(GeminiMessage::Binary(bytes))) => self.machine.handle_gemini_frame(&bytes, Instant::now().into_std()),
                    Some(Ok(GeminiMessage::Text(text))) => self.machine.handle_gemini_frame(text.as_bytes(), Instant::now().into_std()),
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
                Some(done) = self.tools.join_next(), if !self.tools.is_empty() => {
                    if let Ok((id, name, response)) = done {
                        self.tool_aborts.remove(&id);
                        self.answer_tool(&id, &name, &response, None);
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
                        self.start_tool(call);
                    }
                }
                Output::CancelToolCalls(ids) => {
                    for id in ids {
                        if let Some(handle) = self.tool_aborts.remove(&id) {
                            tracing::info!(%id, "tool call cancelled");
                            handle.abort();
                        }
                    }
                }
                Output::PlayedOut(action) => self.carry_out_after_playout(action).await,
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
        let now = crate::signature::unix_now();
        let claims = match self
            .app
            .stream_tokens
            .verify(&start.call_id, &start.params, now)
        {
            Ok(claims) => claims,
            Err(error) => {
                tracing::warn!(%error, "refusing a media stream");
                self.machine.finish(EndReason::Unauthorized);
                return;
            }
        };
        let record = claims.record.clone();
        let key = record.as_deref().unwrap_or(&start.call_id);
        match self
            .app
            .admission
            .admit(key, record.clone(), std::time::Instant::now())
        {
            Ok(live) => self.live = Some(live),
            Err(full) => {
                tracing::warn!(%full, "refusing a media stream: the server is at its call limit");
                self.machine.finish(EndReason::Unauthorized);
                return;
            }
        }
        self.started_at = Some(Instant::now());
        self.record_id = record;
        self.provider_call_id = Some(start.call_id.clone());
        self.caller = CallerInfo {
            from: claims.from,
            to: claims.to,
            direction: claims.direction.as_str().to_owned(),
        };
        tracing::info!(
            stream_id = %start.stream_id,
            record = self.record_id.as_deref().unwrap_or(""),
            from = start.params.get("from").map_or("", String::as_str),
            to = start.params.get("to").map_or("", String::as_str),
            "call started"
        );
        if let Some(config) = &self.app.config.gemini {
            let prompt = system_prompt(&Arc::clone(&self.app), self.record_id.clone()).await;
            let mut setup = SessionSetup::new(config, prompt);
            setup.function_declarations = self.app.tools.declarations();
            self.machine.open_session(setup);
        }
    }
    /// Starts one tool call: built-ins that change the call act through the machine; the
    /// others run concurrently and answer when done.
    fn start_tool(&mut self, call: FunctionCall) {
        tracing::info!(tool = %call.name, id = %call.id, args = %call.args, "tool called");
        if let Some(record) = &self.record_id {
            self.app.recorder.tool(
                record,
                &call.name,
                json!({"id": call.id, "args": call.args}),
            );
        }
        let now = Instant::now().into_std();
        let arg = |key: &str| {
            call.args
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        match self.app.tools.find(&call.name) {
            None => {
                tracing::warn!(tool = %call.name, "model called a tool that is not offered");
                let error = json!({"error": format!("no tool named `{}` is available on this call", call.name)});
                self.answer_tool(&call.id, &call.name, &error, None);
            }
            Some(Tool::Builtin(Builtin::EndCall)) => {
                let result =
                    json!({"result": "The call will end once your goodbye has been heard."});
                self.answer_tool(&call.id, &call.name, &result, Some("SILENT"));
                self.machine.after_playout(AfterPlayout::HangUp, now);
            }
            Some(Tool::Builtin(Builtin::TransferCall)) => {
                match self.app.tools.transfer_target(arg("number").as_deref()) {
                    Ok(to) => self.machine.after_playout(
                        AfterPlayout::Transfer {
                            to,
                            call_id: call.id,
                        },
                        now,
                    ),
                    Err(why) => {
                        self.answer_tool(&call.id, &call.name, &json!({"error": why}), None)
                    }
                }
            }
            Some(Tool::Builtin(Builtin::SendSms)) => {
                let control = self.app.providers.control(self.provider.name());
                let from = control
                    .as_ref()
                    .and_then(|c| c.default_from().map(str::to_owned));
                let target = self
                    .app
                    .tools
                    .sms_target(arg("to").as_deref(), &self.caller_number());
                let body = arg("body").unwrap_or_default();
                let (id, name) = (call.id.clone(), call.name.clone());
                let task = async move {
                    let response = match (control, from, target) {
                        (_, _, Err(why)) => json!({"error": why}),
                        (None, _, _) | (_, None, _) => {
                            json!({"error": "texting is not set up on this line"})
                        }
                        _ if body.trim().is_empty() => {
                            json!({"error": "the message body is empty"})
                        }
                        (Some(control), Some(from), Ok(to)) => match control
                            .send_sms(&from, &to, &body)
                            .await
                        {
                            Ok(message_id) => {
                                json!({"result": "sent", "to": to, "message_id": message_id})
                            }
                            Err(e) => json!({"error": format!("the text could not be sent: {e}")}),
                        },
                    };
                    (id, name, response)
                };
                let handle = self.tools.spawn(task);
                self.tool_aborts.insert(call.id, handle);
            }
            Some(Tool::Http(tool)) => {
                let http = self.app.http.clone();
                let call_id = self
                    .record_id
                    .clone()
                    .or_else(|| self.provider_call_id.clone())
                    .unwrap_or_default();
                let caller = self.caller.clone();
                let (id, name, args) = (call.id.clone(), call.name, call.args);
                let handle = self.tools.spawn(async move {
                    let response = tool.call(&http, &call_id, &args, &caller).await;
                    (id, name, response)
                });
                self.tool_aborts.insert(call.id, handle);
            }
        }
    }

    fn answer_tool(&mut self, id: &str, name: &str, response: &Value, scheduling: Option<&str>) {
        tracing::info!(tool = %name, %id, %response, "tool answered");
        if let Some(record) = &self.record_id {
            self.app
                .recorder
                .tool(record, name, json!({"id": id, "response": response}));
        }
        self.machine
            .send_to_gemini(tool_response_message(id, name, response, scheduling));
        self.machine.tool_answered(id);
    }

    /// The caller's own number in E.164 (the other party of an outbound call).
    fn caller_number(&self) -> String {
        let number = if self.caller.direction == "outbound" {
            &self.caller.to
        } else {
            &self.caller.from
        };
        match number.as_str() {
            "" => String::new(),
            n if n.starts_with('+') => n.to_owned(),
            n => format!("+{n}"),
        }
    }

    async fn carry_out_after_playout(&mut self, action: AfterPlayout) {
        let control = self.app.providers.control(self.provider.name());
        let call_id = self.provider_call_id.clone().unwrap_or_default();
        match action {
            AfterPlayout::HangUp => {
                // Closing the stream ends the call too; the REST hang-up makes it certain.
                if let Some(control) = control
                    && let Err(e) = control.hang_up(&call_id, true).await
                {
                    tracing::warn!(error = %e, "REST hang-up failed; closing the stream instead");
                }
                self.machine.finish(EndReason::AgentHungUp);
            }
            AfterPlayout::Transfer {
                to,
                call_id: tool_call,
            } => {
                let result = match control {
                    Some(control) => control
                        .transfer(&call_id, &to, &self.app.config.public_url)
                        .await
                        .map_err(|e| e.to_string()),
                    None => Err("transfers are not set up on this line".to_owned()),
                };
                match result {
                    Ok(()) => {
                        tracing::info!(%to, "call transferred");
                        self.machine.finish(EndReason::Transferred(to));
                    }
                    Err(why) => {
                        tracing::warn!(%why, "transfer failed");
                        let error = json!({"error": format!("the transfer failed: {why}")});
                        self.answer_tool(&tool_call, "transfer_call", &error, None);
                    }
                }
            }
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

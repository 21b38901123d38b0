//! What the agent does besides talking, as the call task carries it out: tool calls (the
//! built-ins act through the machine, the rest run as jobs), and the hang-ups and transfers
//! that follow the agent's last words or the fallback message.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::CallTask;
use crate::audio::dtmf;
use crate::bridge::jobs::{self, JobDone, TransferFor};
use crate::bridge::machine::{AfterPlayout, EndReason};
use crate::e164;
use crate::gemini::protocol::FunctionCall;
use crate::metrics::ToolOutcome;
use crate::tools::{Builtin, Tool};

impl CallTask {
    /// Starts one tool call: built-ins that change the call act through the machine; the
    /// others run as jobs and answer when done.
    pub(super) fn start_tool(&mut self, call: FunctionCall) {
        tracing::info!(tool = %call.name, id = %call.id, args = %call.args, "tool called");
        if let Some(record) = self.record() {
            self.app.recorder.tool(
                record,
                &call.name,
                json!({"id": call.id, "args": call.args}),
            );
        }
        // Only configured names become label values; the model's own text could be anything.
        let label = match self.app.tools.find(&call.name) {
            Some(_) => call.name.clone(),
            None => "unknown".to_owned(),
        };
        self.tools_in_flight
            .insert(call.id.clone(), (label, Instant::now()));
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
                self.answer_tool(&call.id, &call.name, &error, None, now);
            }
            Some(Tool::Builtin(Builtin::EndCall)) => {
                let result =
                    json!({"result": "The call will end once your goodbye has been heard."});
                self.answer_tool(&call.id, &call.name, &result, Some("SILENT"), now);
                self.machine.handle_after_playout(AfterPlayout::HangUp, now);
            }
            Some(Tool::Builtin(Builtin::TransferCall)) => {
                // A line that cannot transfer says so now, before the agent's goodbye plays.
                let target = match self.provider.transfer_refusal() {
                    Some(refusal) => Err(refusal.to_owned()),
                    None => self.app.tools.transfer_target(arg("number").as_deref()),
                };
                match target {
                    Ok(to) => self.machine.handle_after_playout(
                        AfterPlayout::Transfer {
                            to,
                            call_id: call.id,
                        },
                        now,
                    ),
                    Err(why) => {
                        self.answer_tool(&call.id, &call.name, &json!({"error": why}), None, now)
                    }
                }
            }
            Some(Tool::Builtin(Builtin::SendSms)) => {
                let target = self
                    .app
                    .tools
                    .sms_target(arg("to").as_deref(), &self.caller_number());
                let body = arg("body").unwrap_or_default();
                let job = jobs::send_sms(
                    Arc::clone(&self.app),
                    self.provider.name(),
                    target,
                    body,
                    call.id.clone(),
                    call.name,
                );
                self.jobs.spawn_tool(call.id, job);
            }
            Some(Tool::Builtin(Builtin::SendDtmf)) => {
                match dtmf::parse_keys(&arg("digits").unwrap_or_default()) {
                    Ok(keys) => {
                        self.machine.handle_send_dtmf(&dtmf::tones(&keys), now);
                        let pressed: String = keys.iter().collect();
                        let result = json!({"result": format!(
                            "pressed {pressed}; the tones take {:.1} s to play. Listen for what comes next.",
                            dtmf::duration(keys.len()).as_secs_f32()
                        )});
                        // SILENT: the menu speaks next; the model should listen, not talk
                        // over it (ignored by models that block on tools).
                        self.answer_tool(&call.id, &call.name, &result, Some("SILENT"), now);
                    }
                    Err(why) => {
                        let error = json!({"error": why.to_string()});
                        self.answer_tool(&call.id, &call.name, &error, None, now);
                    }
                }
            }
            Some(Tool::Http(tool)) => {
                let http = self.app.http.clone();
                let call_id = self
                    .record()
                    .map(str::to_owned)
                    .unwrap_or_else(|| self.provider_call_id());
                let caller = self
                    .call
                    .as_ref()
                    .map(|c| c.caller.clone())
                    .unwrap_or_default();
                let (id, name, args) = (call.id.clone(), call.name, call.args);
                self.jobs.spawn_tool(call.id, async move {
                    let response = tool.call(&http, &call_id, &args, &caller).await;
                    JobDone::Tool { id, name, response }
                });
            }
        }
    }

    pub(super) fn answer_tool(
        &mut self,
        id: &str,
        name: &str,
        response: &Value,
        scheduling: Option<&str>,
        now: std::time::Instant,
    ) {
        tracing::info!(tool = %name, %id, %response, "tool answered");
        let outcome = match response.get("error") {
            Some(_) => ToolOutcome::Error,
            None => ToolOutcome::Ok,
        };
        self.tool_finished(id, outcome);
        if let Some(record) = self.record() {
            self.app
                .recorder
                .tool(record, name, json!({"id": id, "response": response}));
        }
        self.machine
            .handle_tool_result(id, name, response, scheduling, now);
    }

    /// Counts the tool call `id` as finished (once: later reports of it are ignored).
    pub(super) fn tool_finished(&mut self, id: &str, outcome: ToolOutcome) {
        if let Some((tool, started)) = self.tools_in_flight.remove(id) {
            let (started, now) = (started.into_std(), Instant::now().into_std());
            let timeline = self.machine.timeline_mut();
            timeline.tool_call(&tool, outcome.as_str(), started, now);
            self.app
                .metrics
                .tool_call(&tool, outcome, started.elapsed());
        }
    }

    /// The other party's number in E.164 (the callee of an outbound call), as the answer
    /// webhook vouched for it; empty when unknown.
    pub(super) fn caller_number(&self) -> String {
        let Some(call) = &self.call else {
            return String::new();
        };
        let number = if call.caller.direction == "outbound" {
            &call.caller.to
        } else {
            &call.caller.from
        };
        e164::normalize(number).unwrap_or_default()
    }

    pub(super) fn after_playout(&mut self, action: AfterPlayout) {
        match action {
            AfterPlayout::HangUp => self.hang_up_then(EndReason::AgentHungUp),
            AfterPlayout::IdleHangUp => self.hang_up_then(EndReason::Idle),
            AfterPlayout::VoicemailHangUp => self.hang_up_then(EndReason::VoicemailLeft),
            AfterPlayout::Transfer { to, call_id: tool } => {
                self.transfer(to, TransferFor::Tool(tool))
            }
            AfterPlayout::Fallback { cause } => {
                match self.app.config.tools.transfer_number.clone() {
                    Some(to) => self.transfer(to, TransferFor::Fallback(cause)),
                    None => self.hang_up_then(EndReason::FellBack {
                        cause: Box::new(cause),
                        transferred_to: None,
                    }),
                }
            }
        }
    }

    /// Hangs up through the provider, then ends the call for `reason`.
    pub(super) fn hang_up_then(&mut self, reason: EndReason) {
        let job = jobs::hang_up(
            Arc::clone(&self.app),
            self.provider.name(),
            self.provider_call_id(),
            reason,
        );
        self.jobs.spawn(job);
    }

    pub(super) fn transfer(&mut self, to: String, purpose: TransferFor) {
        let job = jobs::transfer(
            Arc::clone(&self.app),
            self.provider.name(),
            self.provider_call_id(),
            to,
            purpose,
        );
        self.jobs.spawn(job);
    }
}

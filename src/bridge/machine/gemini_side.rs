//! The machine's Gemini side: the session opening, failing, closing and resuming, what the
//! model sends (audio, transcripts, interruptions, tool calls, `goAway`), the stall watchdog
//! and the spoken fallback when the session is lost for good.

use super::*;

impl CallMachine {
    /// The Gemini session asked for is open (`setupComplete` arrived) at `now`.
    pub fn handle_gemini_ready(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Connecting | Phase::Reconnecting) {
            return;
        }
        let resumed = self.phase == Phase::Reconnecting;
        self.timeline.gemini_ready(resumed, now);
        self.phase = Phase::Live;
        self.session.opened();
        if !self.session.greeted {
            self.session.greeted = true;
            self.idle.start(now, &mut self.timers);
            self.begin_conversation(now);
        } else if resumed && self.timers.get(Timer::Stall).is_none() && self.session.stall_resumed {
            // Resumed because the model went quiet: it still owes an answer.
            self.arm_stall(now);
        }
        self.release_held_audio();
    }

    /// Opening a Gemini session failed at `now`.
    pub fn handle_gemini_failed(&mut self, why: String, now: Instant) {
        if !matches!(self.phase, Phase::Connecting | Phase::Reconnecting) {
            return;
        }
        if self.phase == Phase::Reconnecting && self.session.can_retry() {
            let delay = self.session.retry_delay();
            tracing::warn!(%why, attempt = self.session.attempts(), retry_in_ms = delay.as_millis() as u64, "resuming the Gemini session failed; retrying");
            self.timers.set(Timer::ResumeRetry, now + delay);
            return;
        }
        self.fail_gemini(EndReason::GeminiUnavailable(why), now);
    }

    /// The live Gemini socket closed (close frame, error or EOF) at `now`.
    pub fn handle_gemini_closed(&mut self, code: u16, reason: String, now: Instant) {
        if self.phase != Phase::Live {
            return;
        }
        self.timeline.gemini_closed(code, &reason, now);
        if self.session.can_resume_after(code, &reason) {
            tracing::warn!(code, %reason, "Gemini connection lost; resuming the session");
            self.resume(ResumeCause::ConnectionLost, now);
            return;
        }
        self.fail_gemini(EndReason::GeminiClosed { code, reason }, now);
    }

    /// A frame (text or binary JSON) from Gemini, received at `now`.
    pub fn handle_gemini_frame(&mut self, frame: &[u8], now: Instant) {
        if self.phase != Phase::Live {
            return;
        }
        let message: ServerMessage<'_> = match serde_json::from_slice(frame) {
            Ok(m) => m,
            Err(error) => {
                let n = self.note_bad_message();
                if n <= LOGGED_BAD_MESSAGES || n.is_power_of_two() {
                    tracing::warn!(%error, "ignoring unreadable message from Gemini");
                }
                return;
            }
        };
        // One message can carry several of these; handle each, never else-if.
        if let Some(content) = message.server_content {
            self.on_server_content(content, now);
        }
        if let Some(call) = message.tool_call
            && !call.function_calls.is_empty()
        {
            // The model is waiting for us now, not the other way round.
            self.model_answered();
            if self
                .session
                .setup
                .as_ref()
                .is_some_and(SessionSetup::tools_block)
            {
                self.blocking_tools
                    .extend(call.function_calls.iter().map(|c| c.id.clone()));
            }
            self.out.push(Output::ToolCalls(call.function_calls));
        }
        if let Some(cancel) = message.tool_call_cancellation
            && !cancel.ids.is_empty()
        {
            for id in &cancel.ids {
                self.unblock_tool(id);
            }
            self.out.push(Output::CancelToolCalls(cancel.ids));
        }
        if let Some(update) = message.session_resumption_update
            && update.resumable
            && let Some(handle) = update.new_handle.filter(|h| !h.is_empty())
        {
            self.session.set_handle(handle);
        }
        if let Some(go_away) = message.go_away {
            let left = go_away.seconds_left().unwrap_or(10.0);
            tracing::info!(
                seconds_left = left,
                "Gemini will close this connection; resuming at the next pause"
            );
            self.session.resume_wanted = true;
            let left = Duration::from_secs_f64(left.clamp(0.0, 3_600.0));
            self.timers
                .set(Timer::GoAway, now + left.saturating_sub(GO_AWAY_MARGIN));
            if !self.playout.speaking() {
                self.resume(ResumeCause::GoAway, now);
            }
        }
    }

    /// The model owed an answer and said nothing: resume once, then give up.
    pub(super) fn on_stall(&mut self, now: Instant) {
        if self.phase != Phase::Live {
            return;
        }
        if !self.session.stall_resumed && self.session.can_resume_after(1011, "") {
            tracing::warn!(
                stall_seconds = self.session.stall_timeout.as_secs(),
                "Gemini went quiet; resuming the session"
            );
            self.session.stall_resumed = true;
            self.resume(ResumeCause::Stalled, now);
            return;
        }
        tracing::warn!("Gemini went quiet and cannot be resumed");
        self.fail_gemini(EndReason::GeminiStalled, now);
    }

    pub(super) fn on_server_content(&mut self, content: ServerContent<'_>, now: Instant) {
        if let Some(turn) = content.model_turn {
            for part in turn.parts {
                let Some(blob) = part.inline_data else {
                    continue;
                };
                if part.thought
                    || !blob
                        .mime_type
                        .as_deref()
                        .is_none_or(|m| m.starts_with("audio/pcm"))
                    || self.voicemail.drops_agent_audio()
                {
                    continue;
                }
                let turn_starts = !self.playout.speaking();
                if turn_starts {
                    // The agent starts answering: the caller's line is complete.
                    self.transcript.flush(Speaker::Caller, &mut self.out);
                }
                let pushed =
                    self.playout
                        .push_audio(&blob.data, now, &mut self.timers, &mut self.out);
                match pushed {
                    Ok(()) => {
                        self.model_answered();
                        self.idle.agent_spoke();
                        if turn_starts {
                            self.timeline.agent_turn_started(now);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "dropping undecodable audio from Gemini");
                    }
                }
            }
        }
        if let Some(t) = content.input_transcription {
            self.idle.caller_active();
            self.transcript.push(Speaker::Caller, &t.text);
            if !self.playout.speaking() {
                // The caller is talking; once they stop, the model owes them an answer.
                self.arm_stall(now);
            }
        }
        if let Some(t) = content.output_transcription {
            self.transcript.push(Speaker::Agent, &t.text);
        }
        if content.interrupted {
            let heard = self.playout.heard_of_turn(now);
            self.timeline.interrupted(heard, now);
            self.playout.interrupt(now, &mut self.timers, &mut self.out);
            let share = heard.map(TurnHeard::share);
            self.transcript.flush_interrupted(share, &mut self.out);
            self.voicemail_turn_ended(false, now);
        }
        if content.turn_complete {
            if let Some(reason) = content.turn_complete_reason.as_deref() {
                tracing::debug!(reason, "model turn complete");
            }
            self.model_answered();
            self.playout
                .finish_turn(now, &mut self.timers, &mut self.out);
            self.transcript.flush_both(&mut self.out);
            if self.idle.goodbye_spoken() {
                self.handle_after_playout(AfterPlayout::IdleHangUp, now);
            }
            self.voicemail_turn_ended(true, now);
            if self.session.resume_wanted {
                self.resume(ResumeCause::GoAway, now);
            }
        }
    }

    /// The model produced something: it is not stalled.
    pub(super) fn model_answered(&mut self) {
        self.timers.clear(Timer::Stall);
        self.session.stall_resumed = false;
    }

    pub(super) fn arm_stall(&mut self, now: Instant) {
        self.timers
            .set(Timer::Stall, now + self.session.stall_timeout);
    }

    /// Closes the live session at `now` and opens it again with the latest handle.
    pub(super) fn resume(&mut self, cause: ResumeCause, now: Instant) {
        if self.phase != Phase::Live {
            return;
        }
        self.session.resumptions.count(cause);
        self.timeline.resuming(cause);
        self.playout.cut(now, &mut self.timers, &mut self.out);
        self.timers.clear(Timer::GoAway);
        self.timers.clear(Timer::Stall);
        self.out.push(Output::CloseGemini);
        self.phase = Phase::Reconnecting;
        self.connect();
    }

    /// Asks the task to open the session (again).
    pub(super) fn connect(&mut self) {
        match self.session.next_connect_message() {
            Some(message) => self.out.push(Output::ConnectGemini(message)),
            None => self.end(EndReason::GeminiUnavailable("no session to open".into())),
        }
    }

    /// Gemini failed for good: the caller hears the fallback message (when there is one)
    /// rather than dead air, then is transferred or hung up on; otherwise the call ends.
    pub(super) fn fail_gemini(&mut self, reason: EndReason, now: Instant) {
        self.fall_back(reason, now, PLAYOUT_TIMEOUT);
    }

    /// Plays the fallback message, then asks for [`AfterPlayout::Fallback`]; the provider
    /// has `margin` past the clip's length to confirm it played. Without a clip the call
    /// ends for `reason` at once.
    pub(super) fn fall_back(&mut self, reason: EndReason, now: Instant, margin: Duration) {
        if matches!(self.phase, Phase::Ended | Phase::FallingBack) {
            return;
        }
        let Some(clip) = self.fallback.clone() else {
            return self.end(reason);
        };
        tracing::warn!(%reason, "playing the fallback message");
        self.transcript.flush_both(&mut self.out);
        self.phase = Phase::FallingBack;
        for timer in [Timer::GoAway, Timer::ResumeRetry, Timer::Stall] {
            self.timers.clear(timer);
        }
        self.out.push(Output::CloseGemini);
        self.playout.cancel_after(&mut self.timers);
        self.playout
            .play_clip(&clip, now, &mut self.timers, &mut self.out);
        let plays_for = Duration::from_secs_f64(clip.len() as f64 / 8_000.0);
        self.playout.after(
            AfterPlayout::Fallback { cause: reason },
            now + plays_for + margin,
            now,
            &mut self.timers,
            &mut self.out,
        );
    }
}

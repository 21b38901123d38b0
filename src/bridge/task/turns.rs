//! The call task's part in who speaks first and in voicemail: it tells the machine as the
//! call is admitted, and passes on a machine verdict that arrives later.

use std::sync::Arc;

use tokio::time::Instant;

use super::CallTask;
use crate::bridge::voicemail::{self, MachineAnswered, VoicemailPlan};
use crate::telephony::Direction;

impl CallTask {
    /// Who speaks first on this call, and what is known about a machine on the line.
    pub(super) fn start_turns(&mut self, direction: &str, plan: VoicemailPlan) {
        let turns = &self.app.config.turns;
        let policy = turns.greeting_for(Direction::parse(direction));
        self.machine.set_greeting(policy, turns.greeting_silence);
        if let Some(answered) = plan.answered {
            self.machine_answered(answered);
        }
        if let Some(listener) = plan.later {
            let app = Arc::clone(&self.app);
            self.jobs.spawn(voicemail::wait_for_machine(app, listener));
        }
    }

    /// An answering machine is on the line: the machine leaves the message.
    pub(super) fn machine_answered(&mut self, answered: MachineAnswered) {
        self.machine.handle_machine_answered(
            answered.message,
            answered.greeting_over,
            Instant::now().into_std(),
        );
    }
}

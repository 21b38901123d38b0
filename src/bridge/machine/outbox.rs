//! The machine's queue of commands, with the phone stream's codec beside it so that any
//! sub-machine can queue a phone command in the provider's own format.

use std::collections::VecDeque;

use super::tap::AudioTap;
use super::types::Output;
use crate::telephony::{MediaStream, PhoneCommand};

/// Queued commands and the codec to word phone commands with.
pub struct Outbox {
    /// The phone stream's codec (also parses what arrives).
    pub stream: Box<dyn MediaStream>,
    queue: VecDeque<Output>,
    /// Hears every phone command that carries or drops audio (call recording).
    pub tap: Option<Box<dyn AudioTap>>,
}

impl Outbox {
    /// An empty queue for `stream`.
    pub fn new(stream: Box<dyn MediaStream>) -> Self {
        Self {
            stream,
            queue: VecDeque::new(),
            tap: None,
        }
    }

    /// Queues a command.
    pub fn push(&mut self, output: Output) {
        self.queue.push_back(output);
    }

    /// Queues a phone command, encoded for this provider.
    pub fn phone(&mut self, command: PhoneCommand<'_>) {
        if let Some(tap) = &mut self.tap {
            match command {
                PhoneCommand::Play(frame) => tap.agent_frame(frame),
                PhoneCommand::Clear => tap.agent_cleared(),
                PhoneCommand::Mark(_) => {}
            }
        }
        let text = self.stream.encode(command);
        self.queue.push_back(Output::Phone(text));
    }

    /// Queues a message for Gemini.
    pub fn gemini(&mut self, message: String) {
        self.queue.push_back(Output::Gemini(message));
    }

    /// The next command, if any.
    pub fn pop(&mut self) -> Option<Output> {
        self.queue.pop_front()
    }
}

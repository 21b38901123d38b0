//! Transcript lines: Gemini sends each side's words in pieces; a line is whole at the end of
//! that side's turn.

use super::outbox::Outbox;
use super::types::{Output, Speaker};

/// The lines being assembled for each side.
#[derive(Debug, Default)]
pub struct Transcript {
    caller: String,
    agent: String,
}

impl Transcript {
    /// Appends a piece of `speaker`'s words.
    pub fn push(&mut self, speaker: Speaker, text: &str) {
        self.line(speaker).push_str(text);
    }

    /// Queues `speaker`'s line, if it has words, and starts a new one.
    pub fn flush(&mut self, speaker: Speaker, out: &mut Outbox) {
        let line = self.line(speaker);
        let text = line.trim();
        if !text.is_empty() {
            out.push(Output::Transcript(speaker, text.to_owned()));
        }
        line.clear();
    }

    /// Queues both sides' lines.
    pub fn flush_both(&mut self, out: &mut Outbox) {
        self.flush(Speaker::Caller, out);
        self.flush(Speaker::Agent, out);
    }

    fn line(&mut self, speaker: Speaker) -> &mut String {
        match speaker {
            Speaker::Caller => &mut self.caller,
            Speaker::Agent => &mut self.agent,
        }
    }
}

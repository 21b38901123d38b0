//! Transcript lines: Gemini sends each side's words in pieces; a line is whole at the end of
//! that side's turn. An agent turn the caller talked over is cut to what they heard.

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
        self.queue(speaker, None, out);
    }

    /// Queues both sides' lines.
    pub fn flush_both(&mut self, out: &mut Outbox) {
        self.flush(Speaker::Caller, out);
        self.flush(Speaker::Agent, out);
    }

    /// The caller talked over the agent, who had been heard for `heard_share` (0 to 1) of
    /// the turn's audio: the agent's line is cut to about that share of its words and
    /// marked interrupted.
    pub fn flush_interrupted(&mut self, heard_share: Option<f64>, out: &mut Outbox) {
        self.queue(Speaker::Agent, Some(heard_share.unwrap_or(1.0)), out);
    }

    fn queue(&mut self, speaker: Speaker, interrupted_at: Option<f64>, out: &mut Outbox) {
        let line = self.line(speaker);
        let whole = line.trim();
        let text = match interrupted_at {
            Some(share) => cut_at_share(whole, share),
            None => whole,
        };
        if !text.is_empty() {
            out.push(Output::Transcript {
                speaker,
                text: text.to_owned(),
                interrupted: interrupted_at.is_some(),
            });
        }
        line.clear();
    }

    fn line(&mut self, speaker: Speaker) -> &mut String {
        match speaker {
            Speaker::Caller => &mut self.caller,
            Speaker::Agent => &mut self.agent,
        }
    }
}

/// The first `share` of `text`'s characters, ended at the nearest word boundary (speech
/// time is roughly proportional to characters; half a word was not "heard" either way).
fn cut_at_share(text: &str, share: f64) -> &str {
    let share = share.clamp(0.0, 1.0);
    let chars = text.chars().count();
    let keep = (chars as f64 * share).round() as usize;
    if keep >= chars {
        return text;
    }
    let Some((cut, _)) = text.char_indices().nth(keep) else {
        return text;
    };
    // The word the cut falls in is kept when more than half of it was heard.
    let word_start = text[..cut].rfind(char::is_whitespace).map_or(0, |i| i + 1);
    let word_end = text[cut..]
        .find(char::is_whitespace)
        .map_or(text.len(), |i| cut + i);
    let heard_of_word = text[word_start..cut].chars().count();
    let word_len = text[word_start..word_end].chars().count();
    let end = if heard_of_word * 2 > word_len {
        word_end
    } else {
        word_start
    };
    text[..end].trim_end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_line_is_cut_at_a_word_near_the_share_heard() {
        let line = "I can book you in on Tuesday at three or Wednesday at ten.";
        assert_eq!(cut_at_share(line, 0.0), "");
        assert_eq!(cut_at_share(line, 0.5), "I can book you in on Tuesday");
        assert_eq!(cut_at_share(line, 0.54), "I can book you in on Tuesday at");
        assert_eq!(cut_at_share(line, 0.99), line);
        assert_eq!(cut_at_share(line, 1.0), line);
        assert_eq!(cut_at_share(line, 2.0), line);
        assert_eq!(
            cut_at_share("Grüße aus München, bis später", 0.6),
            "Grüße aus München,"
        );
        assert_eq!(cut_at_share("", 0.5), "");
    }
}

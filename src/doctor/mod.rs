//! `gemini-phone doctor`: checks everything a first real call depends on — configuration,
//! Gemini, the provider accounts and numbers, the public URL, records, tools — and prints one
//! line per check with the fix for each failure.

pub mod providers;

use std::fmt;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It works.
    Ok,
    /// It works, but something is worth knowing (printed, does not fail the run).
    Warn,
    /// It will break calls; the line says how to fix it.
    Fail,
    /// Not checked (not configured, or it depends on a check that failed).
    Skip,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Ok => "ok",
            Outcome::Warn => "warn",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "skip",
        })
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked, e.g. `twilio number`.
    pub area: String,
    /// How it came out.
    pub outcome: Outcome,
    /// What was found, in plain words (with the fix, for a failure).
    pub detail: String,
}

impl Check {
    /// A check with this outcome.
    pub fn new(area: impl Into<String>, outcome: Outcome, detail: impl Into<String>) -> Self {
        Self {
            area: area.into(),
            outcome,
            detail: detail.into(),
        }
    }
}

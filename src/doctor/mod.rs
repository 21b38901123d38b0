//! `gemini-phone doctor`: checks everything a first real call depends on — configuration,
//! Gemini, the provider accounts and numbers, the public URL, records, tools — and prints one
//! line per check with the fix for each failure.

mod configuration;
mod conversation;
mod credentials;
mod gemini;
pub mod providers;
mod public_url;
mod records;
pub mod run;
mod tools;

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

    /// A check that passed.
    pub fn ok(area: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(area, Outcome::Ok, detail)
    }

    /// Something worth knowing that does not break calls.
    pub fn warn(area: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(area, Outcome::Warn, detail)
    }

    /// A failure; `detail` says what is wrong and how to fix it.
    pub fn fail(area: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(area, Outcome::Fail, detail)
    }

    /// A check not run; `detail` says why.
    pub fn skip(area: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(area, Outcome::Skip, detail)
    }
}

/// One report line: outcome and area in columns, then the detail.
impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `{:<4}` pads only through `Formatter::pad`, which `Outcome`'s Display skips.
        write!(
            f,
            "{:<4}  {:<13} {}",
            self.outcome.to_string(),
            self.area,
            self.detail
        )
    }
}

/// Every line of one doctor run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
}

impl Report {
    /// How many checks came out as `outcome`.
    pub fn count(&self, outcome: Outcome) -> usize {
        self.checks.iter().filter(|c| c.outcome == outcome).count()
    }

    /// True when nothing failed (warnings and skips do not fail a run).
    pub fn passed(&self) -> bool {
        self.count(Outcome::Fail) == 0
    }

    /// The closing line: the counts, and what to do next.
    pub fn summary(&self) -> String {
        let counts = format!(
            "{} ok, {} warn, {} FAIL, {} skip",
            self.count(Outcome::Ok),
            self.count(Outcome::Warn),
            self.count(Outcome::Fail),
            self.count(Outcome::Skip)
        );
        if self.passed() {
            format!("{counts}: ready for a first call")
        } else {
            format!("{counts}: fix the FAIL lines above, then run `gemini-phone doctor` again")
        }
    }
}

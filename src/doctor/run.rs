//! Runs every check in order and prints the report: `gemini-phone doctor`.
//!
//! The configuration is read the way the server reads it (`.env`, then the environment). A
//! configuration the server would refuse is one FAIL line naming the variable, and every
//! later check is skipped, since each depends on it. Every check has a time limit, so doctor
//! never hangs on an unreachable service.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use super::{
    Check, Outcome, Report, configuration, conversation, credentials, gemini, providers,
    public_url, records, tools,
};
use crate::config::{Config, ConfigError};
use crate::telephony::rest::http_client;

/// How long one check (or, for Gemini, one step of it) may take when `DOCTOR_TIMEOUT_SECS`
/// is unset: as long as a call waits for Gemini's setup by default.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// The variable that sets [`DEFAULT_CHECK_TIMEOUT`] otherwise (whole seconds, at least 1).
pub const TIMEOUT_VAR: &str = "DOCTOR_TIMEOUT_SECS";

/// The areas checked after the configuration, in report order; skipped when it is refused.
const LATER_AREAS: [&str; 7] = [
    "conversation",
    "prompt",
    "records",
    "tools",
    "gemini",
    "providers",
    "public url",
];

/// `gemini-phone doctor`: reads `.env` and the environment, prints one line per check and a
/// summary, and exits 0 only when no check failed.
pub fn main() -> ExitCode {
    // A missing .env is normal in containers, where the environment is set directly.
    let _ = dotenvy::dotenv();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(run(|name| std::env::var(name).ok(), print_line));
    println!("{}", report.summary());
    // A check cut at its time limit may leave a connection attempt behind; do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Prints a check as it finishes, so a slow check shows what came before it.
fn print_line(check: &Check) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{check}");
    let _ = out.flush();
}

/// Runs every check with the configuration read through `lookup`, handing each line to
/// `on_check` as soon as it is known; returns them all.
pub async fn run(
    lookup: impl Fn(&str) -> Option<String>,
    mut on_check: impl FnMut(&Check),
) -> Report {
    let mut report = Report::default();
    let mut add = |checks: Vec<Check>| {
        for check in checks {
            on_check(&check);
            report.checks.push(check);
        }
    };
    let (limit, config) = match check_timeout(&lookup)
        .and_then(|limit| Config::from_lookup(&lookup).map(|config| (limit, config)))
    {
        Ok(read) => read,
        Err(error) => {
            add(vec![configuration::refused(&error)]);
            add(LATER_AREAS
                .iter()
                .map(|area| Check::skip(*area, "not checked until the configuration is fixed"))
                .collect());
            return report;
        }
    };
    add(configuration::checks(&config));
    add(vec![conversation::check(&config)]);

    let prompt = configuration::prompt(&config);
    add(vec![prompt.check]);
    add(vec![records::check(&config.database_url, limit).await]);
    let tools = tools::check(&config.tools, limit).await;
    add(tools.checks);

    let credentials = match &config.gemini {
        Some(gemini) => credentials::check(gemini, limit).await,
        None => None,
    };
    let no_token = credentials
        .as_ref()
        .is_some_and(|check| check.outcome == Outcome::Fail);
    add(credentials.into_iter().collect());
    add(vec![match (&config.gemini, prompt.text, tools.toolbox) {
        (None, _, _) => Check::skip("gemini", "AGENT=echo: calls do not use Gemini"),
        (Some(_), _, _) if no_token => Check::skip(
            "gemini",
            "not checked: Vertex AI needs the access token the credentials line above could not get",
        ),
        (Some(gemini), Some(prompt), Some(toolbox)) => {
            gemini::check(gemini, config.conversation.live, prompt, &toolbox, limit).await
        }
        _ => Check::skip(
            "gemini",
            "not checked: a call cannot start until the prompt and tools lines above are fixed",
        ),
    }]);

    let http = match http_client(limit.min(config.provider_timeout)) {
        Ok(http) => http,
        Err(error) => {
            add(vec![Check::fail(
                "https",
                format!(
                    "cannot set up HTTPS ({error}): install the system's CA certificates (Debian: ca-certificates)"
                ),
            )]);
            return report;
        }
    };
    add(
        match tokio::time::timeout(limit, providers::checks(&config, &http)).await {
            Ok(checks) => checks,
            Err(_) => vec![Check::fail(
                "providers",
                format!(
                    "no answer from the provider APIs within {}s: check the network, or the TWILIO_API_URL/PLIVO_API_URL overrides",
                    limit.as_secs()
                ),
            )],
        },
    );
    add(vec![public_url::check(&config, &http).await]);
    report
}

/// The per-check time limit, from [`TIMEOUT_VAR`].
fn check_timeout(lookup: &impl Fn(&str) -> Option<String>) -> Result<Duration, ConfigError> {
    let Some(value) = lookup(TIMEOUT_VAR).filter(|v| !v.trim().is_empty()) else {
        return Ok(DEFAULT_CHECK_TIMEOUT);
    };
    match value.trim().parse::<u64>() {
        Ok(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
        _ => Err(ConfigError {
            var: TIMEOUT_VAR,
            problem: format!(
                "`{value}` is not a whole number of seconds of at least 1 (doctor's time limit per check)"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_limit_is_whole_seconds_of_at_least_one() {
        let with = |value: &'static str| check_timeout(&move |_: &str| Some(value.to_owned()));
        assert_eq!(with("3").unwrap(), Duration::from_secs(3));
        assert_eq!(with(" ").unwrap(), DEFAULT_CHECK_TIMEOUT);
        assert_eq!(with("0").unwrap_err().var, TIMEOUT_VAR);
        assert_eq!(with("1.5").unwrap_err().var, TIMEOUT_VAR);
    }
}

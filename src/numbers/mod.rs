//! Automatic number set-up: point each configured provider number's voice webhook at this
//! server (`gemini-phone configure`, or `AUTO_CONFIGURE_NUMBERS=true` at start-up).
//!
//! Each provider implements [`NumberSetup`] beside its REST client; `configure` and the
//! provider checks of `doctor` hold a `dyn NumberSetup` from the registry and never branch on
//! the provider. Every operation reads first and writes only what differs, and only ever
//! addresses the one number the configuration names.

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::config::Config;
use crate::telephony::registry::Registry;
use crate::telephony::rest::{RestError, http_client};

/// The name of the Plivo application this server creates and reuses.
pub const APP_NAME: &str = "gemini-phone";

/// A URL a provider requests, with the HTTP method it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// The URL.
    pub url: String,
    /// The HTTP method, upper case.
    pub method: String,
}

impl Hook {
    /// `url` requested with POST, the method every webhook of this server is set up with.
    pub fn post(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            method: "POST".to_owned(),
        }
    }

    /// True when the provider would request `self.url` with `self.method`; methods are
    /// compared without regard to case, as the providers store them as typed.
    pub fn same_as(&self, other: &Hook) -> bool {
        self.url == other.url && self.method.eq_ignore_ascii_case(&other.method)
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.url, self.method.to_ascii_uppercase())
    }
}

/// Where a number should send its calls: what `configure` sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// The answer webhook (`PUBLIC_URL/<provider>/answer`).
    pub answer: Hook,
    /// Where call-status or hang-up events go.
    pub events: Hook,
}

/// Where a number sends its calls now, as the provider has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// The number, E.164.
    pub number: String,
    /// What the provider requests when the number is called (`None`: nothing is set).
    pub answer: Option<Hook>,
    /// Where call-status or hang-up events go (`None`: nowhere).
    pub events: Option<Hook>,
    /// What answers instead of `answer` (a TwiML application, a SIP trunk), in words.
    pub overridden_by: Option<String>,
    /// What holds the hooks, in words, when it is not the number itself (a Plivo application).
    pub held_by: Option<String>,
}

impl Routing {
    /// True when a call to the number reaches `wanted.answer` exactly.
    pub fn answers_at(&self, wanted: &Wanted) -> bool {
        self.overridden_by.is_none()
            && self
                .answer
                .as_ref()
                .is_some_and(|hook| hook.same_as(&wanted.answer))
    }

    /// True when nothing differs from `wanted`, so `configure` has nothing to send.
    pub fn matches(&self, wanted: &Wanted) -> bool {
        self.answers_at(wanted)
            && self
                .events
                .as_ref()
                .is_some_and(|hook| hook.same_as(&wanted.events))
    }

    /// What calls reach now, in words, for a line that says what is wrong.
    pub fn describe_answer(&self) -> String {
        let holder = self
            .held_by
            .as_ref()
            .map(|h| format!("{h}: "))
            .unwrap_or_default();
        if let Some(other) = &self.overridden_by {
            return format!("{holder}{other}");
        }
        match &self.answer {
            Some(hook) => format!("{holder}{hook}"),
            None => format!("{holder}no answer URL"),
        }
    }
}

/// What `configure` did to one provider's number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configured {
    /// The number, E.164.
    pub number: String,
    /// Where its calls go now.
    pub answer_url: String,
    /// Each change made, in words; empty when the number was set up already.
    pub changes: Vec<String>,
}

/// Why a provider's number could not be checked or set up, phrased for the person running it.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The provider refused the account id and token.
    #[error(
        "{provider} refused the credentials (HTTP {status}): check {id_var} and {token_var} against the {provider} console"
    )]
    Credentials {
        /// Provider name as people write it.
        provider: &'static str,
        /// 401 or 403.
        status: u16,
        /// The variable holding the account id.
        id_var: &'static str,
        /// The variable holding the token.
        token_var: &'static str,
    },
    /// The account exists but cannot take calls.
    #[error(
        "the {provider} account is {status}, not active: calls cannot reach it until it is reactivated in the {provider} console"
    )]
    AccountInactive {
        /// Provider name as people write it.
        provider: &'static str,
        /// The account's status as the provider reports it.
        status: String,
    },
    /// The configuration names no number for this provider.
    #[error(
        "{variable} is not set: put the {provider} number callers dial there, e.g. +14155550100"
    )]
    NoNumber {
        /// Provider name as people write it.
        provider: &'static str,
        /// The variable that should hold it.
        variable: &'static str,
    },
    /// The configured number is not a phone number.
    #[error("{variable}={value:?} is not a phone number in E.164 form; write it like +14155550100")]
    BadNumber {
        /// The variable that holds it.
        variable: &'static str,
        /// Its value.
        value: String,
    },
    /// The account does not hold the configured number.
    #[error(
        "{number} is not a number on this {provider} account: check {variable}, or buy a number in the {provider} console ({where_to})"
    )]
    NotOnAccount {
        /// Provider name as people write it.
        provider: &'static str,
        /// The number, readable.
        number: String,
        /// The variable that holds it.
        variable: &'static str,
        /// Where in the console numbers are listed and bought.
        where_to: &'static str,
    },
    /// The number's calls are routed somewhere `configure` will not change on its own.
    #[error("{number} cannot be set up automatically: {reason}")]
    Unsupported {
        /// The number, readable.
        number: String,
        /// What is in the way and how to remove it.
        reason: String,
    },
    /// `PUBLIC_URL` names this machine, which no provider can reach.
    #[error(
        "PUBLIC_URL {url} can only be reached from this machine, so no provider could call it: set it to the public https URL of this server (e.g. your ngrok URL)"
    )]
    LocalPublicUrl {
        /// The configured value.
        url: String,
    },
    /// Any other provider failure.
    #[error(transparent)]
    Rest(#[from] RestError),
}

impl SetupError {
    /// True when the provider refused the credentials, so nothing else can be checked.
    pub fn is_credentials(&self) -> bool {
        matches!(self, SetupError::Credentials { .. })
    }
}

/// Names a provider's account variables and console, for errors.
#[derive(Debug, Clone, Copy)]
pub struct AccountNames {
    /// Provider name.
    pub provider: &'static str,
    /// The provider's name as people write it (`Twilio`), for sentences.
    pub title: &'static str,
    /// The variable holding the account id.
    pub id_var: &'static str,
    /// The variable holding the token.
    pub token_var: &'static str,
    /// The variable holding the number.
    pub number_var: &'static str,
    /// Where in the console numbers are listed and bought.
    pub numbers_page: &'static str,
}

impl AccountNames {
    /// A [`RestError`] in the words of this account: 401/403 become
    /// [`SetupError::Credentials`].
    pub fn error(&self, error: RestError) -> SetupError {
        match error {
            RestError::Status {
                status: status @ (401 | 403),
                ..
            } => SetupError::Credentials {
                provider: self.title,
                status,
                id_var: self.id_var,
                token_var: self.token_var,
            },
            other => SetupError::Rest(other),
        }
    }

    /// The configured number in E.164 form, or why there is none.
    pub fn number(&self, configured: Option<&str>) -> Result<String, SetupError> {
        let value = configured.ok_or(SetupError::NoNumber {
            provider: self.title,
            variable: self.number_var,
        })?;
        crate::e164::normalize(value).ok_or_else(|| SetupError::BadNumber {
            variable: self.number_var,
            value: value.to_owned(),
        })
    }

    /// [`SetupError::NotOnAccount`] for `number`.
    pub fn not_on_account(&self, number: &str) -> SetupError {
        SetupError::NotOnAccount {
            provider: self.title,
            number: readable(number),
            variable: self.number_var,
            where_to: self.numbers_page,
        }
    }
}

/// The account, as the credentials check found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSummary {
    /// The account, in words (name and id).
    pub description: String,
    /// Something worth knowing about it (a trial account), if anything.
    pub note: Option<String>,
}

/// Setting up one provider account's number for inbound calls.
pub trait NumberSetup: Send + Sync {
    /// Provider name (`twilio`, `plivo`).
    fn provider(&self) -> &'static str;
    /// The account's variables and console, for errors.
    fn names(&self) -> AccountNames;
    /// The number the configuration names (`TWILIO_PHONE_NUMBER`, `PLIVO_PHONE_NUMBER`), as
    /// written there.
    fn configured_number(&self) -> Option<&str>;
    /// Where the number should send calls for a server at `public_url`.
    fn wanted(&self, public_url: &str) -> Wanted;
    /// Fetches the account: proves the credentials and that the account can take calls.
    fn check_account(&self) -> BoxFuture<'_, Result<AccountSummary, SetupError>>;
    /// Finds the configured number on the account and reads where it sends calls.
    fn routing(&self) -> BoxFuture<'_, Result<Routing, SetupError>>;
    /// Makes the number send calls to `wanted`, sending only what differs.
    fn configure<'a>(&'a self, wanted: &'a Wanted)
    -> BoxFuture<'a, Result<Configured, SetupError>>;
}

/// One provider's line of a `configure` run.
#[derive(Debug)]
pub struct ProviderOutcome {
    /// Provider name.
    pub provider: &'static str,
    /// What was done, or why it failed.
    pub result: Result<Configured, SetupError>,
}

impl fmt::Display for ProviderOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let provider = self.provider;
        match &self.result {
            Ok(done) if done.changes.is_empty() => write!(
                f,
                "{provider}: {} already pointing at {}, nothing to change",
                readable(&done.number),
                done.answer_url
            ),
            Ok(done) => write!(
                f,
                "{provider}: {} now sends calls to {} ({})",
                readable(&done.number),
                done.answer_url,
                done.changes.join("; ")
            ),
            Err(error) => write!(f, "{provider}: FAILED: {error}"),
        }
    }
}

/// Everything a `configure` run did.
#[derive(Debug)]
pub struct Report {
    /// One outcome per configured provider.
    pub outcomes: Vec<ProviderOutcome>,
    /// Set when nothing could be attempted at all.
    pub refused: Option<String>,
}

impl Report {
    /// True when every configured provider's number is set up.
    pub fn succeeded(&self) -> bool {
        self.refused.is_none() && self.outcomes.iter().all(|o| o.result.is_ok())
    }

    /// `Ready: call +1 415 555 0100 to talk to the agent`, once every number is set up.
    pub fn ready_line(&self) -> Option<String> {
        if !self.succeeded() {
            return None;
        }
        let numbers: Vec<String> = self
            .outcomes
            .iter()
            .filter_map(|o| o.result.as_ref().ok())
            .map(|done| readable(&done.number))
            .collect();
        Some(format!(
            "Ready: call {} to talk to the agent",
            numbers.join(" or ")
        ))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for outcome in &self.outcomes {
            writeln!(f, "{outcome}")?;
        }
        if let Some(refused) = &self.refused {
            writeln!(f, "FAILED: {refused}")?;
        }
        if let Some(ready) = self.ready_line() {
            writeln!(f, "{ready}")?;
        }
        Ok(())
    }
}

/// Points every configured provider's number at `config.public_url`: what
/// `gemini-phone configure` runs.
pub async fn configure_all(config: &Config) -> Report {
    let http = match http_client(config.provider_timeout) {
        Ok(http) => http,
        Err(error) => {
            return Report {
                outcomes: Vec::new(),
                refused: Some(format!(
                    "cannot set up HTTPS ({error}); install the system's CA certificates"
                )),
            };
        }
    };
    let registry = Registry::from_config(config, &http);
    configure_with(&registry, &config.public_url).await
}

/// [`configure_all`] with the accounts of `registry`.
pub async fn configure_with(registry: &Registry, public_url: &str) -> Report {
    let setups = registry.number_setups();
    if setups.is_empty() {
        return Report {
            outcomes: Vec::new(),
            refused: Some(
                "no provider is configured: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN, or PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN"
                    .to_owned(),
            ),
        };
    }
    if let Err(error) = reachable_public_url(public_url) {
        return Report {
            outcomes: Vec::new(),
            refused: Some(error.to_string()),
        };
    }
    let mut outcomes = Vec::with_capacity(setups.len());
    for setup in setups {
        outcomes.push(ProviderOutcome {
            provider: setup.provider(),
            result: configure_one(setup.as_ref(), public_url).await,
        });
    }
    Report {
        outcomes,
        refused: None,
    }
}

async fn configure_one(
    setup: &dyn NumberSetup,
    public_url: &str,
) -> Result<Configured, SetupError> {
    // The number is checked before any request, so a typo costs no provider round trip.
    setup.names().number(setup.configured_number())?;
    let wanted = setup.wanted(public_url);
    setup.configure(&wanted).await
}

/// Runs [`configure_with`] in the background when `AUTO_CONFIGURE_NUMBERS` is set, logging
/// each line. Called once the server listens, so a call the new webhook sends finds it.
///
/// A failure is logged as an error and the server keeps serving: the numbers may already
/// point here from an earlier run, and outbound calls and the `/calls` API do not depend on
/// them. `gemini-phone doctor` and `gemini-phone configure` repeat the reason.
pub fn configure_in_background(app: &Arc<crate::app::App>) {
    if !app.config.auto_configure_numbers {
        return;
    }
    let app = Arc::clone(app);
    tokio::spawn(async move {
        let report = configure_with(&app.providers, &app.config.public_url).await;
        for outcome in &report.outcomes {
            match &outcome.result {
                Ok(_) => tracing::info!("AUTO_CONFIGURE_NUMBERS: {outcome}"),
                Err(_) => tracing::error!(
                    "AUTO_CONFIGURE_NUMBERS: {outcome} (the server keeps running; inbound calls may not reach it)"
                ),
            }
        }
        if let Some(refused) = &report.refused {
            tracing::error!("AUTO_CONFIGURE_NUMBERS: {refused}");
        }
        if let Some(ready) = report.ready_line() {
            tracing::info!("{ready}");
        }
    });
}

/// Refuses a `PUBLIC_URL` on this machine: the provider would store it and every call would
/// then fail, which is worse than not changing the number.
pub fn reachable_public_url(public_url: &str) -> Result<(), SetupError> {
    let host = reqwest::Url::parse(public_url)
        .ok()
        .and_then(|url| url.host_str().map(str::to_ascii_lowercase));
    let local = match host.as_deref() {
        None => false,
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified()),
    };
    if local {
        return Err(SetupError::LocalPublicUrl {
            url: public_url.to_owned(),
        });
    }
    Ok(())
}

/// A number as people read it: North American numbers as `+1 415 555 0100`, others in
/// E.164 (their grouping depends on the country).
pub fn readable(e164: &str) -> String {
    match e164.strip_prefix("+1") {
        Some(national) if national.len() == 10 && national.bytes().all(|b| b.is_ascii_digit()) => {
            format!(
                "+1 {} {} {}",
                &national[..3],
                &national[3..6],
                &national[6..]
            )
        }
        _ => e164.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted() -> Wanted {
        Wanted {
            answer: Hook::post("https://x.io/twilio/answer"),
            events: Hook::post("https://x.io/twilio/status"),
        }
    }

    fn routing(answer: Option<Hook>, events: Option<Hook>) -> Routing {
        Routing {
            number: "+14155550100".into(),
            answer,
            events,
            overridden_by: None,
            held_by: None,
        }
    }

    #[test]
    fn north_american_numbers_read_in_groups() {
        assert_eq!(readable("+14155550100"), "+1 415 555 0100");
        assert_eq!(readable("+442071838750"), "+442071838750");
        assert_eq!(readable("+1415555010"), "+1415555010", "too short for NANP");
    }

    #[test]
    fn routing_matches_only_when_url_and_method_agree() {
        let wanted = wanted();
        let exact = routing(Some(wanted.answer.clone()), Some(wanted.events.clone()));
        assert!(exact.matches(&wanted));
        let lower = routing(
            Some(Hook {
                url: wanted.answer.url.clone(),
                method: "post".into(),
            }),
            Some(wanted.events.clone()),
        );
        assert!(lower.matches(&wanted), "methods compare without case");
        let get = routing(
            Some(Hook {
                url: wanted.answer.url.clone(),
                method: "GET".into(),
            }),
            Some(wanted.events.clone()),
        );
        assert!(!get.answers_at(&wanted));
        let no_events = routing(Some(wanted.answer.clone()), None);
        assert!(no_events.answers_at(&wanted) && !no_events.matches(&wanted));
        let mut overridden = exact.clone();
        overridden.overridden_by = Some("TwiML app AP1".into());
        assert!(!overridden.answers_at(&wanted));
        assert_eq!(overridden.describe_answer(), "TwiML app AP1");
        assert_eq!(routing(None, None).describe_answer(), "no answer URL");
    }

    #[test]
    fn local_public_urls_are_refused() {
        for local in [
            "http://localhost:8000",
            "http://127.0.0.1:8000",
            "http://[::1]:8000",
            "http://0.0.0.0",
        ] {
            let error = reachable_public_url(local).expect_err(local);
            assert!(error.to_string().contains("ngrok"), "{error}");
        }
        assert!(reachable_public_url("https://abc.ngrok.app").is_ok());
        assert!(reachable_public_url("https://phone.example.com").is_ok());
    }

    #[test]
    fn credentials_errors_name_the_variables() {
        let names = AccountNames {
            provider: "twilio",
            title: "Twilio",
            id_var: "TWILIO_ACCOUNT_SID",
            token_var: "TWILIO_AUTH_TOKEN",
            number_var: "TWILIO_PHONE_NUMBER",
            numbers_page: "Phone Numbers › Manage › Active numbers",
        };
        let error = names.error(RestError::Status {
            provider: "twilio",
            status: 401,
            message: "Authenticate".into(),
        });
        assert!(error.is_credentials());
        let text = error.to_string();
        assert!(text.contains("TWILIO_ACCOUNT_SID") && text.contains("TWILIO_AUTH_TOKEN"));
        assert!(matches!(
            names.number(None),
            Err(SetupError::NoNumber { .. })
        ));
        assert!(matches!(
            names.number(Some("555-0100")),
            Err(SetupError::BadNumber { .. })
        ));
        assert_eq!(names.number(Some("14155550100")).unwrap(), "+14155550100");
        let missing = names.not_on_account("+14155550100").to_string();
        assert!(missing.contains("+1 415 555 0100") && missing.contains("TWILIO_PHONE_NUMBER"));
    }
}

//! The provider checks of `doctor`: credentials, the number, and where its webhook points.
//!
//! Per configured provider, three lines, each depending on the one before: `<p> account`
//! (the credentials fetch the account), `<p> number` (the configured number is on it) and
//! `<p> webhook` (a call to it reaches `PUBLIC_URL/<p>/answer`). An unconfigured provider
//! gets one `skip` line.

use super::{Check, Outcome};
use crate::config::Config;
use crate::numbers::{AccountNames, NumberSetup, Routing, SetupError, Wanted, readable};
use crate::telephony::registry::Registry;

/// One check per configured provider's credentials, number and webhook.
pub async fn checks(config: &Config, http: &reqwest::Client) -> Vec<Check> {
    let registry = Registry::from_config(config, http);
    let mut lines = Vec::new();
    for provider in crate::telephony::PROVIDERS.iter().map(|p| p.name()) {
        match registry.number_setup(provider) {
            Some(setup) => lines.extend(provider_checks(setup.as_ref(), &config.public_url).await),
            None => lines.push(Check::new(
                format!("{provider} account"),
                Outcome::Skip,
                format!("{provider} is not configured"),
            )),
        }
    }
    lines
}

/// The three lines of one provider.
pub async fn provider_checks(setup: &dyn NumberSetup, public_url: &str) -> Vec<Check> {
    let provider = setup.provider();
    let area = |what: &str| format!("{provider} {what}");
    let account = match setup.check_account().await {
        Ok(summary) => match summary.note {
            Some(note) => Check::new(
                area("account"),
                Outcome::Warn,
                format!("{} accepts the credentials; {note}", summary.description),
            ),
            None => Check::new(
                area("account"),
                Outcome::Ok,
                format!("{} accepts the credentials", summary.description),
            ),
        },
        Err(error) => Check::new(area("account"), Outcome::Fail, error.to_string()),
    };
    if account.outcome == Outcome::Fail {
        return vec![
            account,
            Check::new(area("number"), Outcome::Skip, "needs a working account"),
            Check::new(area("webhook"), Outcome::Skip, "needs a working account"),
        ];
    }
    let (number, routing) = number_check(setup).await;
    let webhook = match routing {
        Some(routing) => webhook_check(&routing, &setup.wanted(public_url), setup.names()),
        None => Check::new(area("webhook"), Outcome::Skip, "needs the number"),
    };
    vec![account, number, webhook]
}

/// The number line, and the number's routing when it was found.
async fn number_check(setup: &dyn NumberSetup) -> (Check, Option<Routing>) {
    let area = format!("{} number", setup.provider());
    match setup.routing().await {
        Ok(routing) => (
            Check::new(
                area,
                Outcome::Ok,
                format!("{} is on the account", readable(&routing.number)),
            ),
            Some(routing),
        ),
        // Outbound calls work without a number of the account's own, so none is a warning.
        Err(error @ SetupError::NoNumber { .. }) => (
            Check::new(
                area,
                Outcome::Warn,
                format!("{error}; until then inbound calls are not checked"),
            ),
            None,
        ),
        Err(error) => (Check::new(area, Outcome::Fail, error.to_string()), None),
    }
}

/// Whether a call to the number reaches `wanted.answer`, and what it reaches instead.
fn webhook_check(routing: &Routing, wanted: &Wanted, names: AccountNames) -> Check {
    let area = format!("{} webhook", names.provider);
    let number = readable(&routing.number);
    if !routing.answers_at(wanted) {
        return Check::new(
            area,
            Outcome::Fail,
            format!(
                "calls to {number} go to {} instead of {}; run `gemini-phone configure` to point it here (or set it in the {} console)",
                routing.describe_answer(),
                wanted.answer,
                names.title
            ),
        );
    }
    if !routing.matches(wanted) {
        let events = routing
            .events
            .as_ref()
            .map_or_else(|| "nowhere".to_owned(), |hook| hook.to_string());
        return Check::new(
            area,
            Outcome::Warn,
            format!(
                "calls to {number} reach {}, but call events go to {events} instead of {}, so records miss how calls end; `gemini-phone configure` fixes it",
                wanted.answer, wanted.events
            ),
        );
    }
    Check::new(
        area,
        Outcome::Ok,
        format!("calls to {number} reach {}", wanted.answer),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numbers::Hook;

    const PLIVO: AccountNames = AccountNames {
        provider: "plivo",
        title: "Plivo",
        id_var: "PLIVO_AUTH_ID",
        token_var: "PLIVO_AUTH_TOKEN",
        number_var: "PLIVO_PHONE_NUMBER",
        numbers_page: "Phone Numbers › Your Numbers",
    };

    fn wanted() -> Wanted {
        Wanted {
            answer: Hook::post("https://x.io/plivo/answer"),
            events: Hook::post("https://x.io/plivo/hangup"),
        }
    }

    fn routing(answer: &str, events: Option<&str>) -> Routing {
        Routing {
            number: "+14155550100".into(),
            answer: Some(Hook::post(answer)),
            events: events.map(Hook::post),
            overridden_by: None,
            held_by: Some("application \"old\" (7)".into()),
        }
    }

    #[test]
    fn a_webhook_elsewhere_fails_and_names_both_urls_and_the_fix() {
        let check = webhook_check(
            &routing("https://old.example/answer", None),
            &wanted(),
            PLIVO,
        );
        assert_eq!(check.outcome, Outcome::Fail);
        assert!(
            check
                .detail
                .contains("application \"old\" (7): https://old.example/answer (POST)"),
            "{}",
            check.detail
        );
        assert!(check.detail.contains("https://x.io/plivo/answer"));
        assert!(check.detail.contains("gemini-phone configure"));
    }

    #[test]
    fn missing_events_warn_and_a_full_match_is_ok() {
        let partial = webhook_check(
            &routing("https://x.io/plivo/answer", None),
            &wanted(),
            PLIVO,
        );
        assert_eq!(partial.outcome, Outcome::Warn);
        let full = webhook_check(
            &routing(
                "https://x.io/plivo/answer",
                Some("https://x.io/plivo/hangup"),
            ),
            &wanted(),
            PLIVO,
        );
        assert_eq!(full.outcome, Outcome::Ok, "{}", full.detail);
        assert!(full.detail.contains("+1 415 555 0100"));
    }
}

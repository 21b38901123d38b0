//! The configuration lines: what the server would refuse at start, and what it accepts but a
//! user should know (no provider, no `API_TOKEN`, unsigned webhooks, plain-http `PUBLIC_URL`).

use super::Check;
use crate::app::read_inbound_prompt;
use crate::config::{AgentKind, Config, ConfigError};
use crate::telephony::registry::Registry;
use crate::telephony::rest::http_client;

const AREA: &str = "configuration";

/// The one line for a configuration the server would refuse: the variable and its fix.
pub(super) fn refused(error: &ConfigError) -> Check {
    Check::fail(
        AREA,
        format!("{error} (set it in .env or the environment, then run doctor again)"),
    )
}

/// An ok line describing the configuration, then one warning per risky choice.
pub(super) fn checks(config: &Config) -> Vec<Check> {
    let mut checks = vec![Check::ok(AREA, summary(config))];
    checks.extend(warnings(config).into_iter().map(|w| Check::warn(AREA, w)));
    checks
}

fn summary(config: &Config) -> String {
    let agent = match &config.gemini {
        Some(gemini) if config.agent == AgentKind::Gemini => {
            format!("agent gemini ({}, voice {})", gemini.model, gemini.voice)
        }
        _ => format!("agent {}", config.agent.as_str()),
    };
    let providers = configured_providers(config);
    format!(
        "{agent}, PUBLIC_URL {}, providers: {}",
        config.public_url,
        if providers.is_empty() {
            "none".to_owned()
        } else {
            providers.join(", ")
        }
    )
}

fn configured_providers(config: &Config) -> Vec<&'static str> {
    let mut names = Vec::new();
    if config.twilio.is_some() {
        names.push("twilio");
    }
    if config.plivo.is_some() {
        names.push("plivo");
    }
    names
}

/// Settings the server accepts that a user should know about, each with what to do.
fn warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    if config.twilio.is_none() && config.plivo.is_none() {
        warnings.push(
            "no provider configured: no call can reach this server; set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN, or PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN"
                .to_owned(),
        );
    }
    if config.api_token.is_none() {
        warnings.push(
            "API_TOKEN is not set: the /calls API and the console answer 503; set it to a long random string to place calls and read records"
                .to_owned(),
        );
    }
    // With no provider at all, the warning above says what matters.
    if config.twilio.is_some() || config.plivo.is_some() {
        warnings.extend(unverified_webhooks(config));
    }
    if !config.public_url.starts_with("https://") {
        warnings.push(format!(
            "PUBLIC_URL {} is not https: Twilio and Plivo need an https URL (and wss for the media stream); use the https address of your tunnel or host",
            config.public_url
        ));
    }
    warnings
}

/// Webhook routes served without a signature check: all of them with
/// `VERIFY_WEBHOOKS=false`, else those of providers without credentials (the server serves
/// every provider's routes).
fn unverified_webhooks(config: &Config) -> Option<String> {
    if !config.verify_webhooks {
        return Some(
            "VERIFY_WEBHOOKS=false: anyone who knows PUBLIC_URL can post webhooks and start calls on your Gemini key; remove it once the provider's auth token is set"
                .to_owned(),
        );
    }
    // The registry is the server's own account of which routes go unchecked.
    // Without HTTPS there is no registry to ask; the `https` line reports that.
    let http = http_client(config.provider_timeout).ok()?;
    let registry = Registry::from_config(config, &http);
    let unverified = registry.unverified();
    (!unverified.is_empty()).then(|| {
        let routes: Vec<String> = unverified.iter().map(|name| format!("/{name}/…")).collect();
        format!(
            "webhooks to {} are not signature-checked (no auth token for {}): anyone may post to them, though a media stream still needs an answer webhook's token",
            routes.join(" and "),
            unverified.join(" or ")
        )
    })
}

/// The inbound prompt's line, and the prompt for the Gemini check when it could be read.
pub(super) struct PromptCheck {
    /// The report line.
    pub check: Check,
    /// The prompt a call would use.
    pub text: Option<String>,
}

/// Reads `PROMPTS_DIR/inbound.md` as the server does at start.
pub(super) fn prompt(config: &Config) -> PromptCheck {
    let path = config.prompts_dir.join("inbound.md");
    match read_inbound_prompt(config) {
        Ok(text) if text.is_empty() => PromptCheck {
            check: Check::skip("prompt", "AGENT=echo: calls use no prompt"),
            text: Some(text),
        },
        Ok(text) => PromptCheck {
            check: Check::ok(
                "prompt",
                format!(
                    "{} ({} characters) for inbound calls",
                    path.display(),
                    text.chars().count()
                ),
            ),
            text: Some(text),
        },
        Err(error) => PromptCheck {
            check: Check::fail("prompt", error.to_string()),
            text: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn warnings_for(vars: &[(&str, &str)]) -> Vec<String> {
        let map: HashMap<&str, &str> = vars.iter().copied().collect();
        let config = Config::from_lookup(|name| map.get(name).map(|v| v.to_string())).unwrap();
        warnings(&config)
    }

    const BOTH_PROVIDERS: &[(&str, &str)] = &[
        ("GEMINI_API_KEY", "k"),
        ("PUBLIC_URL", "https://x.example"),
        ("API_TOKEN", "t"),
        ("TWILIO_ACCOUNT_SID", "AC1"),
        ("TWILIO_AUTH_TOKEN", "t"),
        ("PLIVO_AUTH_ID", "MA1"),
        ("PLIVO_AUTH_TOKEN", "t"),
    ];

    #[test]
    fn a_complete_configuration_has_no_warnings() {
        assert_eq!(warnings_for(BOTH_PROVIDERS), Vec::<String>::new());
    }

    #[test]
    fn each_risky_choice_is_one_warning_naming_its_variable() {
        let minimal = &[("GEMINI_API_KEY", "k"), ("PUBLIC_URL", "http://x.example")];
        let found = warnings_for(minimal);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found[0].contains("TWILIO_ACCOUNT_SID"));
        assert!(found[1].starts_with("API_TOKEN"));
        assert!(found[2].starts_with("PUBLIC_URL"));

        let twilio_only = &BOTH_PROVIDERS[..5];
        let found = warnings_for(twilio_only);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].starts_with("webhooks to /plivo/… are not signature-checked"));

        let mut unchecked = BOTH_PROVIDERS.to_vec();
        unchecked.push(("VERIFY_WEBHOOKS", "false"));
        let found = warnings_for(&unchecked);
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("VERIFY_WEBHOOKS=false"));
    }
}

//! Twilio's side of automatic number set-up: the account fetch, the configured number's
//! IncomingPhoneNumber resource, and its voice and status-callback URLs.
//!
//! `GET /2010-04-01/Accounts/{Sid}.json` proves the credentials;
//! `GET …/IncomingPhoneNumbers.json?PhoneNumber=+1…` finds the number (Twilio matches partial
//! numbers there, so only an exact `phone_number` is taken); `POST
//! …/IncomingPhoneNumbers/{PNSid}.json` sets `VoiceUrl`, `VoiceMethod`, `StatusCallback` and
//! `StatusCallbackMethod`.

use futures_util::future::BoxFuture;
use serde::Deserialize;

use super::rest::{RestError, read_response};
use super::twilio::TwilioClient;
use crate::numbers::{
    AccountNames, AccountSummary, Configured, Hook, NumberSetup, Routing, SetupError, Wanted,
    readable,
};

const NAMES: AccountNames = AccountNames {
    provider: "twilio",
    title: "Twilio",
    id_var: "TWILIO_ACCOUNT_SID",
    token_var: "TWILIO_AUTH_TOKEN",
    number_var: "TWILIO_PHONE_NUMBER",
    numbers_page: "Phone Numbers › Manage › Active numbers",
};

/// True for a Twilio phone-number SID: `PN` followed by 32 hexadecimal digits.
///
/// The SID comes from Twilio's own answer, but it still goes into a REST path, so it is held
/// to the same rule as call SIDs.
pub fn is_number_sid(id: &str) -> bool {
    id.len() == 34 && id.starts_with("PN") && id.bytes().skip(2).all(|b| b.is_ascii_hexdigit())
}

/// What [`is_number_sid`] accepts, in words, for errors.
const NUMBER_SID_FORMAT: &str = "a Twilio phone-number SID (PN followed by 32 hex digits)";

/// The fields of an IncomingPhoneNumber resource that decide where its calls go. Twilio
/// writes unset URLs as `null` or `""`; both read as `None`.
#[derive(Debug, Deserialize)]
struct IncomingNumber {
    sid: String,
    phone_number: String,
    #[serde(default)]
    voice_url: Option<String>,
    #[serde(default)]
    voice_method: Option<String>,
    #[serde(default)]
    status_callback: Option<String>,
    #[serde(default)]
    status_callback_method: Option<String>,
    #[serde(default)]
    voice_application_sid: Option<String>,
    #[serde(default)]
    trunk_sid: Option<String>,
}

/// `Some(text)` for a set value, `None` for `null` or `""`.
fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.trim().is_empty())
}

fn hook(url: &Option<String>, method: &Option<String>) -> Option<Hook> {
    set(url).map(|url| Hook {
        url: url.to_owned(),
        // Twilio's default method for both URLs is POST.
        method: set(method).unwrap_or("POST").to_ascii_uppercase(),
    })
}

impl IncomingNumber {
    fn routing(&self) -> Routing {
        let overridden_by = if let Some(trunk) = set(&self.trunk_sid) {
            Some(format!(
                "SIP trunk {trunk}, which takes its calls instead of the voice URL"
            ))
        } else {
            set(&self.voice_application_sid).map(|app| {
                format!("TwiML app {app}, whose voice URL answers instead of the number's")
            })
        };
        Routing {
            number: self.phone_number.clone(),
            answer: hook(&self.voice_url, &self.voice_method),
            events: hook(&self.status_callback, &self.status_callback_method),
            overridden_by,
            held_by: None,
        }
    }
}

/// Each difference between `now` and `wanted`, in words.
fn differences(number: &IncomingNumber, wanted: &Wanted) -> Vec<String> {
    let was = |value: Option<&str>| value.unwrap_or("unset").to_owned();
    let now = number.routing();
    let mut changes = Vec::new();
    if let Some(app) = set(&number.voice_application_sid) {
        changes.push(format!("TwiML app {app} detached"));
    }
    match &now.answer {
        Some(hook) if hook.url == wanted.answer.url => {}
        other => changes.push(format!(
            "VoiceUrl was {}",
            was(other.as_ref().map(|h| h.url.as_str()))
        )),
    }
    if !set(&number.voice_method)
        .unwrap_or("POST")
        .eq_ignore_ascii_case("POST")
    {
        changes.push(format!(
            "VoiceMethod was {}",
            was(set(&number.voice_method))
        ));
    }
    match &now.events {
        Some(hook) if hook.url == wanted.events.url => {}
        other => changes.push(format!(
            "StatusCallback was {}",
            was(other.as_ref().map(|h| h.url.as_str()))
        )),
    }
    if !set(&number.status_callback_method)
        .unwrap_or("POST")
        .eq_ignore_ascii_case("POST")
    {
        changes.push(format!(
            "StatusCallbackMethod was {}",
            was(set(&number.status_callback_method))
        ));
    }
    changes
}

impl TwilioClient {
    /// The IncomingPhoneNumber whose `phone_number` is exactly `number` (E.164).
    async fn find_number(&self, number: &str) -> Result<IncomingNumber, SetupError> {
        let url = self.account_url(&["IncomingPhoneNumbers.json"])?;
        let request = self
            .authed(self.http.get(url))
            .query(&[("PhoneNumber", number)]);
        let (_, body) = read_response("twilio", request.send().await)
            .await
            .map_err(|e| NAMES.error(e))?;
        let listed = body
            .get("incoming_phone_numbers")
            .cloned()
            .ok_or_else(|| unexpected("no `incoming_phone_numbers` in the number list"))?;
        let numbers: Vec<IncomingNumber> = serde_json::from_value(listed)
            .map_err(|e| unexpected(&format!("unreadable number list: {e}")))?;
        // The filter matches partial numbers; anything but the configured one is left alone.
        let found = numbers
            .into_iter()
            .find(|n| n.phone_number == number)
            .ok_or_else(|| NAMES.not_on_account(number))?;
        if !is_number_sid(&found.sid) {
            return Err(RestError::invalid_id("twilio", &found.sid, NUMBER_SID_FORMAT).into());
        }
        Ok(found)
    }

    async fn update_number(
        &self,
        number: &IncomingNumber,
        wanted: &Wanted,
    ) -> Result<(), SetupError> {
        let url = self.account_url(&["IncomingPhoneNumbers", &format!("{}.json", number.sid)])?;
        let mut form = vec![
            ("VoiceUrl", wanted.answer.url.as_str()),
            ("VoiceMethod", wanted.answer.method.as_str()),
            ("StatusCallback", wanted.events.url.as_str()),
            ("StatusCallbackMethod", wanted.events.method.as_str()),
        ];
        // A TwiML app on the number answers instead of VoiceUrl; an empty value detaches it.
        if set(&number.voice_application_sid).is_some() {
            form.push(("VoiceApplicationSid", ""));
        }
        read_response("twilio", self.post_form(url, &form).send().await)
            .await
            .map(drop)
            .map_err(|e| NAMES.error(e))
    }
}

fn unexpected(detail: &str) -> SetupError {
    SetupError::Rest(RestError::Unexpected {
        provider: "twilio",
        detail: detail.to_owned(),
    })
}

impl NumberSetup for TwilioClient {
    fn provider(&self) -> &'static str {
        "twilio"
    }

    fn names(&self) -> AccountNames {
        NAMES
    }

    fn configured_number(&self) -> Option<&str> {
        self.config.phone_number.as_deref()
    }

    fn wanted(&self, public_url: &str) -> Wanted {
        Wanted {
            answer: Hook::post(format!("{public_url}/twilio/answer")),
            events: Hook::post(format!("{public_url}/twilio/status")),
        }
    }

    fn check_account(&self) -> BoxFuture<'_, Result<AccountSummary, SetupError>> {
        Box::pin(async move {
            let sid = self.config.account_sid.as_str();
            let url = super::rest::api_url(
                "twilio",
                "TWILIO_API_URL",
                &self.config.api_url,
                &["2010-04-01", "Accounts", &format!("{sid}.json")],
            )?;
            let (_, account) =
                read_response("twilio", self.authed(self.http.get(url)).send().await)
                    .await
                    .map_err(|e| NAMES.error(e))?;
            let text = |key: &str| {
                account
                    .get(key)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
            };
            let status = text("status");
            if !status.is_empty() && status != "active" {
                return Err(SetupError::AccountInactive {
                    provider: NAMES.title,
                    status: status.to_owned(),
                });
            }
            let note = text("type").eq_ignore_ascii_case("trial").then(|| {
                "trial account: Twilio plays its trial notice to callers before the agent answers, and calls out reach verified numbers only".to_owned()
            });
            Ok(AccountSummary {
                description: format!("account {:?} ({sid})", text("friendly_name")),
                note,
            })
        })
    }

    fn routing(&self) -> BoxFuture<'_, Result<Routing, SetupError>> {
        Box::pin(async move {
            let number = NAMES.number(self.configured_number())?;
            Ok(self.find_number(&number).await?.routing())
        })
    }

    fn configure<'a>(
        &'a self,
        wanted: &'a Wanted,
    ) -> BoxFuture<'a, Result<Configured, SetupError>> {
        Box::pin(async move {
            let number = NAMES.number(self.configured_number())?;
            let found = self.find_number(&number).await?;
            if let Some(trunk) = set(&found.trunk_sid) {
                return Err(SetupError::Unsupported {
                    number: readable(&number),
                    reason: format!(
                        "it belongs to SIP trunk {trunk}; remove it from the trunk in the Twilio console (Elastic SIP Trunking › Numbers), then run configure again"
                    ),
                });
            }
            let changes = if found.routing().matches(wanted) {
                Vec::new()
            } else {
                self.update_number(&found, wanted).await?;
                differences(&found, wanted)
            };
            Ok(Configured {
                number,
                answer_url: wanted.answer.url.clone(),
                changes,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(fields: serde_json::Value) -> IncomingNumber {
        let mut base = serde_json::json!({
            "sid": "PN0123456789abcdef0123456789abcdef",
            "phone_number": "+14155550100",
            "voice_url": null, "voice_method": "POST",
            "status_callback": "", "status_callback_method": "POST",
            "voice_application_sid": "", "trunk_sid": null,
        });
        if let (Some(base), Some(fields)) = (base.as_object_mut(), fields.as_object()) {
            base.extend(fields.clone());
        }
        serde_json::from_value(base).unwrap()
    }

    fn wanted() -> Wanted {
        TwilioClient::new(
            crate::config::TwilioConfig {
                account_sid: "AC1".into(),
                auth_token: crate::config::Secret::new("t"),
                phone_number: None,
                api_url: "https://api.twilio.com".into(),
            },
            crate::telephony::rest::http_client(std::time::Duration::from_secs(1))
                .expect("an HTTP client"),
        )
        .wanted("https://x.io")
    }

    #[test]
    fn number_sids_are_pn_and_32_hex_digits() {
        assert!(is_number_sid("PN0123456789abcdef0123456789abcdef"));
        for bad in [
            "",
            "PN1",
            "CA0123456789abcdef0123456789abcdef",
            "PN0123456789abcdef0123456789abcde/",
            "PN0123456789abcdef0123456789abcdef0",
        ] {
            assert!(!is_number_sid(bad), "{bad:?}");
        }
    }

    #[test]
    fn empty_and_null_urls_read_as_unset() {
        let routing = number(serde_json::json!({})).routing();
        assert_eq!((routing.answer, routing.events), (None, None));
        assert_eq!(routing.overridden_by, None);
    }

    #[test]
    fn an_app_or_a_trunk_overrides_the_voice_url() {
        let wanted = wanted();
        let app = number(serde_json::json!({
            "voice_url": wanted.answer.url, "status_callback": wanted.events.url,
            "voice_application_sid": "AP0123456789abcdef0123456789abcdef"}));
        assert!(!app.routing().answers_at(&wanted));
        assert_eq!(
            differences(&app, &wanted),
            ["TwiML app AP0123456789abcdef0123456789abcdef detached"]
        );
        let trunk = number(serde_json::json!({"trunk_sid": "TK1"}));
        assert!(trunk.routing().describe_answer().contains("SIP trunk TK1"));
    }

    #[test]
    fn differences_name_each_field_and_its_old_value() {
        let wanted = wanted();
        let old = number(serde_json::json!({
            "voice_url": "https://old.example/voice", "voice_method": "GET"}));
        assert_eq!(
            differences(&old, &wanted),
            [
                "VoiceUrl was https://old.example/voice",
                "VoiceMethod was GET",
                "StatusCallback was unset",
            ]
        );
        let done = number(serde_json::json!({
            "voice_url": wanted.answer.url, "status_callback": wanted.events.url}));
        assert!(done.routing().matches(&wanted));
        assert!(differences(&done, &wanted).is_empty());
    }
}

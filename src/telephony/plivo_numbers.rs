//! Plivo's side of automatic number set-up: the account fetch, the configured number, and
//! the application that holds its answer and hang-up URLs.
//!
//! A Plivo number has no URLs of its own: `GET /v1/Account/{id}/Number/{number}/` names its
//! application (`application`, a resource URI ending in the app id), and the application has
//! `answer_url` and `hangup_url`. Set-up finds or creates the application named
//! [`APP_NAME`](crate::numbers::APP_NAME) (`GET`/`POST …/Application/`), updates it when its
//! URLs differ (`POST …/Application/{app_id}/`) and attaches the number to it (`POST
//! …/Number/{number}/` with `app_id`).

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use super::plivo::{PlivoClient, plivo_number};
use super::rest::{RestError, read_optional, read_response};
use crate::numbers::{
    APP_NAME, AccountNames, AccountSummary, Configured, Hook, NumberSetup, Routing, SetupError,
    Wanted,
};

const NAMES: AccountNames = AccountNames {
    provider: "plivo",
    title: "Plivo",
    id_var: "PLIVO_AUTH_ID",
    token_var: "PLIVO_AUTH_TOKEN",
    number_var: "PLIVO_PHONE_NUMBER",
    numbers_page: "Phone Numbers › Your Numbers",
};

/// Applications asked for per page: the most Plivo's list allows.
const PAGE_SIZE: usize = 20;
/// Pages read at most while looking for our application, so that a list that never ends
/// (a provider fault) cannot keep `configure` busy.
const MAX_PAGES: usize = 50;

/// True for a Plivo application id: decimal digits (`20468599130939380`).
pub fn is_app_id(id: &str) -> bool {
    (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit())
}

/// What [`is_app_id`] accepts, in words, for errors.
const APP_ID_FORMAT: &str = "a Plivo application id (decimal digits)";

/// The fields of an application that decide where its calls go.
#[derive(Debug, Clone, Deserialize)]
struct Application {
    app_id: String,
    #[serde(default)]
    app_name: String,
    #[serde(default)]
    answer_url: Option<String>,
    #[serde(default)]
    answer_method: Option<String>,
    #[serde(default)]
    hangup_url: Option<String>,
    #[serde(default)]
    hangup_method: Option<String>,
}

impl Application {
    fn hooks(&self) -> (Option<Hook>, Option<Hook>) {
        let hook = |url: &Option<String>, method: &Option<String>| {
            url.as_deref()
                .filter(|u| !u.trim().is_empty())
                .map(|url| Hook {
                    url: url.to_owned(),
                    // Plivo's default method for both URLs is POST.
                    method: method
                        .as_deref()
                        .filter(|m| !m.is_empty())
                        .unwrap_or("POST")
                        .to_ascii_uppercase(),
                })
        };
        (
            hook(&self.answer_url, &self.answer_method),
            hook(&self.hangup_url, &self.hangup_method),
        )
    }

    fn serves(&self, wanted: &Wanted) -> bool {
        match self.hooks() {
            (Some(answer), Some(hangup)) => {
                answer.same_as(&wanted.answer) && hangup.same_as(&wanted.events)
            }
            _ => false,
        }
    }

    fn label(&self) -> String {
        format!("application {:?} ({})", self.app_name, self.app_id)
    }
}

/// The body that makes an application serve `wanted`.
fn app_body(wanted: &Wanted) -> Value {
    json!({
        "answer_url": wanted.answer.url,
        "answer_method": wanted.answer.method,
        "hangup_url": wanted.events.url,
        "hangup_method": wanted.events.method,
    })
}

/// The app id at the end of a number's `application` resource URI
/// (`/v1/Account/MA…/Application/29986316244302815/`); `None` when the number has none.
fn attached_app_id(number: &Value) -> Result<Option<String>, SetupError> {
    let Some(uri) = number
        .get("application")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
    else {
        return Ok(None);
    };
    let id = uri
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    if !is_app_id(id) {
        return Err(RestError::invalid_id("plivo", id, APP_ID_FORMAT).into());
    }
    Ok(Some(id.to_owned()))
}

fn unexpected(detail: String) -> SetupError {
    SetupError::Rest(RestError::Unexpected {
        provider: "plivo",
        detail,
    })
}

impl PlivoClient {
    /// The number resource of `e164`; [`SetupError::NotOnAccount`] when Plivo does not know it.
    async fn number_resource(&self, e164: &str) -> Result<Value, SetupError> {
        let url = self.account_url(&["Number", plivo_number(e164)])?;
        read_optional("plivo", self.authed(self.http.get(url)).send().await)
            .await
            .map_err(|e| NAMES.error(e))?
            .ok_or_else(|| NAMES.not_on_account(e164))
    }

    /// The application `app_id`; `None` when it no longer exists.
    async fn application(&self, app_id: &str) -> Result<Option<Application>, SetupError> {
        if !is_app_id(app_id) {
            return Err(RestError::invalid_id("plivo", app_id, APP_ID_FORMAT).into());
        }
        let url = self.account_url(&["Application", app_id])?;
        let Some(body) = read_optional("plivo", self.authed(self.http.get(url)).send().await)
            .await
            .map_err(|e| NAMES.error(e))?
        else {
            return Ok(None);
        };
        serde_json::from_value(body)
            .map(Some)
            .map_err(|e| unexpected(format!("unreadable application {app_id}: {e}")))
    }

    /// Our application ([`APP_NAME`]), read page by page from the account's list.
    async fn our_application(&self) -> Result<Option<Application>, SetupError> {
        let url = self.account_url(&["Application"])?;
        for page in 0..MAX_PAGES {
            let offset = (page * PAGE_SIZE).to_string();
            let limit = PAGE_SIZE.to_string();
            let request = self
                .authed(self.http.get(url.clone()))
                .query(&[("limit", limit.as_str()), ("offset", offset.as_str())]);
            let (_, body) = read_response("plivo", request.send().await)
                .await
                .map_err(|e| NAMES.error(e))?;
            let objects: Vec<Application> =
                serde_json::from_value(body.get("objects").cloned().unwrap_or(Value::Null))
                    .map_err(|e| unexpected(format!("unreadable application list: {e}")))?;
            if let Some(ours) = objects.iter().find(|app| app.app_name == APP_NAME) {
                return Ok(Some(ours.clone()));
            }
            let more = body
                .get("meta")
                .and_then(|m| m.get("next"))
                .is_some_and(|next| !next.is_null());
            if objects.is_empty() || !more {
                break;
            }
        }
        Ok(None)
    }

    /// POSTs `body` to `…/{resource…}/`.
    async fn post(&self, resource: &[&str], body: &Value) -> Result<Value, SetupError> {
        let url = self.account_url(resource)?;
        read_response(
            "plivo",
            self.authed(self.http.post(url)).json(body).send().await,
        )
        .await
        .map(|(_, body)| body)
        .map_err(|e| NAMES.error(e))
    }

    /// Creates our application for `wanted`; returns it.
    async fn create_application(&self, wanted: &Wanted) -> Result<Application, SetupError> {
        let mut body = app_body(wanted);
        body["app_name"] = json!(APP_NAME);
        let created = self.post(&["Application"], &body).await?;
        let app_id = created
            .get("app_id")
            .and_then(Value::as_str)
            .ok_or_else(|| unexpected("no `app_id` in the created application".to_owned()))?;
        if !is_app_id(app_id) {
            return Err(RestError::invalid_id("plivo", app_id, APP_ID_FORMAT).into());
        }
        Ok(Application {
            app_id: app_id.to_owned(),
            app_name: APP_NAME.to_owned(),
            answer_url: Some(wanted.answer.url.clone()),
            answer_method: Some(wanted.answer.method.clone()),
            hangup_url: Some(wanted.events.url.clone()),
            hangup_method: Some(wanted.events.method.clone()),
        })
    }

    /// Our application, made to serve `wanted`: found and updated if its URLs differ, or
    /// created. Says what it changed in `changes`.
    async fn serving_application(
        &self,
        wanted: &Wanted,
        changes: &mut Vec<String>,
    ) -> Result<Application, SetupError> {
        let Some(app) = self.our_application().await? else {
            let app = self.create_application(wanted).await?;
            changes.push(format!("created {}", app.label()));
            return Ok(app);
        };
        if app.serves(wanted) {
            return Ok(app);
        }
        self.post(&["Application", &app.app_id], &app_body(wanted))
            .await?;
        let was = app
            .hooks()
            .0
            .map_or_else(|| "unset".to_owned(), |hook| hook.to_string());
        changes.push(format!("{} updated, its answer URL was {was}", app.label()));
        Ok(app)
    }
}

impl NumberSetup for PlivoClient {
    fn provider(&self) -> &'static str {
        "plivo"
    }

    fn names(&self) -> AccountNames {
        NAMES
    }

    fn configured_number(&self) -> Option<&str> {
        self.config.phone_number.as_deref()
    }

    fn wanted(&self, public_url: &str) -> Wanted {
        Wanted {
            answer: Hook::post(format!("{public_url}/plivo/answer")),
            events: Hook::post(format!("{public_url}/plivo/hangup")),
        }
    }

    fn check_account(&self) -> BoxFuture<'_, Result<AccountSummary, SetupError>> {
        Box::pin(async move {
            let url = self.account_url(&[])?;
            let (_, account) = read_response("plivo", self.authed(self.http.get(url)).send().await)
                .await
                .map_err(|e| NAMES.error(e))?;
            let name = account
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            Ok(AccountSummary {
                description: format!("account {name:?} ({})", self.config.auth_id),
                note: None,
            })
        })
    }

    fn routing(&self) -> BoxFuture<'_, Result<Routing, SetupError>> {
        Box::pin(async move {
            let number = NAMES.number(self.configured_number())?;
            let resource = self.number_resource(&number).await?;
            let (answer, events, held_by) = match attached_app_id(&resource)? {
                None => (None, None, Some("no application attached".to_owned())),
                Some(app_id) => match self.application(&app_id).await? {
                    Some(app) => {
                        let (answer, events) = app.hooks();
                        (answer, events, Some(app.label()))
                    }
                    None => (
                        None,
                        None,
                        Some(format!("application {app_id}, which no longer exists")),
                    ),
                },
            };
            Ok(Routing {
                number,
                answer,
                events,
                overridden_by: None,
                held_by,
            })
        })
    }

    fn configure<'a>(
        &'a self,
        wanted: &'a Wanted,
    ) -> BoxFuture<'a, Result<Configured, SetupError>> {
        Box::pin(async move {
            let number = NAMES.number(self.configured_number())?;
            // The number first: a number not on the account must not leave an application
            // behind.
            let resource = self.number_resource(&number).await?;
            let attached = attached_app_id(&resource)?;
            // An application the user made that already serves this server is left alone.
            if let Some(app_id) = &attached
                && self
                    .application(app_id)
                    .await?
                    .is_some_and(|app| app.serves(wanted))
            {
                return Ok(Configured {
                    number,
                    answer_url: wanted.answer.url.clone(),
                    changes: Vec::new(),
                });
            }
            let mut changes = Vec::new();
            let app = self.serving_application(wanted, &mut changes).await?;
            if attached.as_deref() != Some(app.app_id.as_str()) {
                self.post(
                    &["Number", plivo_number(&number)],
                    &json!({"app_id": app.app_id}),
                )
                .await?;
                changes.push(format!(
                    "attached to {}, was {}",
                    app.label(),
                    attached.map_or_else(|| "none".to_owned(), |id| format!("application {id}"))
                ));
            }
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

    #[test]
    fn app_ids_are_digits() {
        assert!(is_app_id("20468599130939380"));
        for bad in ["", "abc", "1/../2", "12 3", &"9".repeat(33)] {
            assert!(!is_app_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_attached_app_is_read_from_the_resource_uri() {
        let number = json!({"number": "17609915566",
            "application": "/v1/Account/MANWVLYTK4ZWU1YTY4ZT/Application/29986316244302815/"});
        assert_eq!(
            attached_app_id(&number).unwrap().as_deref(),
            Some("29986316244302815")
        );
        assert_eq!(
            attached_app_id(&json!({"application": null})).unwrap(),
            None
        );
        assert_eq!(attached_app_id(&json!({})).unwrap(), None);
        let forged = json!({"application": "/v1/Account/MA1/Application/..%2FNumber/"});
        assert!(matches!(
            attached_app_id(&forged),
            Err(SetupError::Rest(RestError::InvalidId { .. }))
        ));
    }

    #[test]
    fn an_app_serves_only_with_both_urls_and_methods() {
        let wanted = Wanted {
            answer: Hook::post("https://x.io/plivo/answer"),
            events: Hook::post("https://x.io/plivo/hangup"),
        };
        let mut app = Application {
            app_id: "1".into(),
            app_name: APP_NAME.into(),
            answer_url: Some(wanted.answer.url.clone()),
            answer_method: Some("post".into()),
            hangup_url: Some(wanted.events.url.clone()),
            hangup_method: None,
        };
        assert!(app.serves(&wanted));
        app.answer_method = Some("GET".into());
        assert!(!app.serves(&wanted));
        app.answer_method = None;
        app.hangup_url = Some(String::new());
        assert!(!app.serves(&wanted));
    }
}

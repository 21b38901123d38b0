//! User credentials (`"type": "authorized_user"`, what `gcloud auth application-default
//! login` writes): the OAuth refresh-token grant, a form POST to the token endpoint.

use std::sync::Arc;
use std::time::Duration;

use gcp_auth::Token;
use serde::Deserialize;

use super::{AuthError, CachedToken, token_from_answer};
use crate::config::Secret;

/// Google's token endpoint, for files that do not name their own `token_uri`.
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// What an `authorized_user` file holds that the grant needs.
#[derive(Deserialize)]
struct AuthorizedUserFile {
    client_id: String,
    client_secret: String,
    refresh_token: String,
    /// Absent in gcloud's files; honoured when present (and how tests reach a fake).
    token_uri: Option<String>,
}

/// Exchanges the refresh token for access tokens, one at a time, caching each.
pub(super) struct RefreshTokenGrant {
    client_id: String,
    client_secret: Secret,
    refresh_token: Secret,
    token_uri: String,
    http: reqwest::Client,
    cached: CachedToken,
}

impl RefreshTokenGrant {
    /// From the parsed file; the error says which field is missing and how to get a good
    /// file.
    pub(super) fn from_json(json: serde_json::Value, timeout: Duration) -> Result<Self, String> {
        let file: AuthorizedUserFile = serde_json::from_value(json).map_err(|e| {
            format!(
                "not usable user credentials ({e}); run `gcloud auth application-default login` to write a new file"
            )
        })?;
        let http = crate::telephony::rest::http_client(timeout)
            .map_err(|e| format!("cannot set up HTTPS for the token endpoint ({e})"))?;
        Ok(RefreshTokenGrant {
            client_id: file.client_id,
            client_secret: Secret::new(file.client_secret),
            refresh_token: Secret::new(file.refresh_token),
            token_uri: file
                .token_uri
                .filter(|uri| !uri.is_empty())
                .unwrap_or_else(|| DEFAULT_TOKEN_URI.to_owned()),
            http,
            cached: CachedToken::default(),
        })
    }

    /// The cached token while fresh, else a new one from the token endpoint.
    pub(super) async fn token(&self) -> Result<Arc<Token>, AuthError> {
        self.cached.get_or_fetch(|| self.fetch()).await
    }

    async fn fetch(&self) -> Result<Token, AuthError> {
        let endpoint = &self.token_uri;
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
            ("refresh_token", self.refresh_token.expose()),
        ];
        let answer = self
            .http
            .post(endpoint)
            .form(&form)
            .send()
            .await
            // Without the URL: reqwest's errors carry it, and ours names it once.
            .map_err(|e| {
                AuthError::Token(format!(
                    "cannot reach the token endpoint {endpoint} ({})",
                    e.without_url()
                ))
            })?;
        let status = answer.status();
        let body = answer.bytes().await.map_err(|e| {
            AuthError::Token(format!(
                "the token endpoint {endpoint} broke off its answer ({})",
                e.without_url()
            ))
        })?;
        if !status.is_success() {
            return Err(AuthError::Token(refused(status.as_u16(), &body, endpoint)));
        }
        token_from_answer(&body, &format!("the token endpoint {endpoint}"))
    }
}

/// A refused grant in words: Google's `error` and `error_description`, and the fix.
fn refused(status: u16, body: &[u8], endpoint: &str) -> String {
    #[derive(Deserialize)]
    struct OAuthError {
        error: String,
        error_description: Option<String>,
    }
    let why = match serde_json::from_slice::<OAuthError>(body) {
        Ok(e) => match e.error_description {
            Some(description) => format!("{}: {description}", e.error),
            None => e.error,
        },
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    };
    let fix = if why.starts_with("invalid_grant") || why.starts_with("invalid_client") {
        "; the login has expired or was revoked: run `gcloud auth application-default login` again"
    } else {
        ""
    };
    format!("the token endpoint {endpoint} refused the refresh token (HTTP {status} {why}){fix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_login_says_to_log_in_again() {
        let line = refused(
            400,
            br#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#,
            DEFAULT_TOKEN_URI,
        );
        assert!(
            line.contains("HTTP 400 invalid_grant: Token has been expired or revoked."),
            "{line}"
        );
        assert!(
            line.contains("gcloud auth application-default login` again"),
            "{line}"
        );
        let outage = refused(503, b"upstream unavailable", DEFAULT_TOKEN_URI);
        assert!(
            outage.ends_with("(HTTP 503 upstream unavailable)"),
            "{outage}"
        );
    }

    #[test]
    fn the_token_uri_defaults_to_google() {
        let json = serde_json::json!({
            "type": "authorized_user", "client_id": "c", "client_secret": "s", "refresh_token": "r"
        });
        let grant = RefreshTokenGrant::from_json(json, Duration::from_secs(1)).unwrap();
        assert_eq!(grant.token_uri, DEFAULT_TOKEN_URI);
    }
}

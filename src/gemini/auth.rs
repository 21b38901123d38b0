//! Google Cloud credentials for Gemini on Vertex AI: Application Default Credentials through
//! the `gcp_auth` crate, one cached access token shared by every call.
//!
//! Where the credentials come from, in order: the service-account key file named by
//! `GOOGLE_APPLICATION_CREDENTIALS`; else gcloud's ADC file
//! (`~/.config/gcloud/application_default_credentials.json`, written by
//! `gcloud auth application-default login`); else the metadata server on Cloud Run, GCE and
//! GKE; else the `gcloud` command. `gcp_auth` signs the service-account JWT and caches each
//! token until shortly before it expires; a background task here asks for the token again
//! just after that point, so the refresh happens off the call path and a call starting then
//! finds a fresh token instead of waiting for one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gcp_auth::{CustomServiceAccount, TokenProvider};

use crate::config::Secret;

/// The OAuth scope Vertex AI accepts.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// `gcp_auth` treats a token as expired this long before its real expiry (its own margin);
/// the refresher wakes a little after that point so that its request is the one that refreshes.
const CRATE_EXPIRY_MARGIN: Duration = Duration::from_secs(20);
const REFRESH_AFTER_MARGIN: Duration = Duration::from_secs(2);
/// How long the refresher waits before trying again after a failed refresh.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// Why no access token could be had.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No usable credentials, or a credentials file that cannot be used.
    #[error("no usable Google Cloud credentials: {0}")]
    Credentials(String),
    /// The credentials were found but the token endpoint refused or failed.
    #[error("cannot get a Google Cloud access token: {0}")]
    Token(String),
    /// [`SharedCredentials::load`] was never called (a wiring mistake, not a user error).
    #[error("Google Cloud credentials were not loaded at start-up")]
    NotLoaded,
}

/// What a Vertex request is authorised with.
pub struct Bearer {
    /// The OAuth access token for `Authorization: Bearer`.
    pub token: Secret,
    /// The project to bill, when the credentials name one (`x-goog-user-project`).
    pub quota_project: Option<String>,
}

/// A handle to the process's one token source. Clones share it; it is empty until
/// [`load`](Self::load) runs at start-up, so configuration can be read without I/O.
#[derive(Clone, Default)]
pub struct SharedCredentials(Arc<OnceLock<Arc<AccessTokens>>>);

impl fmt::Debug for SharedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.0.get() {
            Some(tokens) => tokens.source,
            None => "not loaded",
        };
        write!(f, "SharedCredentials({state})")
    }
}

impl SharedCredentials {
    /// Finds the credentials (from `key_file` if given, else by ADC), fetches the first
    /// token, so a bad setup stops start-up, and starts the background refresher.
    /// Loading twice keeps the first source.
    pub async fn load(&self, key_file: Option<&Path>) -> Result<(), AuthError> {
        if self.0.get().is_some() {
            return Ok(());
        }
        let tokens = Arc::new(AccessTokens::discover(key_file).await?);
        let first = tokens.token().await?;
        if self.0.set(Arc::clone(&tokens)).is_ok() {
            tokio::spawn(keep_fresh(Arc::downgrade(&tokens), first));
            tracing::info!(
                source = tokens.source,
                quota_project = tokens.quota_project.as_deref(),
                "Google Cloud credentials loaded"
            );
        }
        Ok(())
    }

    /// The current token (cached; fetched only when the cached one is about to expire).
    pub async fn bearer(&self) -> Result<Bearer, AuthError> {
        let tokens = self.0.get().ok_or(AuthError::NotLoaded)?;
        let token = tokens.token().await?;
        Ok(Bearer {
            token: Secret::new(token.as_str()),
            quota_project: tokens.quota_project.clone(),
        })
    }
}

/// The token provider and what the credentials file says besides the key.
struct AccessTokens {
    provider: Arc<dyn TokenProvider>,
    quota_project: Option<String>,
    /// Which kind of credentials, for logs and `doctor`.
    source: &'static str,
}

impl AccessTokens {
    async fn discover(key_file: Option<&Path>) -> Result<Self, AuthError> {
        if let Some(path) = key_file {
            return Self::from_key_file(path);
        }
        let provider = gcp_auth::provider().await.map_err(|e| {
            AuthError::Credentials(format!(
                "{e}; run `gcloud auth application-default login`, set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or run on Google Cloud with a service account"
            ))
        })?;
        Ok(Self {
            provider,
            // Only gcloud's user file can name a quota project; the metadata server never does.
            quota_project: gcloud_adc_file()
                .and_then(|path| read_credentials_json(&path).ok())
                .and_then(|json| quota_project(&json)),
            source: "application default credentials",
        })
    }

    fn from_key_file(path: &Path) -> Result<Self, AuthError> {
        let shown = path.display();
        let json = read_credentials_json(path).map_err(|e| {
            AuthError::Credentials(format!(
                "GOOGLE_APPLICATION_CREDENTIALS: cannot read {shown} ({e})"
            ))
        })?;
        match json.get("type").and_then(|t| t.as_str()) {
            Some("service_account") => {}
            Some("authorized_user") => {
                return Err(AuthError::Credentials(format!(
                    "GOOGLE_APPLICATION_CREDENTIALS: {shown} holds user credentials; unset the variable (gcloud's own file is found where `gcloud auth application-default login` writes it) or point it at a service-account key"
                )));
            }
            other => {
                return Err(AuthError::Credentials(format!(
                    "GOOGLE_APPLICATION_CREDENTIALS: {shown} is not a service-account key (type {other:?}); download a JSON key for the service account"
                )));
            }
        }
        let account = CustomServiceAccount::from_file(path).map_err(|e| {
            AuthError::Credentials(format!("GOOGLE_APPLICATION_CREDENTIALS: {shown}: {e}"))
        })?;
        Ok(Self {
            provider: Arc::new(account),
            quota_project: quota_project(&json),
            source: "service-account key file",
        })
    }

    async fn token(&self) -> Result<Arc<gcp_auth::Token>, AuthError> {
        // The crate's errors name the endpoint and status, never the token or the key.
        self.provider
            .token(&[CLOUD_PLATFORM_SCOPE])
            .await
            .map_err(|e| AuthError::Token(with_causes(&e)))
    }
}

/// Refreshes the shared token just after `gcp_auth` stops trusting it, until the token
/// source is dropped.
async fn keep_fresh(tokens: Weak<AccessTokens>, mut current: Arc<gcp_auth::Token>) {
    loop {
        tokio::time::sleep(until_refresh(&current)).await;
        let Some(source) = tokens.upgrade() else {
            return;
        };
        match source.token().await {
            Ok(fresh) => current = fresh,
            Err(error) => {
                tracing::warn!(%error, "refreshing the Google Cloud access token failed; retrying");
                drop(source);
                tokio::time::sleep(RETRY_AFTER_FAILURE).await;
            }
        }
    }
}

/// Time until `gcp_auth` considers `token` expired, plus a little.
fn until_refresh(token: &gcp_auth::Token) -> Duration {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let expires_in_ms = token.expires_at().timestamp_millis() - now_ms;
    let stale_in =
        Duration::from_millis(expires_in_ms.max(0) as u64).saturating_sub(CRATE_EXPIRY_MARGIN);
    stale_in + REFRESH_AFTER_MARGIN
}

/// An error and its causes on one line (`gcp_auth` keeps the endpoint's answer in a cause).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        line.push_str(": ");
        line.push_str(&inner.to_string());
        cause = inner.source();
    }
    line
}

fn read_credentials_json(path: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))
}

fn quota_project(json: &serde_json::Value) -> Option<String> {
    json.get("quota_project_id")
        .and_then(|q| q.as_str())
        .filter(|q| !q.is_empty())
        .map(str::to_owned)
}

/// Where `gcloud auth application-default login` writes its file.
fn gcloud_adc_file() -> Option<PathBuf> {
    let config_dir = std::env::var_os("CLOUDSDK_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::home_dir().map(|home| home.join(".config").join("gcloud")))?;
    Some(config_dir.join("application_default_credentials.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_project_is_read_when_named() {
        let json = serde_json::json!({"type": "authorized_user", "quota_project_id": "billing-1"});
        assert_eq!(quota_project(&json).as_deref(), Some("billing-1"));
        assert_eq!(
            quota_project(&serde_json::json!({"quota_project_id": ""})),
            None
        );
    }

    #[tokio::test]
    async fn a_user_credentials_file_is_refused_with_its_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("adc.json");
        std::fs::write(&path, r#"{"type":"authorized_user","refresh_token":"r"}"#).unwrap();
        let err = SharedCredentials::default()
            .load(Some(&path))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("holds user credentials"), "{err}");
        let missing = SharedCredentials::default()
            .load(Some(&dir.path().join("none.json")))
            .await
            .unwrap_err();
        assert!(missing.to_string().contains("cannot read"), "{missing}");
    }

    #[tokio::test]
    async fn unloaded_credentials_say_so() {
        let err = SharedCredentials::default().bearer().await.err().unwrap();
        assert!(matches!(err, AuthError::NotLoaded));
    }
}

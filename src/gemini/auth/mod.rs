//! Google Cloud credentials for Gemini on Vertex AI: Application Default Credentials (ADC),
//! one cached access token shared by every call.
//!
//! Where the credentials come from, in the standard ADC order (see [`CredentialSources`]):
//! the file named by `GOOGLE_APPLICATION_CREDENTIALS` (a service-account key or an
//! `authorized_user` file); else gcloud's ADC file, written by
//! `gcloud auth application-default login`; else the metadata server on Cloud Run, GCE and
//! GKE; else the `gcloud` command. The first token is fetched at start-up, so a broken setup
//! stops the server; a background task renews it just after it turns stale, so a call
//! starting then finds a fresh token instead of waiting for one.
//!
//! Which crate does what, and why. `gcp_auth` (0.12.7, the newest release) signs the
//! service-account JWT and exchanges it at the key's own `token_uri`, and runs the `gcloud`
//! fallback; we keep it for those. It cannot do the rest: it reads `authorized_user`
//! credentials only from `~/.config/gcloud` (not from `GOOGLE_APPLICATION_CREDENTIALS`, not
//! from `CLOUDSDK_CONFIG`), posts them to a fixed Google URL (ignoring the file's
//! `token_uri`), and has a fixed metadata host (ignoring `GCE_METADATA_HOST`). Google's own
//! `google-cloud-auth` (1.19) covers those, but was not taken: it needs Rust 1.91 (we
//! promise 1.88), adds about twenty crates (gax, rpc, wkt, serde_with, time, jiff, a second
//! rand), ignores `CLOUDSDK_CONFIG` too, and turns a service-account key into self-signed
//! JWTs without contacting any token endpoint, so a deleted or disabled key would pass
//! start-up and `doctor` and fail only when a call opens Vertex. What is left is two plain
//! HTTP requests, written here: the refresh-token grant ([`user`]) and the metadata server's
//! token ([`metadata`]). No JWT is signed here.

mod metadata;
mod sources;
mod user;

use std::fmt;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gcp_auth::{CustomServiceAccount, GCloudAuthorizedUser, Token, TokenProvider};

pub use sources::CredentialSources;

use crate::config::Secret;

/// The OAuth scope Vertex AI accepts.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// `gcp_auth` treats a token as stale this long before its real expiry (its
/// `Token::has_expired`, which every source here uses); the refresher wakes a little after
/// that point so that its request is the one that refreshes.
const STALE_MARGIN: Duration = Duration::from_secs(20);
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
        match self.0.get() {
            Some(tokens) => write!(f, "SharedCredentials({})", tokens.origin),
            None => f.write_str("SharedCredentials(not loaded)"),
        }
    }
}

impl SharedCredentials {
    /// Finds the credentials in `sources`, fetches the first token, so a bad setup stops
    /// start-up, and starts the background refresher. Loading twice keeps the first source.
    pub async fn load(&self, sources: &CredentialSources) -> Result<(), AuthError> {
        if self.0.get().is_some() {
            return Ok(());
        }
        let tokens = Arc::new(sources.discover().await?);
        let first = tokens.token().await?;
        if self.0.set(Arc::clone(&tokens)).is_ok() {
            tokio::spawn(keep_fresh(Arc::downgrade(&tokens), first));
            tracing::info!(
                source = %tokens.origin,
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

    /// Where the loaded credentials came from and what project they bill, in words for
    /// `doctor` and logs (never the token); `None` before [`load`](Self::load).
    pub fn describe(&self) -> Option<String> {
        let tokens = self.0.get()?;
        Some(match &tokens.quota_project {
            Some(project) => format!("{}; quota project {project}", tokens.origin),
            None => tokens.origin.clone(),
        })
    }
}

/// One source of tokens and what its credentials say besides the secret.
struct AccessTokens {
    source: TokenSource,
    quota_project: Option<String>,
    /// Which credentials and where from, for logs and `doctor`.
    origin: String,
}

impl AccessTokens {
    async fn token(&self) -> Result<Arc<Token>, AuthError> {
        self.source.token().await
    }
}

/// The four kinds of ADC this server understands.
enum TokenSource {
    /// A service-account key: `gcp_auth` signs the JWT and caches the token.
    ServiceAccount(Box<CustomServiceAccount>),
    /// An `authorized_user` file: the refresh-token grant.
    User(user::RefreshTokenGrant),
    /// The metadata server's default service account.
    Metadata(metadata::MetadataServer),
    /// `gcloud auth print-access-token`, through `gcp_auth`.
    GcloudCommand(GCloudAuthorizedUser),
}

impl TokenSource {
    async fn token(&self) -> Result<Arc<Token>, AuthError> {
        // The crate's errors name the endpoint and status, never the token or the key.
        let from_crate = |e: gcp_auth::Error| AuthError::Token(with_causes(&e));
        match self {
            TokenSource::ServiceAccount(account) => account
                .token(&[CLOUD_PLATFORM_SCOPE])
                .await
                .map_err(from_crate),
            TokenSource::User(grant) => grant.token().await,
            TokenSource::Metadata(server) => server.token().await,
            TokenSource::GcloudCommand(gcloud) => gcloud
                .token(&[CLOUD_PLATFORM_SCOPE])
                .await
                .map_err(from_crate),
        }
    }
}

/// The last token a source fetched, and the lock that makes concurrent callers wait for
/// one fetch instead of each making their own.
#[derive(Default)]
struct CachedToken(tokio::sync::Mutex<Option<Arc<Token>>>);

impl CachedToken {
    /// The cached token while it is fresh, else the one `fetch` gets (then cached).
    async fn get_or_fetch<F, Fut>(&self, fetch: F) -> Result<Arc<Token>, AuthError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Token, AuthError>>,
    {
        let mut cached = self.0.lock().await;
        if let Some(token) = cached.as_ref().filter(|token| !token.has_expired()) {
            return Ok(Arc::clone(token));
        }
        let fresh = Arc::new(fetch().await?);
        *cached = Some(Arc::clone(&fresh));
        Ok(fresh)
    }
}

/// Reads an OAuth token answer (`access_token`, `expires_in`), as both the token endpoint
/// and the metadata server give it; `what` names the endpoint in the error.
fn token_from_answer(body: &[u8], what: &str) -> Result<Token, AuthError> {
    serde_json::from_slice::<Token>(body).map_err(|e| {
        AuthError::Token(format!(
            "{what} answered without an access token and its lifetime ({e})"
        ))
    })
}

/// Refreshes the shared token just after it turns stale, until the token source is dropped.
async fn keep_fresh(tokens: Weak<AccessTokens>, mut current: Arc<Token>) {
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

/// Time until `token` turns stale, plus a little.
fn until_refresh(token: &Token) -> Duration {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let expires_in_ms = token.expires_at().timestamp_millis() - now_ms;
    let stale_in = Duration::from_millis(expires_in_ms.max(0) as u64).saturating_sub(STALE_MARGIN);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unloaded_credentials_say_so() {
        let err = SharedCredentials::default().bearer().await.err().unwrap();
        assert!(matches!(err, AuthError::NotLoaded));
        assert_eq!(SharedCredentials::default().describe(), None);
    }

    #[test]
    fn a_token_answer_without_a_lifetime_is_refused() {
        let good = token_from_answer(br#"{"access_token":"ya29.a","expires_in":3599}"#, "x");
        assert_eq!(good.unwrap().as_str(), "ya29.a");
        let err = token_from_answer(br#"{"access_token":"ya29.a"}"#, "the metadata server")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the metadata server answered without"),
            "{err}"
        );
        assert!(
            !err.contains("ya29"),
            "the token stays out of errors: {err}"
        );
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let cache = CachedToken::default();
        let fetches = std::sync::atomic::AtomicUsize::new(0);
        let fetch = || async {
            fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            token_from_answer(br#"{"access_token":"t","expires_in":3600}"#, "x")
        };
        let (a, b) = tokio::join!(cache.get_or_fetch(fetch), cache.get_or_fetch(fetch));
        assert_eq!((a.unwrap().as_str(), b.unwrap().as_str()), ("t", "t"));
        assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}

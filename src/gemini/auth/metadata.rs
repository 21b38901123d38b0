//! The metadata server on Cloud Run, GCE and GKE: the access token of the service account
//! the service runs as. Every request carries `Metadata-Flavor: Google` (the server refuses
//! requests without it) and every answer must carry it back (anything else answering on
//! that name, such as a proxy or a captive portal, is not the metadata server).

use std::sync::Arc;
use std::time::Duration;

use gcp_auth::Token;

use super::{AuthError, CachedToken, token_from_answer};

/// The metadata server's name inside Google Cloud.
pub(super) const DEFAULT_HOST: &str = "metadata.google.internal";

const FLAVOR_HEADER: &str = "Metadata-Flavor";
const FLAVOR: &str = "Google";
const TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";
const PROJECT_ID_PATH: &str = "/computeMetadata/v1/project/project-id";

/// What asking the metadata server for its project found.
pub(super) enum Probe {
    /// It answered as the metadata server does.
    Found {
        /// The project the service runs in.
        project: String,
    },
    /// Nothing (or not the metadata server) answered; why, in words.
    Absent(String),
}

/// The metadata server at one host, and the last token it gave.
pub(super) struct MetadataServer {
    base: String,
    http: reqwest::Client,
    cached: CachedToken,
}

impl MetadataServer {
    /// The server at `host` (`host[:port]`, as `GCE_METADATA_HOST` gives it), each request
    /// limited to `timeout`.
    pub(super) fn new(host: &str, timeout: Duration) -> Result<Self, AuthError> {
        // reqwest needs a TLS provider even for a client that only speaks plain HTTP.
        crate::telephony::rest::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            // The server is link-local; an HTTP proxy set for the outside world cannot reach it.
            .no_proxy()
            .build()
            .map_err(|e| {
                AuthError::Credentials(format!("cannot set up a metadata-server client ({e})"))
            })?;
        Ok(MetadataServer {
            base: format!("http://{host}"),
            http,
            cached: CachedToken::default(),
        })
    }

    /// Asks for the project id: whether a metadata server is there at all.
    pub(super) async fn probe(&self) -> Probe {
        match self.get(PROJECT_ID_PATH).await {
            Ok(Answer::Flavoured { status: 200, body }) => Probe::Found {
                project: String::from_utf8_lossy(&body).trim().to_owned(),
            },
            Ok(Answer::Flavoured { status, body }) => Probe::Absent(format!(
                "the metadata server answered HTTP {status} for the project id: {}",
                short(&body)
            )),
            Ok(Answer::NotFlavoured { status }) => Probe::Absent(format!(
                "HTTP {status} without the `{FLAVOR_HEADER}: {FLAVOR}` header: not the metadata server"
            )),
            Err(why) => Probe::Absent(why),
        }
    }

    /// The cached token while fresh, else a new one from the server.
    pub(super) async fn token(&self) -> Result<Arc<Token>, AuthError> {
        self.cached.get_or_fetch(|| self.fetch()).await
    }

    async fn fetch(&self) -> Result<Token, AuthError> {
        let what = format!("the metadata server at {}", self.base);
        match self.get(TOKEN_PATH).await.map_err(AuthError::Token)? {
            Answer::Flavoured { status: 200, body } => token_from_answer(&body, &what),
            Answer::Flavoured { status, body } => Err(AuthError::Token(format!(
                "{what} refused a token (HTTP {status}: {}); check that the service runs as a service account",
                short(&body)
            ))),
            Answer::NotFlavoured { status } => Err(AuthError::Token(format!(
                "{what} answered HTTP {status} without the `{FLAVOR_HEADER}: {FLAVOR}` header: not the metadata server"
            ))),
        }
    }

    async fn get(&self, path: &str) -> Result<Answer, String> {
        let url = format!("{}{path}", self.base);
        let answer = self
            .http
            .get(&url)
            .header(FLAVOR_HEADER, FLAVOR)
            .send()
            .await
            .map_err(|e| format!("cannot reach {url} ({})", e.without_url()))?;
        let status = answer.status().as_u16();
        let flavoured = answer
            .headers()
            .get(FLAVOR_HEADER)
            .is_some_and(|value| value == FLAVOR);
        if !flavoured {
            return Ok(Answer::NotFlavoured { status });
        }
        let body = answer
            .bytes()
            .await
            .map_err(|e| format!("{url} broke off its answer ({})", e.without_url()))?;
        Ok(Answer::Flavoured { status, body })
    }
}

/// One answer, sorted by whether it came from the metadata server.
enum Answer {
    Flavoured { status: u16, body: bytes::Bytes },
    NotFlavoured { status: u16 },
}

/// The start of an error body, for a message.
fn short(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)])
        .trim()
        .to_owned()
}

//! The Google Cloud credentials line (Vertex AI with Application Default Credentials only):
//! which credentials were found and whether they yield an access token, before the Gemini
//! line opens a session with them.

use std::time::Duration;

use super::Check;
use crate::config::{GeminiConfig, VertexAccess};

/// The report's name for this line.
pub(super) const AREA: &str = "credentials";

/// Loads the credentials as start-up does and fetches a token, within `limit`; `None` when
/// calls do not use Google Cloud credentials (AI Studio, Vertex express mode).
pub(super) async fn check(config: &GeminiConfig, limit: Duration) -> Option<Check> {
    let Some(VertexAccess::Credentials {
        sources, tokens, ..
    }) = config.vertex().map(|vertex| &vertex.access)
    else {
        return None;
    };
    let loaded = tokio::time::timeout(limit, tokens.load(sources)).await;
    Some(match loaded {
        Ok(Ok(())) => Check::ok(
            AREA,
            format!(
                "Google Cloud access token from {}",
                tokens.describe().unwrap_or_default()
            ),
        ),
        Ok(Err(error)) => Check::fail(
            AREA,
            format!(
                "{error}: Vertex AI cannot be reached without an access token; run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or give the Cloud Run service a service account"
            ),
        ),
        Err(_) => Check::fail(
            AREA,
            format!(
                "no Google Cloud access token within {}s: the token endpoint or metadata server is not answering; check the network, and GCE_METADATA_HOST if you set it",
                limit.as_secs()
            ),
        ),
    })
}

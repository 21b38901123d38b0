//! The web console and browser calls: `GET /` serves the console (embedded in the binary),
//! `POST /web/calls` places a browser call and `GET /web/stream` carries its audio through
//! the same bridge as a phone call (the [`crate::telephony::web`] provider).

mod calls;
mod console;

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::app::App;
use crate::calls::api::{ApiRateLimit, MAX_REQUEST_BYTES};

pub use calls::{CreatedWebCall, STREAM_TO_START};
pub use console::{CONTENT_SECURITY_POLICY, asset};

/// The console's pages and assets, and the browser-call routes (behind `API_TOKEN` like
/// `/calls`, sharing its rate budget).
pub fn routes(api_rate: ApiRateLimit) -> Router<Arc<App>> {
    let browser_calls = Router::new()
        .route("/web/calls", post(calls::create))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(Extension(api_rate));
    Router::new()
        .route("/", get(console::index))
        .route("/console/{file}", get(console::file))
        .route("/web/stream", get(calls::stream))
        .merge(browser_calls)
}

//! Opening a Live session: WebSocket handshake with the key (AI Studio, Vertex express mode)
//! or a Google Cloud access token (Vertex) in a header, `setup`, and the wait for
//! `setupComplete`.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::auth::AuthError;
use super::protocol::ServerMessage;
use crate::config::{GeminiConfig, VertexAccess};

/// An open Live session's socket.
pub type GeminiSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Largest server message accepted; real audio chunks are tens of kilobytes.
const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server answered the upgrade with an HTTP error (401/403 key, 429 quota, …).
    #[error("Gemini refused the connection: HTTP {status} {body}")]
    Refused {
        /// HTTP status code.
        status: u16,
        /// Start of the response body, if any.
        body: String,
    },
    /// Network or protocol failure.
    #[error("could not reach Gemini: {0}")]
    Transport(#[from] tungstenite::Error),
    /// The server closed instead of completing setup (bad model, bad key, bad field).
    #[error("Gemini closed the session during setup: code {code} {reason:?}")]
    ClosedDuringSetup {
        /// WebSocket close code.
        code: u16,
        /// Close reason, the only diagnostic the server gives.
        reason: String,
    },
    /// No `setupComplete` in time.
    #[error("Gemini did not complete setup within {0:?}")]
    Timeout(Duration),
    /// No Google Cloud access token for Vertex (the token endpoint failed or refused).
    #[error("no Google Cloud access token for Vertex AI: {0}")]
    Credentials(#[from] AuthError),
    /// A key or token holds characters an HTTP header cannot carry.
    #[error("{0} contains characters not allowed in an HTTP header")]
    BadHeader(&'static str),
}

/// Connects to `config.live_url`, sends `setup_message` and waits for `setupComplete`,
/// all within `config.setup_timeout`.
pub async fn connect(
    config: &GeminiConfig,
    setup_message: &str,
) -> Result<GeminiSocket, ConnectError> {
    let (socket, _handshake_done) = connect_timed(config, setup_message).await?;
    Ok(socket)
}

/// [`connect`], also saying when the WebSocket handshake finished (the rest of the wait was
/// Gemini's setup), for the call's timeline.
pub async fn connect_timed(
    config: &GeminiConfig,
    setup_message: &str,
) -> Result<(GeminiSocket, std::time::Instant), ConnectError> {
    tokio::time::timeout(config.setup_timeout, connect_inner(config, setup_message))
        .await
        .map_err(|_| ConnectError::Timeout(config.setup_timeout))?
}

async fn connect_inner(
    config: &GeminiConfig,
    setup_message: &str,
) -> Result<(GeminiSocket, std::time::Instant), ConnectError> {
    let mut socket = open(config).await?;
    let handshake_done = std::time::Instant::now();
    complete_setup(&mut socket, setup_message).await?;
    Ok((socket, handshake_done))
}

/// The WebSocket handshake alone, without a time limit: [`connect`] is what calls use;
/// this and [`complete_setup`] are its two steps, for `doctor` to time each.
pub async fn open(config: &GeminiConfig) -> Result<GeminiSocket, ConnectError> {
    let mut request = config.live_url.as_str().into_client_request()?;
    for (name, value) in auth_headers(config).await? {
        request.headers_mut().insert(name, value);
    }

    let ws_config = WebSocketConfig::default()
        // Audio chunks are ~10–15 KiB; the 128 KiB default is zeroed before every read.
        .read_buffer_size(16 * 1024)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    match tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true).await {
        Ok((socket, _response)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned())
                .unwrap_or_default();
            Err(ConnectError::Refused {
                status: response.status().as_u16(),
                body,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// The headers that authorise the session: `x-goog-api-key` for a key; on Vertex with
/// Google Cloud credentials `Authorization: Bearer` with the shared cached token, and
/// `x-goog-user-project` when the credentials name a project to bill.
async fn auth_headers(
    config: &GeminiConfig,
) -> Result<Vec<(&'static str, HeaderValue)>, ConnectError> {
    let header = |value: &str, what: &'static str| {
        let mut value = HeaderValue::from_str(value).map_err(|_| ConnectError::BadHeader(what))?;
        value.set_sensitive(true);
        Ok::<_, ConnectError>(value)
    };
    match config.vertex().map(|vertex| &vertex.access) {
        None | Some(VertexAccess::ApiKey) => Ok(vec![(
            "x-goog-api-key",
            header(config.api_key.expose(), "GEMINI_API_KEY")?,
        )]),
        Some(VertexAccess::Credentials { tokens, .. }) => {
            let bearer = tokens.bearer().await?;
            let mut headers = vec![(
                "authorization",
                header(
                    &format!("Bearer {}", bearer.token.expose()),
                    "the Google Cloud access token",
                )?,
            )];
            if let Some(project) = &bearer.quota_project {
                headers.push((
                    "x-goog-user-project",
                    header(project, "the credentials' quota_project_id")?,
                ));
            }
            Ok(headers)
        }
    }
}

/// The code and reason of a close frame; 1005 ("no status") when it carried none.
pub fn close_status(close: Option<tungstenite::protocol::CloseFrame>) -> (u16, String) {
    close
        .map(|c| (u16::from(c.code), c.reason.to_string()))
        .unwrap_or((1005, String::new()))
}

/// Sends `setup_message` on an open socket and waits, without a time limit, for
/// `setupComplete` (the second step of [`connect`]).
pub async fn complete_setup(
    socket: &mut GeminiSocket,
    setup_message: &str,
) -> Result<(), ConnectError> {
    socket.send(Message::text(setup_message)).await?;

    while let Some(frame) = socket.next().await {
        let bytes = match frame? {
            Message::Text(text) => bytes::Bytes::from(text),
            Message::Binary(bytes) => bytes,
            Message::Close(close) => {
                let (code, reason) = close_status(close);
                return Err(ConnectError::ClosedDuringSetup { code, reason });
            }
            _ => continue,
        };
        match serde_json::from_slice::<ServerMessage<'_>>(&bytes) {
            Ok(msg) if msg.setup_complete.is_some() => return Ok(()),
            Ok(_) => tracing::debug!("message before setupComplete ignored"),
            Err(e) => tracing::warn!(error = %e, "unreadable message before setupComplete"),
        }
    }
    Err(ConnectError::ClosedDuringSetup {
        code: 1006,
        reason: "connection ended".into(),
    })
}

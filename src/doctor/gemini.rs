//! The Gemini line: a Live session opened exactly as a call opens one (URL, key header,
//! setup with model, voice, the inbound prompt and the tools), then one short text turn and
//! the wait for the first audio chunk. Each way Gemini refuses is translated into its cause
//! and fix.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::Check;
use crate::config::{DEFAULT_GEMINI_MODEL, GeminiConfig, LiveOptions};
use crate::gemini::client::{self, GeminiSocket};
use crate::gemini::{ConnectError, ServerMessage, SessionSetup};
use crate::tools::ToolBox;

const AREA: &str = "gemini";

/// How long the polite close at the end may take; the result is known by then.
const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// Opens a session as a call would and waits for spoken audio; handshake and setup share
/// the shorter of `limit` and `GEMINI_SETUP_TIMEOUT_SECS` (a call gives up after the
/// latter), the first audio gets `limit` of its own.
pub(super) async fn check(
    config: &GeminiConfig,
    options: LiveOptions,
    prompt: String,
    toolbox: &ToolBox,
    limit: Duration,
) -> Check {
    let mut setup = SessionSetup::new(config, prompt);
    setup.function_declarations = toolbox.declarations();
    setup.options = options;
    match probe(config, &setup, limit).await {
        Ok(times) => Check::ok(
            AREA,
            format!(
                "{} answered in voice {} with {} tool(s) declared: handshake {} ms, setup {} ms, first audio {} ms after a text turn",
                setup.model,
                setup.voice,
                setup.function_declarations.len(),
                times.handshake.as_millis(),
                times.setup.as_millis(),
                times.first_audio.as_millis()
            ),
        ),
        Err(failure) => Check::fail(AREA, explain(&failure, config)),
    }
}

/// How long each step took.
struct Times {
    handshake: Duration,
    setup: Duration,
    first_audio: Duration,
}

/// Where the probe stopped.
#[derive(Debug)]
enum Failure {
    /// Handshake or setup failed as a call's would.
    Connect(ConnectError),
    /// Handshake and setup did not finish within the time a call waits.
    SetupTimeout(Duration),
    /// The session closed after setup, before any audio.
    ClosedBeforeAudio { code: u16, reason: String },
    /// The model's turn ended without audio.
    TurnWithoutAudio,
    /// Nothing spoken within the limit.
    NoAudio(Duration),
    /// The socket failed after setup.
    Transport(String),
}

async fn probe(
    config: &GeminiConfig,
    setup: &SessionSetup,
    limit: Duration,
) -> Result<Times, Failure> {
    let setup_limit = limit.min(config.setup_timeout);
    load_google_credentials(config, setup_limit).await?;
    let started = Instant::now();
    let setup_deadline = started + setup_limit;
    let mut socket = tokio::time::timeout_at(setup_deadline, client::open(config))
        .await
        .map_err(|_| Failure::SetupTimeout(setup_limit))?
        .map_err(Failure::Connect)?;
    let handshake = started.elapsed();
    let set_up = tokio::time::timeout_at(
        setup_deadline,
        client::complete_setup(&mut socket, &setup.to_message(None)),
    )
    .await;
    let setup_time = started.elapsed() - handshake;
    match set_up {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(Failure::Connect(error)),
        Err(_) => {
            close(&mut socket).await;
            return Err(Failure::SetupTimeout(setup_limit));
        }
    }
    let asked = Instant::now();
    let answered = first_audio(&mut socket, &setup.greeting_message(), limit).await;
    let first_audio = asked.elapsed();
    close(&mut socket).await;
    answered.map(|()| Times {
        handshake,
        setup: setup_time,
        first_audio,
    })
}

/// On Vertex with Google Cloud credentials, finds them and fetches a token as start-up does.
async fn load_google_credentials(config: &GeminiConfig, limit: Duration) -> Result<(), Failure> {
    let Some(crate::config::VertexAccess::Credentials {
        sources, tokens, ..
    }) = config.vertex().map(|vertex| &vertex.access)
    else {
        return Ok(());
    };
    tokio::time::timeout(limit, tokens.load(sources))
        .await
        .map_err(|_| Failure::SetupTimeout(limit))?
        .map_err(|e| Failure::Connect(ConnectError::Credentials(e)))
}

/// Sends the text turn and reads until the first model audio, for at most `limit`.
async fn first_audio(
    socket: &mut GeminiSocket,
    text_turn: &str,
    limit: Duration,
) -> Result<(), Failure> {
    let deadline = Instant::now() + limit;
    let transport = |e: tokio_tungstenite::tungstenite::Error| Failure::Transport(e.to_string());
    socket
        .send(Message::text(text_turn))
        .await
        .map_err(transport)?;
    loop {
        let frame = match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => return Err(Failure::NoAudio(limit)),
            Ok(None) => {
                return Err(Failure::ClosedBeforeAudio {
                    code: 1006,
                    reason: "connection ended".into(),
                });
            }
            Ok(Some(frame)) => frame.map_err(transport)?,
        };
        let bytes = match frame {
            Message::Text(text) => bytes::Bytes::from(text),
            Message::Binary(bytes) => bytes,
            Message::Close(close) => {
                let (code, reason) = crate::gemini::client::close_status(close);
                return Err(Failure::ClosedBeforeAudio { code, reason });
            }
            _ => continue,
        };
        let Ok(message) = serde_json::from_slice::<ServerMessage<'_>>(&bytes) else {
            continue;
        };
        let Some(content) = message.server_content else {
            continue;
        };
        let spoke = content.model_turn.is_some_and(|turn| {
            turn.parts.iter().any(|part| {
                part.inline_data
                    .as_ref()
                    .is_some_and(|b| !b.data.is_empty())
            })
        });
        if spoke {
            return Ok(());
        }
        if content.turn_complete {
            return Err(Failure::TurnWithoutAudio);
        }
    }
}

/// Ends the session with a normal close, without waiting long for the reply.
async fn close(socket: &mut GeminiSocket) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "doctor done".into(),
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, socket.close(Some(frame))).await;
}

/// The failure in plain words, with its fix.
fn explain(failure: &Failure, config: &GeminiConfig) -> String {
    let host = host_of(&config.live_url);
    match failure {
        Failure::Connect(ConnectError::Refused {
            status: status @ (401 | 403),
            body,
        }) if uses_cloud_credentials(config) => {
            format!(
                "Vertex AI refused the Google Cloud credentials (HTTP {status}: {}): give the service account (or your user) the role roles/aiplatform.user on the project, enable the Vertex AI API (aiplatform.googleapis.com), and check GOOGLE_CLOUD_PROJECT",
                google_message(body)
            )
        }
        Failure::Connect(ConnectError::Refused { status, body }) => {
            refused(*status, &google_message(body), host)
        }
        Failure::Connect(ConnectError::Credentials(e)) => format!(
            "{e}: Vertex AI cannot be reached without an access token; run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or give the Cloud Run service a service account"
        ),
        Failure::Connect(ConnectError::BadHeader(what)) => {
            format!("{what} contains characters not allowed in an HTTP header; copy it again")
        }
        Failure::Connect(ConnectError::ClosedDuringSetup { code, reason }) => {
            closed(*code, reason, config, "instead of completing setup")
        }
        Failure::ClosedBeforeAudio { code, reason } => {
            closed(*code, reason, config, "after setup, before any audio")
        }
        Failure::Connect(ConnectError::Transport(e)) => format!(
            "cannot reach Gemini at {host} ({e}): a network problem; check the connection, DNS, proxy and firewall (outbound wss on port 443), and GEMINI_LIVE_URL if you set it"
        ),
        Failure::Transport(e) => format!(
            "the connection to {host} broke after setup ({e}): a network problem; check the connection and try again"
        ),
        Failure::Connect(ConnectError::Timeout(limit)) | Failure::SetupTimeout(limit) => format!(
            "no setupComplete from {host} within {}s (a call waits GEMINI_SETUP_TIMEOUT_SECS={}s): a network problem or a Gemini outage; check the connection (a proxy or firewall holding wss?) and try again",
            limit.as_secs(),
            config.setup_timeout.as_secs()
        ),
        Failure::NoAudio(limit) => format!(
            "the session was set up, but no audio came within {}s of a text turn: a network problem or a Gemini outage, or `{}` does not answer in audio; try again, or another GEMINI_MODEL",
            limit.as_secs(),
            config.model
        ),
        Failure::TurnWithoutAudio => format!(
            "`{}` answered a text turn without audio: callers would hear silence; use a native-audio Live model in GEMINI_MODEL (default {DEFAULT_GEMINI_MODEL})",
            config.model
        ),
    }
}

/// Whether sessions are authorised by Google Cloud credentials (Vertex without a key).
fn uses_cloud_credentials(config: &GeminiConfig) -> bool {
    config.vertex().is_some_and(|vertex| {
        matches!(
            vertex.access,
            crate::config::VertexAccess::Credentials { .. }
        )
    })
}

/// An HTTP refusal of the WebSocket upgrade.
fn refused(status: u16, message: &str, host: &str) -> String {
    match status {
        401 | 403 => format!(
            "Gemini refused the key (HTTP {status}: {message}): GEMINI_API_KEY is invalid, or the Generative Language API is not enabled for its Google Cloud project; create a key at https://aistudio.google.com/apikey (or enable the API) and put it in GEMINI_API_KEY"
        ),
        429 => format!(
            "Gemini refused for quota (HTTP 429: {message}): the key's project is out of quota or at its session limit; wait, or raise the quota / enable billing"
        ),
        404 => format!(
            "no Live endpoint at {host} (HTTP 404: {message}): fix GEMINI_LIVE_URL, or unset it to use Google's"
        ),
        _ => format!(
            "Gemini refused the connection (HTTP {status}: {message}); try again, and check GEMINI_LIVE_URL if you set it"
        ),
    }
}

/// A close frame in place of `setupComplete` or of the first answer.
fn closed(code: u16, reason: &str, config: &GeminiConfig, when: &str) -> String {
    let shown = if reason.is_empty() {
        "no reason given".to_owned()
    } else {
        reason.to_owned()
    };
    let lower = reason.to_ascii_lowercase();
    match code {
        1007 if lower.contains("api key") => format!(
            "Gemini refused the key (close 1007 {when}: {shown}): put a valid key from https://aistudio.google.com/apikey in GEMINI_API_KEY"
        ),
        1007 if lower.contains("location") => format!(
            "Gemini is not available where this server runs (close 1007 {when}: {shown}): run the server in a supported region"
        ),
        1007 => format!(
            "Gemini refused the session setup as invalid (close 1007 {when}: {shown}): fix the field or tool the reason names (a tool in TOOLS_FILE, GEMINI_VOICE, GEMINI_LANGUAGE)"
        ),
        1008 if config.model == DEFAULT_GEMINI_MODEL => format!(
            "the key cannot use model `{}` (close 1008 {when}: {shown}): use a key whose project has Live API access, or set GEMINI_MODEL to a Live model the key may use",
            config.model
        ),
        1008 => format!(
            "the key cannot use model `{}` (close 1008 {when}: {shown}): set GEMINI_MODEL to a Live model the key may use, or unset it for the default {DEFAULT_GEMINI_MODEL}",
            config.model
        ),
        1011 if ["quota", "exceeded", "resource_exhausted", "billing"]
            .iter()
            .any(|word| lower.contains(word)) =>
        {
            format!(
                "Gemini refused for quota (close 1011 {when}: {shown}): the key's project is out of quota or credits; wait, or raise the quota / enable billing"
            )
        }
        _ => format!(
            "Gemini closed the session (close {code} {when}: {shown}); try again, and report it if it persists"
        ),
    }
}

/// Google's `error.message` from a JSON error body, else the body's start.
fn google_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            let start: String = body.trim().chars().take(200).collect();
            if start.is_empty() {
                "no message".to_owned()
            } else {
                start
            }
        })
}

/// The host of a `wss://host/path` URL, for messages.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn config() -> GeminiConfig {
        GeminiConfig {
            api_key: Secret::new("k"),
            model: "gemini-3.8-live".into(),
            voice: "Kore".into(),
            language: None,
            live_url: "wss://generativelanguage.googleapis.com/ws/x".into(),
            setup_timeout: Duration::from_secs(15),
            backend: Default::default(),
        }
    }

    #[test]
    fn refusals_name_their_cause() {
        let explained = |failure| explain(&failure, &config());
        let key = explained(Failure::Connect(ConnectError::Refused {
            status: 403,
            body:
                r#"{"error":{"code":403,"message":"Method doesn't allow unregistered callers."}}"#
                    .into(),
        }));
        assert!(key.contains("GEMINI_API_KEY is invalid"), "{key}");
        assert!(key.contains("unregistered callers"), "{key}");
        let model = explained(Failure::Connect(ConnectError::ClosedDuringSetup {
            code: 1008,
            reason: "models/x is not found".into(),
        }));
        assert!(
            model.contains("cannot use model `gemini-3.8-live`"),
            "{model}"
        );
        let key_on_close = explained(Failure::ClosedBeforeAudio {
            code: 1007,
            reason: "API key not valid. Please pass a valid API key.".into(),
        });
        assert!(key_on_close.contains("refused the key"), "{key_on_close}");
        let quota = explained(Failure::Connect(ConnectError::ClosedDuringSetup {
            code: 1011,
            reason: "You exceeded your current quota".into(),
        }));
        assert!(quota.contains("quota"), "{quota}");
        assert_eq!(
            host_of("wss://generativelanguage.googleapis.com/ws/x"),
            "generativelanguage.googleapis.com"
        );
    }

    #[test]
    fn vertex_credential_failures_name_their_fix() {
        let token = explain(
            &Failure::Connect(ConnectError::Credentials(
                crate::gemini::auth::AuthError::Token("token request failed".into()),
            )),
            &config(),
        );
        assert!(
            token.starts_with("cannot get a Google Cloud access token: token request failed"),
            "{token}"
        );
        assert!(
            token.contains("gcloud auth application-default login"),
            "{token}"
        );

        let vertex = GeminiConfig {
            api_key: Secret::new(""),
            backend: crate::config::GeminiBackend::Vertex(crate::config::VertexConfig {
                location: "us-central1".into(),
                access: crate::config::VertexAccess::Credentials {
                    project: "acme".into(),
                    sources: Default::default(),
                    tokens: Default::default(),
                },
            }),
            ..config()
        };
        let denied = explain(
            &Failure::Connect(ConnectError::Refused {
                status: 403,
                body: r#"{"error":{"message":"Permission 'aiplatform.endpoints.predict' denied"}}"#
                    .into(),
            }),
            &vertex,
        );
        assert!(denied.contains("roles/aiplatform.user"), "{denied}");
        assert!(!denied.contains("GEMINI_API_KEY"), "{denied}");
    }
}

//! A fake Twilio + Plivo REST API on 127.0.0.1: it checks HTTP Basic auth like the real
//! ones, records every request (path, auth, form or JSON body) and answers like the
//! providers do, unless a test scripts an error.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

/// Twilio account used by tests.
pub const TWILIO_SID: &str = "AC00000000000000000000000000000001";
/// Twilio auth token used by tests.
pub const TWILIO_TOKEN: &str = "twilio-test-token";
/// Plivo auth id used by tests.
pub const PLIVO_ID: &str = "MA00000000000000TEST";
/// Plivo auth token used by tests.
pub const PLIVO_TOKEN: &str = "plivo-test-token";

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// HTTP method.
    pub method: Method,
    /// Path without the query.
    pub path: String,
    /// `user:password` from Basic auth, if any.
    pub basic_auth: Option<String>,
    /// Content type header.
    pub content_type: Option<String>,
    /// Form fields in order (repeated keys kept), for form bodies.
    pub form: Vec<(String, String)>,
    /// The JSON body, for JSON bodies.
    pub json: Option<Value>,
}

impl Recorded {
    /// The first value of a form field.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated form field.
    pub fn fields(&self, name: &str) -> Vec<&str> {
        self.form
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[derive(Default)]
struct Shared {
    requests: Vec<Recorded>,
    scripted: VecDeque<(u16, Value)>,
    delay_next: Option<Duration>,
    next_id: u32,
}

/// The fake REST server.
#[derive(Clone)]
pub struct FakeRest {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
}

impl FakeRest {
    /// Starts it on an ephemeral loopback port.
    pub async fn start() -> FakeRest {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake REST");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeRest { addr, shared }
    }

    /// Base URL to use as `TWILIO_API_URL` / `PLIVO_API_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Makes the next request fail with this status and JSON body.
    pub fn fail_next(&self, status: u16, body: Value) {
        self.shared
            .lock()
            .unwrap()
            .scripted
            .push_back((status, body));
    }

    /// Makes the next request answer only after `delay` (to test time-outs).
    pub fn delay_next(&self, delay: Duration) {
        self.shared.lock().unwrap().delay_next = Some(delay);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().unwrap().requests.clone()
    }

    /// Waits until at least `n` requests arrived; returns them.
    pub async fn wait_requests(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let requests = self.requests();
            if requests.len() >= n || tokio::time::Instant::now() >= deadline {
                return requests;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn basic_auth(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    String::from_utf8(bytes).ok()
}

async fn handle(
    State(shared): State<Arc<Mutex<Shared>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let is_json = content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/json"));
    let recorded = Recorded {
        method: method.clone(),
        path: uri.path().to_owned(),
        basic_auth: basic_auth(&headers),
        content_type,
        form: if is_json {
            Vec::new()
        } else {
            serde_urlencoded::from_bytes(&body).unwrap_or_default()
        },
        json: if is_json {
            serde_json::from_slice(&body).ok()
        } else {
            None
        },
    };
    let path = recorded.path.clone();
    let auth = recorded.basic_auth.clone();
    let (scripted, id, delay) = {
        let mut shared = shared.lock().unwrap();
        shared.requests.push(recorded);
        shared.next_id += 1;
        (
            shared.scripted.pop_front(),
            shared.next_id,
            shared.delay_next.take(),
        )
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }

    let twilio = path.starts_with("/2010-04-01/");
    let expected = if twilio {
        format!("{TWILIO_SID}:{TWILIO_TOKEN}")
    } else {
        format!("{PLIVO_ID}:{PLIVO_TOKEN}")
    };
    if auth.as_deref() != Some(expected.as_str()) {
        let body = if twilio {
            json!({"code": 20003, "message": "Authenticate", "status": 401})
        } else {
            json!({"api_id": "x", "error": "Authentication credentials invalid."})
        };
        return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    }
    if let Some((status, body)) = scripted {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, axum::Json(body)).into_response();
    }

    let (status, body) = match (method.as_str(), path.as_str()) {
        ("POST", p) if p == format!("/2010-04-01/Accounts/{TWILIO_SID}/Calls.json") => (
            StatusCode::CREATED,
            json!({"sid": format!("CA{id:032}"), "status": "queued", "direction": "outbound-api"}),
        ),
        ("POST", p) if p.starts_with(&format!("/2010-04-01/Accounts/{TWILIO_SID}/Calls/")) => {
            (StatusCode::OK, json!({"status": "completed"}))
        }
        ("POST", p) if p == format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages.json") => (
            StatusCode::CREATED,
            json!({"sid": format!("SM{id:032}"), "status": "queued"}),
        ),
        ("POST", p) if p == format!("/v1/Account/{PLIVO_ID}/Call/") => (
            StatusCode::CREATED,
            json!({"message": "call fired", "request_uuid": format!("req-{id}"), "api_id": "a"}),
        ),
        ("DELETE", p) if p.starts_with(&format!("/v1/Account/{PLIVO_ID}/")) => {
            return StatusCode::NO_CONTENT.into_response();
        }
        ("POST", p) if p.starts_with(&format!("/v1/Account/{PLIVO_ID}/Call/")) => (
            StatusCode::ACCEPTED,
            json!({"message": "call transferred", "api_id": "a"}),
        ),
        ("POST", p) if p == format!("/v1/Account/{PLIVO_ID}/Message/") => (
            StatusCode::ACCEPTED,
            json!({"message": "message(s) queued", "message_uuid": [format!("msg-{id}")], "api_id": "a"}),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            json!({"message": format!("no route {method} {path}")}),
        ),
    };
    (status, axum::Json(body)).into_response()
}

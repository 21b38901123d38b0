//! A fake Twilio + Plivo REST API on 127.0.0.1: it checks HTTP Basic auth like the real
//! ones, records every request (path, auth, form or JSON body) and answers like the
//! providers do, unless a test scripts an error.
//!
//! It keeps the status of the calls it dialled, and of any a test declares with
//! [`FakeRest::set_call_status`], and serves them as Twilio's call resource and Plivo's
//! live / queued / ended-call lookups. Like the real services it answers 404 to a path whose
//! call id is not a Twilio call SID (`CA` + 32 hex) or a Plivo UUID, and to a lookup of a call
//! it does not know. Updates (hang-up, transfer) of a well-formed id it does not know succeed,
//! as for an inbound call, which the phone network creates without the REST API.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
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
    /// Path without the query, still percent-encoded as sent.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
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
    /// Call id (Twilio SID, Plivo call or request UUID) → status in Twilio's words.
    calls: HashMap<String, String>,
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

    /// Declares a call and its status in Twilio's words (`queued`, `ringing`,
    /// `in-progress`, `completed`, `busy`, `no-answer`, `failed`, `canceled`), as lookups
    /// will report it.
    pub fn set_call_status(&self, id: &str, status: &str) {
        self.shared
            .lock()
            .unwrap()
            .calls
            .insert(id.to_owned(), status.to_owned());
    }

    /// The status the fake holds for a call, if it knows it.
    pub fn call_status(&self, id: &str) -> Option<String> {
        self.shared.lock().unwrap().calls.get(id).cloned()
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
        query: uri.query().map(str::to_owned),
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
    let form = recorded.form.clone();
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

    let query = uri.query().unwrap_or_default().to_owned();
    let (status, body) = if twilio {
        twilio_route(&shared, &method, &path, &form, id)
    } else {
        plivo_route(&shared, &method, &path, &query, id)
    };
    if status == StatusCode::NO_CONTENT {
        return status.into_response();
    }
    (status, axum::Json(body)).into_response()
}

/// A call SID as Twilio issues them: `CA` and 32 hex digits.
pub fn fake_call_sid(n: u32) -> String {
    format!("CA{n:032x}")
}

/// A UUID-shaped id, as Plivo issues for calls, requests, messages and API calls.
pub fn fake_uuid(n: u32) -> String {
    format!("{n:08x}-0000-4000-8000-{n:012x}")
}

fn is_twilio_call_sid(id: &str) -> bool {
    id.len() == 34 && id.starts_with("CA") && id[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_plivo_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn not_found(twilio: bool, path: &str) -> (StatusCode, Value) {
    let body = if twilio {
        json!({"code": 20404, "message": format!("The requested resource {path} was not found"),
               "more_info": "https://www.twilio.com/docs/errors/20404", "status": 404})
    } else {
        json!({"api_id": fake_uuid(0), "error": "not found"})
    };
    (StatusCode::NOT_FOUND, body)
}

fn twilio_route(
    shared: &Mutex<Shared>,
    method: &Method,
    path: &str,
    form: &[(String, String)],
    id: u32,
) -> (StatusCode, Value) {
    let Some(rest) = path.strip_prefix(&format!("/2010-04-01/Accounts/{TWILIO_SID}/")) else {
        return not_found(true, path);
    };
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match (method.as_str(), rest) {
        ("POST", "Calls.json") => {
            let sid = fake_call_sid(id);
            shared
                .lock()
                .unwrap()
                .calls
                .insert(sid.clone(), "queued".into());
            (
                StatusCode::CREATED,
                json!({"sid": sid, "status": "queued", "direction": "outbound-api"}),
            )
        }
        ("POST", "Messages.json") => (
            StatusCode::CREATED,
            json!({"sid": format!("SM{id:032x}"), "status": "queued"}),
        ),
        (verb, call) if call.starts_with("Calls/") && call.ends_with(".json") => {
            let sid = &call["Calls/".len()..call.len() - ".json".len()];
            if !is_twilio_call_sid(sid) {
                return not_found(true, path);
            }
            let mut shared = shared.lock().unwrap();
            match verb {
                "GET" => match shared.calls.get(sid) {
                    Some(status) => (
                        StatusCode::OK,
                        json!({"sid": sid, "account_sid": TWILIO_SID, "status": status,
                               "direction": "outbound-api", "api_version": "2010-04-01"}),
                    ),
                    None => not_found(true, path),
                },
                "POST" => {
                    let status = field("Status").unwrap_or("in-progress").to_owned();
                    if let Some(known) = shared.calls.get_mut(sid) {
                        *known = status.clone();
                    }
                    (StatusCode::OK, json!({"sid": sid, "status": status}))
                }
                _ => not_found(true, path),
            }
        }
        _ => not_found(true, path),
    }
}

fn plivo_route(
    shared: &Mutex<Shared>,
    method: &Method,
    path: &str,
    query: &str,
    id: u32,
) -> (StatusCode, Value) {
    let Some(rest) = path.strip_prefix(&format!("/v1/Account/{PLIVO_ID}/")) else {
        return not_found(false, path);
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let lookup = serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .unwrap_or_default()
        .into_iter()
        .find(|(k, _)| k == "status")
        .map(|(_, v)| v);
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["Call", ""]) => {
            let request_uuid = fake_uuid(id);
            shared
                .lock()
                .unwrap()
                .calls
                .insert(request_uuid.clone(), "queued".into());
            (
                StatusCode::CREATED,
                json!({"message": "call fired", "request_uuid": request_uuid, "api_id": fake_uuid(id)}),
            )
        }
        ("POST", ["Message", ""]) => (
            StatusCode::ACCEPTED,
            json!({"message": "message(s) queued", "message_uuid": [fake_uuid(id)], "api_id": fake_uuid(id)}),
        ),
        (verb, [kind @ ("Call" | "Request"), uuid, ""]) => {
            if !is_plivo_uuid(uuid) {
                return not_found(false, path);
            }
            let mut shared = shared.lock().unwrap();
            match (verb, *kind) {
                ("DELETE", kind) => {
                    let ended = if kind == "Call" {
                        "completed"
                    } else {
                        "canceled"
                    };
                    if let Some(known) = shared.calls.get_mut(*uuid) {
                        *known = ended.to_owned();
                    }
                    (StatusCode::NO_CONTENT, Value::Null)
                }
                ("POST", "Call") => (
                    StatusCode::ACCEPTED,
                    json!({"message": "call transferred", "api_id": fake_uuid(id)}),
                ),
                ("GET", "Call") => match shared.calls.get(*uuid) {
                    Some(status) => plivo_lookup(uuid, status, lookup.as_deref())
                        .map(|body| (StatusCode::OK, body))
                        .unwrap_or_else(|| not_found(false, path)),
                    None => not_found(false, path),
                },
                _ => not_found(false, path),
            }
        }
        _ => not_found(false, path),
    }
}

/// What Plivo's call lookups answer for a call in `status` (Twilio's words): `?status=live`
/// knows ringing and answered calls, `?status=queued` queued ones, and the plain lookup the
/// detail records of ended ones; anything else is `None` (a 404).
fn plivo_lookup(uuid: &str, status: &str, lookup: Option<&str>) -> Option<Value> {
    let live = matches!(status, "ringing" | "in-progress");
    match lookup {
        Some("live") if live => Some(json!({
            "api_id": fake_uuid(1), "call_status": status, "call_uuid": uuid,
            "request_uuid": uuid, "caller_name": "", "direction": "outbound",
            "from": "15550008888", "to": "15551234567",
            "session_start": "2024-01-15 10:30:00.000000"})),
        Some("queued") if status == "queued" => Some(json!({
            "api_id": fake_uuid(1), "call_status": "queued", "call_uuid": uuid,
            "request_uuid": uuid, "direction": "outbound",
            "from": "15550008888", "to": "15551234567"})),
        None if !live && status != "queued" => {
            // Causes and codes from Plivo's hangup-cause list, except the busy and no-answer
            // names, which are this fake's wording (their codes are left out).
            let (answer_time, cause, code) = match status {
                "completed" => (
                    json!("2024-01-15 10:30:05+00:00"),
                    "Normal Hangup",
                    json!(4000),
                ),
                "busy" => (Value::Null, "Busy Line", Value::Null),
                "no-answer" => (Value::Null, "No Answer", Value::Null),
                "canceled" => (Value::Null, "Canceled", json!(1000)),
                _ => (Value::Null, "Destination Out Of Service", json!(2010)),
            };
            let seconds = if answer_time.is_null() { 0 } else { 7 };
            Some(json!({
                "api_id": fake_uuid(1), "call_uuid": uuid, "call_direction": "outbound",
                "answer_time": answer_time, "initiation_time": "2024-01-15 10:30:00+00:00",
                "end_time": "2024-01-15 10:30:12+00:00", "bill_duration": seconds,
                "billed_duration": seconds, "call_duration": seconds,
                "hangup_cause_name": cause, "hangup_cause_code": code,
                "hangup_source": "Callee", "from_number": "15550008888",
                "to_number": "15551234567", "parent_call_uuid": null,
                "resource_uri": format!("/v1/Account/{PLIVO_ID}/Call/{uuid}/")}))
        }
        _ => None,
    }
}

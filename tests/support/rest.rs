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
//!
//! For number set-up it serves the accounts (Twilio `GET /Accounts/{Sid}.json`, Plivo `GET
//! /v1/Account/{id}/`), the numbers a test seeds (Twilio IncomingPhoneNumbers, Plivo Number)
//! and Plivo applications, with the providers' field names; an unknown number or application
//! is a 404, and the update endpoints refuse fields the real APIs do not document (400), so a
//! misspelt field fails a test instead of being dropped silently.
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
    /// Twilio IncomingPhoneNumber resources, in the order seeded.
    twilio_numbers: Vec<Value>,
    /// Plivo number resources by number (digits, no `+`).
    plivo_numbers: HashMap<String, Value>,
    /// Plivo applications, in the order created.
    plivo_apps: Vec<Value>,
    /// Twilio's account `type` (`Full` or `Trial`).
    twilio_account_type: String,
    /// The phone network behind dialled Twilio calls, once a test turned it on.
    network: Option<Network>,
}

/// How the fake phone network answers a dialled number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A person answers and talks for the script's `talk` time.
    Answered,
    /// The line is busy.
    Busy,
    /// Nobody answers.
    NoAnswer,
    /// The call cannot be connected.
    Failed,
    /// An answering machine picks up.
    Machine,
}

/// Timings of the fake network's calls.
#[derive(Clone, Copy, Debug)]
pub struct CallScript {
    /// From the dial to ringing, and from ringing to an outcome.
    pub ring: Duration,
    /// How long an answered call lasts unless hung up through the API.
    pub talk: Duration,
}

/// What the fake network does with dialled Twilio calls: it plays each one out by its number's
/// outcome and delivers the callbacks Twilio would (status `ringing`, the answer webhook with
/// `AnsweredBy`, the final status with `CallDuration`), signed with the account's token, to
/// the first server in `targets` that answers (like a load balancer skipping a dead
/// instance).
struct Network {
    targets: Vec<String>,
    script: CallScript,
    outcomes: HashMap<String, Vec<Outcome>>,
    next_target: usize,
    /// Calls dialled and not ended yet, by SID.
    live: HashMap<String, String>,
    max_live: usize,
    /// Every dial, in order: the number and when.
    dials: Vec<(String, std::time::Instant)>,
    /// SIDs hung up through the REST API.
    hung_up: Vec<String>,
    http: reqwest::Client,
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
        let shared = Arc::new(Mutex::new(Shared {
            twilio_account_type: "Full".into(),
            ..Shared::default()
        }));
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

    /// Adds a number to the Twilio account, its voice URL `voice_url` (`None`: unset);
    /// returns its `PN…` SID.
    pub fn seed_twilio_number(&self, number: &str, voice_url: Option<&str>) -> String {
        let mut shared = self.shared.lock().unwrap();
        let sid = format!("PN{:032x}", 0xbeef + shared.twilio_numbers.len());
        let resource = json!({
            "account_sid": TWILIO_SID, "sid": sid, "phone_number": number,
            "friendly_name": number, "api_version": "2010-04-01",
            "voice_url": voice_url, "voice_method": "POST",
            "voice_fallback_url": null, "voice_fallback_method": "POST",
            "voice_application_sid": "", "voice_caller_id_lookup": false,
            "status_callback": "", "status_callback_method": "POST",
            "sms_url": "", "sms_method": "POST", "trunk_sid": null,
            "voice_receive_mode": "voice", "status": "in-use",
            "capabilities": {"voice": true, "sms": true, "mms": false, "fax": false},
            "uri": format!("/2010-04-01/Accounts/{TWILIO_SID}/IncomingPhoneNumbers/{sid}.json"),
        });
        shared.twilio_numbers.push(resource);
        sid
    }

    /// Sets fields of a seeded Twilio number (by E.164 number) to what a test needs.
    pub fn edit_twilio_number(&self, number: &str, fields: Value) {
        let mut shared = self.shared.lock().unwrap();
        let resource = shared
            .twilio_numbers
            .iter_mut()
            .find(|n| n["phone_number"] == number)
            .expect("seeded Twilio number");
        if let (Some(resource), Some(fields)) = (resource.as_object_mut(), fields.as_object()) {
            resource.extend(fields.clone());
        }
    }

    /// The Twilio number resource of `number` (E.164), as the fake holds it.
    pub fn twilio_number(&self, number: &str) -> Option<Value> {
        let shared = self.shared.lock().unwrap();
        shared
            .twilio_numbers
            .iter()
            .find(|n| n["phone_number"] == number)
            .cloned()
    }

    /// Makes the Twilio account report this `type` (`Full`, `Trial`).
    pub fn set_twilio_account_type(&self, account_type: &str) {
        self.shared.lock().unwrap().twilio_account_type = account_type.to_owned();
    }

    /// Adds a number (digits, no `+`) to the Plivo account, attached to application `app_id`.
    pub fn seed_plivo_number(&self, number: &str, app_id: Option<&str>) {
        let resource = json!({
            "api_id": fake_uuid(7), "number": number, "alias": null, "active": true,
            "added_on": "2024-01-15", "carrier": "Plivo", "number_type": "local",
            "application": app_id.map(|id| format!("/v1/Account/{PLIVO_ID}/Application/{id}/")),
            "country": "United States", "region": "California, UNITED STATES",
            "monthly_rental_rate": "0.80000", "sms_enabled": true, "voice_enabled": true,
            "sub_account": null, "resource_uri": format!("/v1/Account/{PLIVO_ID}/Number/{number}/"),
        });
        self.shared
            .lock()
            .unwrap()
            .plivo_numbers
            .insert(number.to_owned(), resource);
    }

    /// The Plivo number resource of `number` (digits), as the fake holds it.
    pub fn plivo_number(&self, number: &str) -> Option<Value> {
        self.shared
            .lock()
            .unwrap()
            .plivo_numbers
            .get(number)
            .cloned()
    }

    /// Adds a Plivo application; returns its `app_id`.
    pub fn seed_plivo_app(&self, name: &str, answer_url: &str, hangup_url: &str) -> String {
        let mut shared = self.shared.lock().unwrap();
        let app = plivo_app(shared.plivo_apps.len(), name);
        shared.plivo_apps.push(app);
        let app = shared.plivo_apps.last_mut().expect("just added");
        app["answer_url"] = json!(answer_url);
        app["hangup_url"] = json!(hangup_url);
        app["app_id"].as_str().unwrap_or_default().to_owned()
    }

    /// The Plivo applications, in the order created.
    pub fn plivo_apps(&self) -> Vec<Value> {
        self.shared.lock().unwrap().plivo_apps.clone()
    }

    /// Turns on the phone network: dialled Twilio calls are played out by number (see
    /// [`Outcome`], `Answered` unless set) and their callbacks delivered to `targets` (server
    /// base URLs, tried in turn until one answers).
    pub fn simulate_calls(&self, targets: Vec<String>, script: CallScript) {
        self.shared.lock().unwrap().network = Some(Network {
            targets,
            script,
            outcomes: HashMap::new(),
            next_target: 0,
            live: HashMap::new(),
            max_live: 0,
            dials: Vec::new(),
            hung_up: Vec::new(),
            http: reqwest::Client::new(),
        });
    }

    /// What calls to `number` do, attempt by attempt; the last outcome repeats.
    pub fn set_outcomes(&self, number: &str, outcomes: &[Outcome]) {
        if let Some(network) = self.shared.lock().unwrap().network.as_mut() {
            network
                .outcomes
                .insert(number.to_owned(), outcomes.to_vec());
        }
    }

    /// Every dial so far: the number and when.
    pub fn dials(&self) -> Vec<(String, std::time::Instant)> {
        self.network(|n| n.dials.clone())
    }

    /// How many times `number` was dialled.
    pub fn dials_to(&self, number: &str) -> usize {
        self.network(|n| n.dials.iter().filter(|(to, _)| to == number).count())
    }

    /// Calls dialled and not ended now.
    pub fn live_calls(&self) -> usize {
        self.network(|n| n.live.len())
    }

    /// The most calls that were live at once.
    pub fn max_live_calls(&self) -> usize {
        self.network(|n| n.max_live)
    }

    /// SIDs of the calls hung up through the REST API.
    pub fn hung_up(&self) -> Vec<String> {
        self.network(|n| n.hung_up.clone())
    }

    fn network<T: Default>(&self, read: impl FnOnce(&Network) -> T) -> T {
        self.shared
            .lock()
            .unwrap()
            .network
            .as_ref()
            .map(read)
            .unwrap_or_default()
    }

    /// Requests that could change something (every method but GET).
    pub fn updates(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != Method::GET)
            .collect()
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
    let json_body = recorded.json.clone();
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
        twilio_route(&shared, &method, &path, &query, &form, id)
    } else {
        plivo_route(&shared, &method, &path, &query, json_body.as_ref(), id)
    };
    if twilio && method == Method::POST && status.is_success() {
        network_sees(&shared, &path, &form, &body);
    }
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
    query: &str,
    form: &[(String, String)],
    id: u32,
) -> (StatusCode, Value) {
    if method == Method::GET && path == format!("/2010-04-01/Accounts/{TWILIO_SID}.json") {
        let account_type = shared.lock().unwrap().twilio_account_type.clone();
        return (
            StatusCode::OK,
            json!({"sid": TWILIO_SID, "friendly_name": "Test account", "status": "active",
                   "type": account_type, "owner_account_sid": TWILIO_SID,
                   "date_created": "Thu, 30 Jul 2015 23:19:04 +0000",
                   "uri": format!("/2010-04-01/Accounts/{TWILIO_SID}.json")}),
        );
    }
    let Some(rest) = path.strip_prefix(&format!("/2010-04-01/Accounts/{TWILIO_SID}/")) else {
        return not_found(true, path);
    };
    if rest == "IncomingPhoneNumbers.json" && method == Method::GET {
        return (StatusCode::OK, twilio_number_list(shared, query));
    }
    if let Some(sid) = rest
        .strip_prefix("IncomingPhoneNumbers/")
        .and_then(|r| r.strip_suffix(".json"))
    {
        return twilio_number_update(shared, method, path, sid, form);
    }
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match (method.as_str(), rest) {
        ("POST", "Calls.json") => {
            if let Err(refusal) = twilio_dial_fields(form) {
                return refusal;
            }
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
    body: Option<&Value>,
    id: u32,
) -> (StatusCode, Value) {
    let Some(rest) = path.strip_prefix(&format!("/v1/Account/{PLIVO_ID}/")) else {
        return not_found(false, path);
    };
    let segments: Vec<&str> = rest.split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("GET", [""]) => {
            return (
                StatusCode::OK,
                json!({"api_id": fake_uuid(id), "auth_id": PLIVO_ID, "name": "Test account",
                       "account_type": "standard", "billing_mode": "prepaid",
                       "cash_credits": "4.88860", "timezone": "Asia/Kolkata",
                       "resource_uri": format!("/v1/Account/{PLIVO_ID}/")}),
            );
        }
        (_, ["Number", number, ""]) => {
            return plivo_number_route(shared, method, path, number, body, id);
        }
        (_, ["Application", ""]) | (_, ["Application", _, ""]) => {
            let app_id = segments.get(1).filter(|s| !s.is_empty()).copied();
            return plivo_app_route(shared, method, path, query, app_id, body, id);
        }
        _ => {}
    }
    let lookup = serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .unwrap_or_default()
        .into_iter()
        .find(|(k, _)| k == "status")
        .map(|(_, v)| v);
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["Call", ""]) => {
            if let Err(refusal) = plivo_dial_fields(body) {
                return refusal;
            }
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

/// Form fields Twilio documents for an IncomingPhoneNumber update (SDK
/// `IncomingPhoneNumberContext.update`).
const TWILIO_NUMBER_FIELDS: &[&str] = &[
    "AccountSid",
    "ApiVersion",
    "FriendlyName",
    "SmsApplicationSid",
    "SmsFallbackMethod",
    "SmsFallbackUrl",
    "SmsMethod",
    "SmsUrl",
    "StatusCallback",
    "StatusCallbackMethod",
    "VoiceApplicationSid",
    "VoiceCallerIdLookup",
    "VoiceFallbackMethod",
    "VoiceFallbackUrl",
    "VoiceMethod",
    "VoiceUrl",
    "EmergencyStatus",
    "EmergencyAddressSid",
    "TrunkSid",
    "VoiceReceiveMode",
    "IdentitySid",
    "AddressSid",
    "BundleSid",
];

/// `VoiceUrl` → `voice_url`: the resource's spelling of a form field.
fn snake_case(field: &str) -> String {
    let mut out = String::new();
    for (i, c) in field.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// True when `candidate` contains `pattern`'s digits in a row, `*` matching any digit: how
/// Twilio's `PhoneNumber` filter matches partial numbers.
fn matches_partially(candidate: &str, pattern: &str) -> bool {
    let digits: Vec<char> = candidate.chars().filter(char::is_ascii_digit).collect();
    let wanted: Vec<char> = pattern
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '*')
        .collect();
    wanted.is_empty()
        || digits
            .windows(wanted.len())
            .any(|window| window.iter().zip(&wanted).all(|(d, w)| *w == '*' || d == w))
}

fn twilio_number_list(shared: &Mutex<Shared>, query: &str) -> Value {
    let filter = serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .unwrap_or_default()
        .into_iter()
        .find(|(k, _)| k == "PhoneNumber")
        .map(|(_, v)| v);
    let numbers: Vec<Value> = shared
        .lock()
        .unwrap()
        .twilio_numbers
        .iter()
        .filter(|n| {
            filter.as_deref().is_none_or(|pattern| {
                matches_partially(n["phone_number"].as_str().unwrap_or_default(), pattern)
            })
        })
        .cloned()
        .collect();
    let uri = format!("/2010-04-01/Accounts/{TWILIO_SID}/IncomingPhoneNumbers.json");
    json!({"incoming_phone_numbers": numbers, "page": 0, "page_size": 50, "start": 0,
           "end": numbers.len().saturating_sub(1), "next_page_uri": null,
           "previous_page_uri": null, "first_page_uri": uri, "uri": uri})
}

fn twilio_error(status: StatusCode, code: u32, message: String) -> (StatusCode, Value) {
    (
        status,
        json!({"code": code, "message": message, "status": status.as_u16(),
               "more_info": format!("https://www.twilio.com/docs/errors/{code}")}),
    )
}

fn twilio_number_update(
    shared: &Mutex<Shared>,
    method: &Method,
    path: &str,
    sid: &str,
    form: &[(String, String)],
) -> (StatusCode, Value) {
    let mut shared = shared.lock().unwrap();
    let Some(resource) = shared.twilio_numbers.iter_mut().find(|n| n["sid"] == sid) else {
        return not_found(true, path);
    };
    match method.as_str() {
        "GET" => return (StatusCode::OK, resource.clone()),
        "POST" => {}
        _ => return not_found(true, path),
    }
    if let Some((field, _)) = form
        .iter()
        .find(|(k, _)| !TWILIO_NUMBER_FIELDS.contains(&k.as_str()))
    {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            20001,
            format!("Unknown parameter {field}"),
        );
    }
    if let Some((field, value)) = form.iter().find(|(k, v)| {
        k.ends_with("Method") && !matches!(v.to_ascii_uppercase().as_str(), "GET" | "POST")
    }) {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21207,
            format!("{field} is not valid: {value}"),
        );
    }
    for (field, value) in form {
        resource[snake_case(field)] = json!(value);
    }
    (StatusCode::OK, resource.clone())
}

/// Keys Plivo documents for a number update (SDK `Numbers.update`).
const PLIVO_NUMBER_FIELDS: &[&str] = &[
    "app_id",
    "subaccount",
    "alias",
    "verification_info",
    "cnam_lookup",
];

/// Keys Plivo documents for an application update (SDK `Applications.update`); a create
/// also takes `app_name`.
const PLIVO_APP_FIELDS: &[&str] = &[
    "answer_url",
    "answer_method",
    "hangup_url",
    "hangup_method",
    "fallback_answer_url",
    "fallback_method",
    "message_url",
    "message_method",
    "default_number_app",
    "default_endpoint_app",
    "subaccount",
    "log_incoming_messages",
    "public_uri",
];

fn plivo_error(status: StatusCode, message: String) -> (StatusCode, Value) {
    (status, json!({"api_id": fake_uuid(0), "error": message}))
}

/// The parameters Twilio's Create Call takes (twilio-python `CallList.create`).
const TWILIO_DIAL_FIELDS: &[&str] = &[
    "To",
    "From",
    "Url",
    "Twiml",
    "ApplicationSid",
    "Method",
    "FallbackUrl",
    "FallbackMethod",
    "StatusCallback",
    "StatusCallbackMethod",
    "StatusCallbackEvent",
    "Timeout",
    "TimeLimit",
    "Record",
    "RecordingChannels",
    "RecordingStatusCallback",
    "RecordingStatusCallbackMethod",
    "RecordingStatusCallbackEvent",
    "RecordingTrack",
    "Trim",
    "MachineDetection",
    "MachineDetectionTimeout",
    "MachineDetectionSpeechThreshold",
    "MachineDetectionSpeechEndThreshold",
    "MachineDetectionSilenceTimeout",
    "AsyncAmd",
    "AsyncAmdStatusCallback",
    "AsyncAmdStatusCallbackMethod",
    "SendDigits",
    "CallerId",
    "SipAuthUsername",
    "SipAuthPassword",
    "CallReason",
    "CallToken",
    "Byoc",
    "Passports",
    "ClientNotificationUrl",
];

/// The keys Plivo's Make Call takes (plivo-python `calls.create`).
const PLIVO_DIAL_FIELDS: &[&str] = &[
    "from",
    "to",
    "answer_url",
    "answer_method",
    "ring_url",
    "ring_method",
    "hangup_url",
    "hangup_method",
    "fallback_url",
    "fallback_method",
    "caller_name",
    "send_digits",
    "send_on_preanswer",
    "time_limit",
    "hangup_on_ring",
    "machine_detection",
    "machine_detection_time",
    "machine_detection_url",
    "machine_detection_method",
    "machine_detection_maximum_speech_length",
    "machine_detection_initial_silence",
    "machine_detection_maximum_words",
    "sip_headers",
    "ring_timeout",
    "parent_call_uuid",
    "error_if_parent_not_found",
];

/// Twilio's 400 for a Create Call with a parameter it does not take, or a machine
/// detection mode it does not know.
fn twilio_dial_fields(form: &[(String, String)]) -> Result<(), (StatusCode, Value)> {
    if let Some((unknown, _)) = form
        .iter()
        .find(|(k, _)| !TWILIO_DIAL_FIELDS.contains(&k.as_str()))
    {
        return Err(twilio_error(
            StatusCode::BAD_REQUEST,
            20001,
            format!("Unknown parameter {unknown}"),
        ));
    }
    match form.iter().find(|(k, _)| k == "MachineDetection") {
        Some((_, mode)) if !matches!(mode.as_str(), "Enable" | "DetectMessageEnd") => {
            Err(twilio_error(
                StatusCode::BAD_REQUEST,
                21626,
                format!("Invalid MachineDetection {mode}: use Enable or DetectMessageEnd"),
            ))
        }
        _ => Ok(()),
    }
}

/// Plivo's 400 for a Make Call with a key it does not take, or a `machine_detection` other
/// than `true` or `hangup`.
fn plivo_dial_fields(body: Option<&Value>) -> Result<(), (StatusCode, Value)> {
    let fields = plivo_fields(body, PLIVO_DIAL_FIELDS)?;
    match fields.get("machine_detection") {
        None => Ok(()),
        Some(mode) if mode == "true" || mode == "hangup" || *mode == Value::Bool(true) => Ok(()),
        Some(mode) => Err(plivo_error(
            StatusCode::BAD_REQUEST,
            format!("machine_detection must be true or hangup, not {mode}"),
        )),
    }
}

/// The body as a JSON object whose keys are all in `allowed`, or the 400 Plivo would answer.
fn plivo_fields<'a>(
    body: Option<&'a Value>,
    allowed: &[&str],
) -> Result<&'a serde_json::Map<String, Value>, (StatusCode, Value)> {
    let Some(fields) = body.and_then(Value::as_object) else {
        return Err(plivo_error(
            StatusCode::BAD_REQUEST,
            "a JSON object body is required".into(),
        ));
    };
    if let Some(unknown) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(plivo_error(
            StatusCode::BAD_REQUEST,
            format!("unknown parameter {unknown}"),
        ));
    }
    for (key, value) in fields {
        let method_ok = !key.ends_with("_method")
            || value
                .as_str()
                .is_some_and(|m| matches!(m.to_ascii_uppercase().as_str(), "GET" | "POST"));
        if !method_ok {
            return Err(plivo_error(
                StatusCode::BAD_REQUEST,
                format!("{key} must be GET or POST"),
            ));
        }
    }
    Ok(fields)
}

fn plivo_number_route(
    shared: &Mutex<Shared>,
    method: &Method,
    path: &str,
    number: &str,
    body: Option<&Value>,
    id: u32,
) -> (StatusCode, Value) {
    let mut shared = shared.lock().unwrap();
    let known_apps: Vec<String> = shared
        .plivo_apps
        .iter()
        .filter_map(|a| a["app_id"].as_str().map(str::to_owned))
        .collect();
    let Some(resource) = shared.plivo_numbers.get_mut(number) else {
        return not_found(false, path);
    };
    match method.as_str() {
        "GET" => (StatusCode::OK, resource.clone()),
        "POST" => {
            let fields = match plivo_fields(body, PLIVO_NUMBER_FIELDS) {
                Ok(fields) => fields,
                Err(refusal) => return refusal,
            };
            if let Some(app_id) = fields.get("app_id") {
                let app_id = app_id.as_str().unwrap_or_default();
                if !known_apps.iter().any(|known| known == app_id) {
                    return plivo_error(
                        StatusCode::NOT_FOUND,
                        format!("application {app_id} not found"),
                    );
                }
                resource["application"] =
                    json!(format!("/v1/Account/{PLIVO_ID}/Application/{app_id}/"));
            }
            (
                StatusCode::ACCEPTED,
                json!({"api_id": fake_uuid(id), "message": "changed"}),
            )
        }
        _ => not_found(false, path),
    }
}

/// A Plivo application as the list and lookups show it, its URLs unset.
fn plivo_app(index: usize, name: &str) -> Value {
    let app_id = format!("{}", 20_468_599_130_939_380_u64 + index as u64);
    json!({
        "app_id": app_id, "app_name": name, "answer_url": "", "answer_method": "POST",
        "hangup_url": "", "hangup_method": "POST", "fallback_answer_url": "",
        "fallback_method": "POST", "message_url": "", "message_method": "POST",
        "default_app": false, "default_endpoint_app": false, "enabled": true,
        "public_uri": false, "sub_account": null,
        "sip_uri": format!("sip:{app_id}@app.plivo.com"),
        "resource_uri": format!("/v1/Account/{PLIVO_ID}/Application/{app_id}/"),
    })
}

fn plivo_app_route(
    shared: &Mutex<Shared>,
    method: &Method,
    path: &str,
    query: &str,
    app_id: Option<&str>,
    body: Option<&Value>,
    id: u32,
) -> (StatusCode, Value) {
    let mut shared = shared.lock().unwrap();
    match (method.as_str(), app_id) {
        ("GET", None) => {
            let params: HashMap<String, String> =
                serde_urlencoded::from_str(query).unwrap_or_default();
            let number = |key: &str, default: usize| {
                params
                    .get(key)
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(default)
            };
            let (limit, offset) = (number("limit", 20), number("offset", 0));
            if !(1..=20).contains(&limit) {
                return plivo_error(StatusCode::BAD_REQUEST, "limit must be 1 to 20".into());
            }
            let total = shared.plivo_apps.len();
            let objects: Vec<Value> = shared
                .plivo_apps
                .iter()
                .skip(offset)
                .take(limit)
                .cloned()
                .collect();
            let next = (offset + limit < total).then(|| {
                format!(
                    "/v1/Account/{PLIVO_ID}/Application/?limit={limit}&offset={}",
                    offset + limit
                )
            });
            (
                StatusCode::OK,
                json!({"api_id": fake_uuid(id), "objects": objects,
                       "meta": {"limit": limit, "offset": offset, "total_count": total,
                                "next": next, "previous": null}}),
            )
        }
        ("POST", None) => {
            let mut allowed = PLIVO_APP_FIELDS.to_vec();
            allowed.push("app_name");
            let fields = match plivo_fields(body, &allowed) {
                Ok(fields) => fields,
                Err(refusal) => return refusal,
            };
            let Some(name) = fields.get("app_name").and_then(Value::as_str) else {
                return plivo_error(StatusCode::BAD_REQUEST, "app_name is required".into());
            };
            let mut app = plivo_app(shared.plivo_apps.len(), name);
            for (key, value) in fields {
                app[key] = value.clone();
            }
            let app_id = app["app_id"].clone();
            shared.plivo_apps.push(app);
            (
                StatusCode::CREATED,
                json!({"api_id": fake_uuid(id), "app_id": app_id, "message": "created"}),
            )
        }
        (verb, Some(app_id)) => {
            let Some(app) = shared.plivo_apps.iter_mut().find(|a| a["app_id"] == app_id) else {
                return not_found(false, path);
            };
            match verb {
                "GET" => {
                    let mut found = app.clone();
                    found["api_id"] = json!(fake_uuid(id));
                    (StatusCode::OK, found)
                }
                "POST" => {
                    let fields = match plivo_fields(body, PLIVO_APP_FIELDS) {
                        Ok(fields) => fields,
                        Err(refusal) => return refusal,
                    };
                    for (key, value) in fields {
                        app[key] = value.clone();
                    }
                    (
                        StatusCode::ACCEPTED,
                        json!({"api_id": fake_uuid(id), "message": "changed"}),
                    )
                }
                _ => not_found(false, path),
            }
        }
        _ => not_found(false, path),
    }
}

// ---- The phone network behind dialled Twilio calls ----

fn form_field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A Twilio POST the fake answered: a new call starts playing out, a hang-up ends one.
fn network_sees(shared: &Arc<Mutex<Shared>>, path: &str, form: &[(String, String)], body: &Value) {
    let mut guard = shared.lock().unwrap();
    let Some(network) = guard.network.as_mut() else {
        return;
    };
    if path.ends_with("/Calls.json") {
        let (Some(sid), Some(to)) = (body["sid"].as_str(), form_field(form, "To")) else {
            return;
        };
        let attempt = network.dials.iter().filter(|(n, _)| n == to).count();
        let outcome = network
            .outcomes
            .get(to)
            .and_then(|list| list.get(attempt).or(list.last()))
            .copied()
            .unwrap_or(Outcome::Answered);
        network
            .dials
            .push((to.to_owned(), std::time::Instant::now()));
        let status_url = form_field(form, "StatusCallback")
            .unwrap_or_default()
            .to_owned();
        network.live.insert(sid.to_owned(), status_url.clone());
        network.max_live = network.max_live.max(network.live.len());
        let call = PlayedCall {
            sid: sid.to_owned(),
            to: to.to_owned(),
            from: form_field(form, "From").unwrap_or_default().to_owned(),
            answer_url: form_field(form, "Url").unwrap_or_default().to_owned(),
            status_url,
        };
        let script = network.script;
        drop(guard);
        tokio::spawn(play(Arc::clone(shared), call, outcome, script));
    } else if let Some(sid) = path
        .rsplit('/')
        .next()
        .and_then(|last| last.strip_suffix(".json"))
        .filter(|_| path.contains("/Calls/"))
        && let Some(asked) = form_field(form, "Status")
        && let Some(status_url) = network.live.remove(sid)
    {
        // Twilio ends the call and reports its end like any other.
        network.hung_up.push(sid.to_owned());
        let status = if asked == "canceled" {
            "canceled"
        } else {
            "completed"
        };
        let sid = sid.to_owned();
        drop(guard);
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            deliver(
                &shared,
                &status_url,
                &[("CallSid", sid.as_str()), ("CallStatus", status)],
            )
            .await;
        });
    }
}

struct PlayedCall {
    sid: String,
    to: String,
    from: String,
    answer_url: String,
    status_url: String,
}

/// Plays one call out by its outcome.
async fn play(shared: Arc<Mutex<Shared>>, call: PlayedCall, outcome: Outcome, script: CallScript) {
    let base = [
        ("CallSid", call.sid.as_str()),
        ("AccountSid", TWILIO_SID),
        ("From", call.from.as_str()),
        ("To", call.to.as_str()),
        ("Direction", "outbound-api"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut fields: Vec<(&str, &str)> = base.to_vec();
        fields.extend_from_slice(extra);
        fields
    };
    tokio::time::sleep(script.ring).await;
    if !still_live(&shared, &call.sid) {
        return;
    }
    set_status(&shared, &call.sid, "ringing");
    deliver(
        &shared,
        &call.status_url,
        &with(&[("CallStatus", "ringing")]),
    )
    .await;
    tokio::time::sleep(script.ring).await;
    let final_status = match outcome {
        Outcome::Busy => "busy",
        Outcome::NoAnswer => "no-answer",
        Outcome::Failed => "failed",
        Outcome::Answered | Outcome::Machine => {
            if !still_live(&shared, &call.sid) {
                return;
            }
            let answered_by = if outcome == Outcome::Machine {
                "machine_start"
            } else {
                "human"
            };
            set_status(&shared, &call.sid, "in-progress");
            deliver(
                &shared,
                &call.answer_url,
                &with(&[("CallStatus", "in-progress"), ("AnsweredBy", answered_by)]),
            )
            .await;
            if outcome == Outcome::Answered {
                let until = tokio::time::Instant::now() + script.talk;
                while tokio::time::Instant::now() < until {
                    if !still_live(&shared, &call.sid) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            "completed"
        }
    };
    // Ended by a hang-up meanwhile: that reported the end already.
    let ended = {
        let mut guard = shared.lock().unwrap();
        guard
            .network
            .as_mut()
            .and_then(|n| n.live.remove(&call.sid))
    };
    if ended.is_none() {
        return;
    }
    set_status(&shared, &call.sid, final_status);
    let seconds = if final_status == "completed" {
        "7"
    } else {
        "0"
    };
    deliver(
        &shared,
        &call.status_url,
        &with(&[("CallStatus", final_status), ("CallDuration", seconds)]),
    )
    .await;
}

fn still_live(shared: &Mutex<Shared>, sid: &str) -> bool {
    shared
        .lock()
        .unwrap()
        .network
        .as_ref()
        .is_some_and(|n| n.live.contains_key(sid))
}

fn set_status(shared: &Mutex<Shared>, sid: &str, status: &str) {
    shared
        .lock()
        .unwrap()
        .calls
        .insert(sid.to_owned(), status.to_owned());
}

/// POSTs a webhook to `public_url` (as given in the dial request) at the first target that
/// answers, signed over the public URL as Twilio signs.
async fn deliver(shared: &Mutex<Shared>, public_url: &str, fields: &[(&str, &str)]) {
    let Some(path) = public_url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_owned()))
    else {
        return;
    };
    let pairs: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let signature = gemini_phone::signature::twilio_signature(TWILIO_TOKEN, public_url, &pairs);
    let (targets, first, http) = {
        let mut guard = shared.lock().unwrap();
        let Some(network) = guard.network.as_mut() else {
            return;
        };
        let first = network.next_target;
        network.next_target = network.next_target.wrapping_add(1);
        (network.targets.clone(), first, network.http.clone())
    };
    for offset in 0..targets.len() {
        let target = &targets[(first + offset) % targets.len()];
        let sent = http
            .post(format!("{target}{path}"))
            .header("X-Twilio-Signature", &signature)
            .form(&pairs)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if sent.is_ok() {
            return;
        }
        // A dead instance (refused, or reset mid-request): the load balancer tries the next.
    }
}

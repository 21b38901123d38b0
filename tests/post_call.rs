//! The post-call webhook, end to end: a receiver on 127.0.0.1 gets each ended call's record,
//! signed, exactly once; a failed attempt is retried; a restart between attempts still
//! delivers. Also `LOG_FORMAT=json` on the real binary.

mod support;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use gemini_phone::app::App;
use gemini_phone::calls::post_call::{self, Backoff};
use gemini_phone::config::Config;
use gemini_phone::server;
use gemini_phone::signature::{twilio_signature, unix_now};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use support::phone::{DEFAULT_TIMEOUT, TwilioCaller};
use support::rest::{TWILIO_SID, TWILIO_TOKEN, fake_call_sid};
use support::{API_TOKEN, stream_params};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const SECRET: &str = "whsec-test-0123456789abcdef";
/// How long a test waits for a delivery that should come.
const DELIVERED_WITHIN: Duration = Duration::from_secs(10);
/// How long a test watches for a delivery that should not come: many poll intervals.
const NOTHING_MORE_FOR: Duration = Duration::from_millis(800);

// ---- The receiver: what the README tells a user to write. ----

/// Checks `X-Gemini-Phone-Signature` the way the README's example does: split `t` and `v1`,
/// refuse a time more than five minutes off, HMAC-SHA256 `"<t>.<raw body>"` with the
/// secret, compare in constant time.
fn verify_signature(secret: &str, header: &str, body: &[u8], now: u64) -> bool {
    let mut timestamp = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => timestamp = Some(value),
            Some(("v1", value)) => signature = Some(value),
            _ => {}
        }
    }
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return false;
    };
    let Ok(sent_at) = timestamp.parse::<u64>() else {
        return false;
    };
    if now.abs_diff(sent_at) > 300 {
        return false;
    }
    let Some(signature) = hex_decode(signature) else {
        return false;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
    answered: u16,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    fn verified(&self) -> bool {
        verify_signature(
            SECRET,
            self.header("X-Gemini-Phone-Signature"),
            &self.body,
            unix_now(),
        )
    }
}

#[derive(Default)]
struct Inbox {
    /// Status codes to answer with, in order; 200 once they run out.
    script: VecDeque<u16>,
    received: Vec<Received>,
}

/// A webhook receiver on 127.0.0.1.
struct Receiver {
    url: String,
    inbox: Arc<Mutex<Inbox>>,
}

impl Receiver {
    async fn start(script: &[u16]) -> Receiver {
        let inbox = Arc::new(Mutex::new(Inbox {
            script: script.iter().copied().collect(),
            received: Vec::new(),
        }));
        let router = axum::Router::new()
            .route("/hooks/calls", axum::routing::post(receive))
            .with_state(Arc::clone(&inbox));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Receiver {
            url: format!("http://{addr}/hooks/calls"),
            inbox,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.inbox.lock().expect("inbox").received.clone()
    }

    /// Waits until `n` requests arrived; returns them all.
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + DELIVERED_WITHIN;
        loop {
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} deliveries expected, {} arrived",
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asserts that, a while later, exactly `n` requests have arrived in all.
    async fn assert_no_more_than(&self, n: usize) {
        tokio::time::sleep(NOTHING_MORE_FOR).await;
        assert_eq!(
            self.received().len(),
            n,
            "no delivery after the accepted one"
        );
    }
}

async fn receive(
    State(inbox): State<Arc<Mutex<Inbox>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut inbox = inbox.lock().expect("inbox");
    let answered = inbox.script.pop_front().unwrap_or(200);
    inbox.received.push(Received {
        headers,
        body,
        answered,
    });
    StatusCode::from_u16(answered).unwrap_or(StatusCode::OK)
}

// ---- The server, with short delivery timings. ----

/// Delivery timings short enough for tests.
fn quick(settings: &mut post_call::Settings) {
    settings.settle = Duration::from_millis(150);
    settings.poll_every = Duration::from_millis(50);
    settings.request_timeout = Duration::from_secs(2);
    settings.lease = Duration::from_secs(5);
    settings.backoff = Backoff {
        first_retry: Duration::from_millis(200),
        max_interval: Duration::from_secs(1),
        retry_for: Duration::from_secs(60),
    };
}

/// A SQLite file the servers of one test share.
struct SharedDb {
    url: String,
    _dir: tempfile::TempDir,
}

impl SharedDb {
    fn new() -> SharedDb {
        let dir = tempfile::tempdir().expect("a temp dir");
        SharedDb {
            url: format!("sqlite://{}/records.db", dir.path().display()),
            _dir: dir,
        }
    }
}

/// The real app on 127.0.0.1 (echo agent, a Twilio account) with the post-call webhook
/// pointed at `receiver` and `tune`d delivery timings.
struct Server {
    addr: SocketAddr,
    app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(
        db: &SharedDb,
        receiver: &Receiver,
        tune: impl FnOnce(&mut post_call::Settings),
    ) -> Server {
        let vars = [
            ("AGENT", "echo"),
            ("PUBLIC_URL", "https://phone.example.com"),
            (
                "PROMPTS_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/prompts"),
            ),
            ("DATABASE_URL", db.url.as_str()),
            ("API_TOKEN", API_TOKEN),
            ("TWILIO_ACCOUNT_SID", TWILIO_SID),
            ("TWILIO_AUTH_TOKEN", TWILIO_TOKEN),
            ("TWILIO_PHONE_NUMBER", "+15550009999"),
            ("POST_CALL_WEBHOOK_URL", receiver.url.as_str()),
            ("POST_CALL_WEBHOOK_SECRET", SECRET),
        ];
        let config = Config::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
        .expect("a valid configuration");
        let mut settings = post_call::Settings::for_config(&config).expect("the webhook is set");
        tune(&mut settings);
        let app = Arc::new(
            App::with_post_call(config, Some(settings))
                .await
                .expect("the app starts"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server::serve(listener, Arc::clone(&app), async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            app,
            stop: Some(stop),
            task,
        }
    }

    /// What SIGTERM does: the shutdown signal (the webhook worker stops), then the server.
    async fn stop(mut self) {
        self.app.shutdown.begin();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
    }

    fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs a Twilio webhook, signed as Twilio signs it.
    async fn twilio_webhook(&self, path: &str, form: &[(&str, &str)]) -> String {
        let pairs: Vec<(String, String)> = form
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let public = format!("https://phone.example.com{path}");
        let response = reqwest::Client::new()
            .post(self.http(path))
            .header(
                "X-Twilio-Signature",
                twilio_signature(TWILIO_TOKEN, &public, &pairs),
            )
            .form(&pairs)
            .send()
            .await
            .expect("webhook request");
        assert!(
            response.status().is_success(),
            "{path} answered {}",
            response.status()
        );
        response.text().await.unwrap_or_default()
    }

    /// An inbound call's answer webhook; returns the stream parameters of its TwiML.
    async fn answer(&self, call_sid: &str) -> Vec<(String, String)> {
        let xml = self
            .twilio_webhook(
                "/twilio/answer",
                &[
                    ("CallSid", call_sid),
                    ("From", "+15550001111"),
                    ("To", "+15550009999"),
                    ("Direction", "inbound"),
                ],
            )
            .await;
        stream_params(&xml)
    }

    /// `GET /calls/{id}` (a CallSid works too) as JSON.
    async fn record(&self, id: &str) -> Value {
        reqwest::Client::new()
            .get(self.http(&format!("/calls/{id}")))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("GET /calls/{id}")
            .json()
            .await
            .expect("a JSON record")
    }
}

/// A call Twilio reports `completed` without a stream ever starting (the caller hung up
/// during the greeting TwiML, say): answer webhook, then the status callback.
async fn call_ended_by_status_callback(server: &Server, call_sid: &str) -> String {
    server.answer(call_sid).await;
    server
        .twilio_webhook(
            "/twilio/status",
            &[
                ("CallSid", call_sid),
                ("CallStatus", "completed"),
                ("CallDuration", "3"),
            ],
        )
        .await;
    let record = server.record(call_sid).await;
    record["id"].as_str().expect("a record id").to_owned()
}

#[tokio::test]
async fn a_call_that_ends_is_posted_once_signed_with_its_final_record() {
    let receiver = Receiver::start(&[]).await;
    let db = SharedDb::new();
    let server = Server::start(&db, &receiver, quick).await;

    // A whole inbound call: answer webhook, media stream, the caller hangs up.
    let call_sid = fake_call_sid(0x0c1);
    let params = server.answer(&call_sid).await;
    let custom: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let url = format!("ws://{}/twilio/stream", server.addr);
    let mut caller = TwilioCaller::connect(&url, DEFAULT_TIMEOUT).await;
    assert!(caller.send_connected().await);
    assert!(caller.send_start(&call_sid, "MZpostcall1", &custom).await);
    assert!(caller.send_media(&[0xFF; 1600]).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(caller.send_stop().await);
    caller.close().await;

    let delivered = receiver.wait_for(1).await;
    let delivery = &delivered[0];
    assert!(
        delivery.verified(),
        "the signature checks out: {delivery:?}"
    );
    assert_eq!(delivery.header("content-type"), "application/json");
    assert_eq!(delivery.header("X-Gemini-Phone-Event"), "call.ended");
    assert_eq!(delivery.header("X-Gemini-Phone-Attempt"), "1");
    let body = delivery.json();
    assert_eq!(body["status"], "completed");
    assert_eq!(body["provider_call_id"], call_sid.as_str());
    assert_eq!(body["end_reason"], "caller hung up");
    assert_eq!(delivery.header("X-Gemini-Phone-Delivery"), body["id"]);
    // The same JSON `GET /calls/{id}` gives, history, times and all.
    assert_eq!(body, server.record(&call_sid).await);

    // A tampered body or another key fails the receiver's check.
    let header = delivery.header("X-Gemini-Phone-Signature");
    let mut tampered = delivery.body.to_vec();
    tampered.push(b' ');
    assert!(!verify_signature(SECRET, header, &tampered, unix_now()));
    assert!(!verify_signature(
        "another-secret-0123",
        header,
        &delivery.body,
        unix_now()
    ));
    assert!(!verify_signature(
        SECRET,
        header,
        &delivery.body,
        unix_now() + 3600
    ));

    receiver.assert_no_more_than(1).await;
    server.stop().await;
}

#[tokio::test]
async fn a_500_then_a_200_gives_one_accepted_delivery_after_a_retry() {
    let receiver = Receiver::start(&[500]).await;
    let db = SharedDb::new();
    let server = Server::start(&db, &receiver, quick).await;

    let call_sid = fake_call_sid(0x500);
    let id = call_ended_by_status_callback(&server, &call_sid).await;

    let delivered = receiver.wait_for(2).await;
    let answers: Vec<u16> = delivered.iter().map(|d| d.answered).collect();
    assert_eq!(answers, [500, 200]);
    let attempts: Vec<&str> = delivered
        .iter()
        .map(|d| d.header("X-Gemini-Phone-Attempt"))
        .collect();
    assert_eq!(attempts, ["1", "2"]);
    for delivery in &delivered {
        assert!(delivery.verified());
        assert_eq!(delivery.header("X-Gemini-Phone-Delivery"), id);
        assert_eq!(delivery.json()["status"], "completed");
        // The provider's duration, written after the status, made it in.
        assert_eq!(delivery.json()["duration_seconds"], 3);
    }
    receiver.assert_no_more_than(2).await;
    let state = server
        .app
        .store
        .post_call_state(&id)
        .await
        .expect("state")
        .expect("queued");
    assert!(state.delivered_ms.is_some());
    assert_eq!(state.attempts, 2);
    server.stop().await;
}

#[tokio::test]
async fn a_restart_between_attempts_still_delivers_once() {
    let receiver = Receiver::start(&[500]).await;
    let db = SharedDb::new();
    // The first server retries only after it has been stopped.
    let first = Server::start(&db, &receiver, |settings| {
        quick(settings);
        settings.backoff.first_retry = Duration::from_secs(1);
    })
    .await;
    let call_sid = fake_call_sid(0x5ea);
    let id = call_ended_by_status_callback(&first, &call_sid).await;
    let failed = receiver.wait_for(1).await;
    assert_eq!(failed[0].answered, 500);
    first.stop().await;

    let second = Server::start(&db, &receiver, |settings| {
        quick(settings);
        settings.backoff.first_retry = Duration::from_secs(1);
    })
    .await;
    let delivered = receiver.wait_for(2).await;
    assert_eq!(delivered[1].answered, 200);
    assert!(delivered[1].verified());
    assert_eq!(delivered[1].header("X-Gemini-Phone-Delivery"), id);
    assert_eq!(delivered[1].header("X-Gemini-Phone-Attempt"), "2");
    receiver.assert_no_more_than(2).await;
    second.stop().await;
}

// ---- LOG_FORMAT on the real binary. ----

fn binary(log_format: &str, data: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_gemini-phone"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LOG_FORMAT", log_format)
        .env("RUST_LOG", "info")
        .env("AGENT", "echo")
        .env("PUBLIC_URL", "https://phone.example.com")
        .env(
            "PROMPTS_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/prompts"),
        )
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/records.db", data.display()),
        )
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        // No `.env` of the developer's is read from here.
        .current_dir(data)
        .stdin(std::process::Stdio::null());
    command
}

#[test]
fn log_format_json_writes_one_json_object_a_line() {
    use std::io::BufRead as _;
    let data = tempfile::tempdir().expect("a temp dir");
    let mut child = binary("json", data.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the binary");
    let stdout = child.stdout.take().expect("stdout");
    // Every line up to the "listening" one, each of which must be a JSON object.
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(stdout).lines().take(20) {
        let Ok(line) = line else { break };
        let parsed: Result<Value, _> = serde_json::from_str(&line);
        let listening = parsed.as_ref().is_ok_and(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("gemini-phone listening"))
        });
        lines.push((line, parsed));
        if listening {
            break;
        }
    }
    // Only this test's own child, by its handle.
    let _ = child.kill();
    let _ = child.wait();
    for (text, parsed) in &lines {
        let line = parsed
            .as_ref()
            .unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        assert!(line["level"].is_string(), "{line}");
        assert!(line["timestamp"].is_string(), "{line}");
        assert!(line["target"].is_string(), "{line}");
    }
    let (_, listening) = lines.last().expect("log lines");
    let listening = listening.as_ref().expect("JSON");
    assert_eq!(listening["level"], "INFO", "{listening}");
    assert!(
        listening["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("gemini-phone listening")),
        "no listening line in {lines:?}"
    );
    // Event fields sit at the top level, where log shippers index them.
    assert_eq!(listening["agent"], "echo", "{listening}");
}

#[test]
fn an_unknown_log_format_stops_start_up_naming_the_variable() {
    let data = tempfile::tempdir().expect("a temp dir");
    let output = binary("xml", data.path()).output().expect("run the binary");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim(),
        "configuration error: LOG_FORMAT: `xml` is not a log format; use text (the default) or json"
    );
}

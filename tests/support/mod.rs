//! Shared fakes and helpers for whole-call tests: the real server in-process on loopback,
//! a fake Gemini Live server and scripted Twilio/Plivo callers that speak the real wire
//! protocols.
#![allow(dead_code)]

pub mod answer_xml;
pub mod binary;
pub mod gemini;
pub mod google;
pub mod phone;
pub mod playback;
pub mod rest;
pub mod world;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use answer_xml::stream_params;
use gemini_phone::app::App;
use gemini_phone::config::Config;
use gemini_phone::server;
use gemini_phone::signature;
use serde_json::Value;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The API key the test server is configured with.
pub const TEST_API_KEY: &str = "test-key-0123456789";

/// The bearer token test servers require on `/calls`.
pub const API_TOKEN: &str = "test-api-token-0123456789";

/// Variables that enable both providers against the fake REST API at `rest_url`.
pub fn provider_vars(rest_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("API_TOKEN", API_TOKEN.to_owned()),
        ("TWILIO_ACCOUNT_SID", rest::TWILIO_SID.to_owned()),
        ("TWILIO_AUTH_TOKEN", rest::TWILIO_TOKEN.to_owned()),
        ("TWILIO_PHONE_NUMBER", "+15550009999".to_owned()),
        ("TWILIO_API_URL", rest_url.to_owned()),
        ("PLIVO_AUTH_ID", rest::PLIVO_ID.to_owned()),
        ("PLIVO_AUTH_TOKEN", rest::PLIVO_TOKEN.to_owned()),
        ("PLIVO_PHONE_NUMBER", "15550008888".to_owned()),
        ("PLIVO_API_URL", rest_url.to_owned()),
    ]
}

/// A running server on 127.0.0.1 with its shared state.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its shared state, for assertions.
    pub app: Arc<App>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    /// Holds the SQLite file of servers started without a `DATABASE_URL`.
    _data: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts the server with the base test configuration plus `vars` (later entries win).
    pub async fn start(vars: &[(&str, &str)]) -> TestServer {
        let prompts = concat!(env!("CARGO_MANIFEST_DIR"), "/prompts");
        let mut all: Vec<(String, String)> = vec![
            ("GEMINI_API_KEY".into(), TEST_API_KEY.into()),
            ("PUBLIC_URL".into(), "https://phone.example.com".into()),
            ("PROMPTS_DIR".into(), prompts.into()),
            ("GEMINI_SETUP_TIMEOUT_SECS".into(), "2".into()),
            // Tests poll the API in tight loops; the rate limit has tests of its own.
            ("API_RATE_LIMIT".into(), "100000".into()),
        ];
        all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let data = if all.iter().any(|(k, _)| k == "DATABASE_URL") {
            None
        } else {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}/records.db", dir.path().display());
            all.push(("DATABASE_URL".into(), url));
            Some(dir)
        };
        let config = Config::from_lookup(|name| {
            all.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
        .expect("test configuration is valid");
        let app = Arc::new(App::new(config).await.expect("app state"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server::serve(listener, Arc::clone(&app), async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            app,
            shutdown: Some(tx),
            task,
            _data: data,
        }
    }

    /// Starts a server with both providers' accounts on the fake REST API at `rest_url`,
    /// Gemini at `gemini_url`, plus `extra` variables.
    pub async fn with_providers(
        rest_url: &str,
        gemini_url: &str,
        extra: &[(&str, &str)],
    ) -> TestServer {
        let mut vars = provider_vars(rest_url);
        vars.push(("GEMINI_LIVE_URL", gemini_url.to_owned()));
        vars.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Self::start(&vars).await
    }

    /// Starts a Gemini-mode server talking to `gemini_url`.
    pub async fn with_gemini(gemini_url: &str) -> TestServer {
        Self::start(&[("GEMINI_LIVE_URL", gemini_url)]).await
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `ws://127.0.0.1:PORT{path}`.
    pub fn ws(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// `GET /health` as JSON.
    pub async fn health(&self) -> Value {
        reqwest::get(self.http("/health"))
            .await
            .expect("GET /health")
            .json()
            .await
            .expect("health JSON")
    }

    /// Waits until `/health` reports `n` active calls; false on timeout.
    pub async fn wait_active_calls(&self, n: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.health().await["active_calls"] == n {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// POSTs a provider webhook (form body), signed the way the provider signs it when the
    /// server checks signatures. `route` is `twilio` or `plivo`; `path` includes any query.
    pub async fn webhook(&self, route: &str, path: &str, form: &[(&str, &str)]) -> (u16, String) {
        let pairs: Vec<(String, String)> = form
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // The signed URL is the public one the provider was given, not the loopback one.
        let public = format!("https://phone.example.com{path}");
        let mut request = reqwest::Client::new().post(self.http(path)).form(&pairs);
        if self.app.providers.webhook_secret(route).is_some() {
            request = match route {
                "twilio" => request.header(
                    "X-Twilio-Signature",
                    signature::twilio_signature(rest::TWILIO_TOKEN, &public, &pairs),
                ),
                _ => {
                    let nonce = "61537282940138820937";
                    request.header("X-Plivo-Signature-V3-Nonce", nonce).header(
                        "X-Plivo-Signature-V3",
                        signature::plivo_v3_signature(rest::PLIVO_TOKEN, &public, nonce, &pairs),
                    )
                }
            };
        }
        let response = request.send().await.expect("webhook request");
        (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        )
    }

    /// Answers a call of `provider` through the answer webhook and returns the stream
    /// parameters its XML carries (the provider would put them in the stream's `start`).
    pub async fn answer(
        &self,
        provider: phone::Provider,
        call_id: &str,
        form: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        let route = route(provider);
        let id_field = match provider {
            phone::Provider::Twilio => "CallSid",
            phone::Provider::Plivo => "CallUUID",
        };
        let mut fields = vec![(id_field, call_id)];
        fields.extend_from_slice(form);
        let (status, xml) = self
            .webhook(route, &format!("/{route}/answer"), &fields)
            .await;
        assert_eq!(status, 200, "answer webhook: {xml}");
        stream_params(&xml)
    }

    /// `GET /calls/{id}` as JSON (with [`API_TOKEN`]).
    pub async fn record(&self, id: &str) -> Value {
        reqwest::Client::new()
            .get(self.http(&format!("/calls/{id}")))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("GET /calls/{id}")
            .json()
            .await
            .expect("record JSON")
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
    }
}

/// A scripted caller of either provider, so each whole-call test runs for both.
pub enum Caller {
    /// Twilio Media Streams.
    Twilio(phone::TwilioCaller),
    /// Plivo Audio Streams.
    Plivo(phone::PlivoCaller),
}

/// Both providers, for tests that loop over them.
pub const PROVIDERS: [phone::Provider; 2] = [phone::Provider::Twilio, phone::Provider::Plivo];

/// The `record` stream parameter of an answer webhook's XML: the id of the call's record.
pub fn record_param(params: &[(String, String)]) -> String {
    params
        .iter()
        .find(|(k, _)| k == "record")
        .map(|(_, v)| v.clone())
        .expect("the answer XML names the call's record")
}

/// Route segment of a provider.
pub fn route(provider: phone::Provider) -> &'static str {
    match provider {
        phone::Provider::Twilio => "twilio",
        phone::Provider::Plivo => "plivo",
    }
}

impl Caller {
    /// Connects to the server's stream route for `provider`.
    pub async fn connect(server: &TestServer, provider: phone::Provider) -> Caller {
        let url = server.ws(&format!("/{}/stream", route(provider)));
        match provider {
            phone::Provider::Twilio => {
                Caller::Twilio(phone::TwilioCaller::connect(&url, phone::DEFAULT_TIMEOUT).await)
            }
            phone::Provider::Plivo => {
                Caller::Plivo(phone::PlivoCaller::connect(&url, phone::DEFAULT_TIMEOUT).await)
            }
        }
    }

    /// Answers a call through the webhook, connects its stream and sends `start` with the
    /// parameters the answer XML gave, as the provider would.
    pub async fn start(server: &TestServer, provider: phone::Provider, call_id: &str) -> Caller {
        let form: &[(&str, &str)] = match provider {
            phone::Provider::Twilio => &[
                ("From", "+15550001111"),
                ("To", "+15550002222"),
                ("Direction", "inbound"),
            ],
            phone::Provider::Plivo => &[
                ("From", "15550001111"),
                ("To", "15550002222"),
                ("Direction", "inbound"),
            ],
        };
        let params = server.answer(provider, call_id, form).await;
        Caller::start_with(server, provider, call_id, &params).await
    }

    /// Connects and sends `start` with exactly these stream parameters.
    pub async fn start_with(
        server: &TestServer,
        provider: phone::Provider,
        call_id: &str,
        params: &[(String, String)],
    ) -> Caller {
        let mut caller = Caller::connect(server, provider).await;
        match &mut caller {
            Caller::Twilio(c) => {
                assert!(c.send_connected().await);
                let stream_sid = format!("MZ{call_id}");
                let custom: Vec<(&str, &str)> = params
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                assert!(c.send_start(call_id, &stream_sid, &custom).await);
            }
            Caller::Plivo(c) => {
                let stream_id = format!("stream-{call_id}");
                let extra = params
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(";");
                assert!(c.send_start(call_id, &stream_id, &extra).await);
            }
        }
        caller
    }

    /// Sends μ-law audio as 20 ms media messages, all at once.
    pub async fn send_media(&mut self, mulaw: &[u8]) -> bool {
        match self {
            Caller::Twilio(c) => c.send_media(mulaw).await,
            Caller::Plivo(c) => c.send_media(mulaw).await,
        }
    }

    /// Sends a raw text frame.
    pub async fn send_raw(&mut self, text: &str) -> bool {
        match self {
            Caller::Twilio(c) => c.send_raw(text).await,
            Caller::Plivo(c) => c.send_raw(text).await,
        }
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, bytes: &[u8]) -> bool {
        match self {
            Caller::Twilio(c) => c.send_binary(bytes).await,
            Caller::Plivo(c) => c.send_binary(bytes).await,
        }
    }

    /// Sends the provider's `stop` and closes the socket: the caller hung up.
    pub async fn hang_up(&mut self) {
        match self {
            Caller::Twilio(c) => {
                c.send_stop().await;
                c.close().await;
            }
            Caller::Plivo(c) => {
                c.send_stop().await;
                c.close().await;
            }
        }
    }

    /// Collects outbound messages until `frames` media frames arrived or `timeout`.
    pub async fn recv_audio(&mut self, frames: usize, timeout: Duration) -> phone::Received {
        match self {
            Caller::Twilio(c) => c.recv_audio(frames, timeout).await,
            Caller::Plivo(c) => c.recv_audio(frames, timeout).await,
        }
    }

    /// Collects everything that arrives within `window`.
    pub async fn collect_for(&mut self, window: Duration) -> phone::Received {
        match self {
            Caller::Twilio(c) => c.collect_for(window).await,
            Caller::Plivo(c) => c.collect_for(window).await,
        }
    }

    /// True once the server closed the socket within `timeout`.
    /// Reads until `done` holds for what arrived (Err with what did arrive on time-out).
    pub async fn recv_until(
        &mut self,
        timeout: Duration,
        done: impl FnMut(&phone::Received) -> bool,
    ) -> Result<phone::Received, phone::Received> {
        match self {
            Caller::Twilio(c) => c.ws.recv_until(timeout, done).await,
            Caller::Plivo(c) => c.ws.recv_until(timeout, done).await,
        }
    }

    /// The next message from the server, its shape checked; `None` on close or time-out.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<phone::Outbound> {
        let ws = match self {
            Caller::Twilio(c) => &mut c.ws,
            Caller::Plivo(c) => &mut c.ws,
        };
        let message = ws.recv(timeout).await?;
        Some(ws.classify(message))
    }

    /// True once the server closed the socket (or it broke).
    pub fn is_closed(&self) -> bool {
        match self {
            Caller::Twilio(c) => c.ws.is_closed(),
            Caller::Plivo(c) => c.ws.is_closed(),
        }
    }

    /// Runs this phone for `window` as the provider would play it (`playback`): everything
    /// the server sends is played in real time, and marks are acknowledged as their audio
    /// finishes. Stops early when the server closes.
    pub async fn play(&mut self, playback: &mut playback::Playback, window: Duration) {
        let deadline = tokio::time::Instant::now() + window;
        loop {
            let now = tokio::time::Instant::now();
            for name in playback.marks_due(now) {
                self.ack_played(playback, name).await;
            }
            if now >= deadline {
                return;
            }
            let wake = playback
                .next_mark_due()
                .map_or(deadline, |due| due.min(deadline));
            match self.next_event(wake.saturating_duration_since(now)).await {
                Some(event) => {
                    let echoed = playback.take(event, tokio::time::Instant::now());
                    for name in echoed {
                        self.ack_played(playback, name).await;
                    }
                }
                None if self.is_closed() => return,
                None => {}
            }
        }
    }

    async fn ack_played(&mut self, playback: &mut playback::Playback, name: String) {
        self.ack_mark(&name).await;
        playback.marks_played.push(name);
    }

    /// Tells the server that playback reached mark (Twilio) / checkpoint (Plivo) `name`, as
    /// the provider does once the audio before it has played.
    pub async fn ack_mark(&mut self, name: &str) -> bool {
        match self {
            Caller::Twilio(c) => c.send_mark_echo(name).await,
            Caller::Plivo(c) => c.send_played_stream(name).await,
        }
    }

    /// Code and reason of the server's close frame, if one arrived.
    pub fn close_frame(&self) -> Option<(u16, String)> {
        match self {
            Caller::Twilio(c) => c.ws.close_frame(),
            Caller::Plivo(c) => c.ws.close_frame(),
        }
    }

    pub async fn wait_closed(&mut self, timeout: Duration) -> bool {
        match self {
            Caller::Twilio(c) => c.wait_closed(timeout).await,
            Caller::Plivo(c) => c.wait_closed(timeout).await,
        }
    }
}

//! The real binary, stopped with SIGTERM while a call is in progress and a client holds a
//! half-sent request open: the process exits within the drain deadline plus two seconds, and
//! the call's record says the server shut it down.

mod support;

use std::net::TcpListener as StdListener;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use gemini_phone::calls::CallStore;
use support::gemini::{Behaviour, FakeGemini};
use support::phone::TwilioCaller;
use support::{TEST_API_KEY, stream_params};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);
const DRAIN: Duration = Duration::from_secs(2);
/// What the process may take beyond the drain deadline to write records and exit.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// The server process; killed if the test ends while it still runs.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(answer) = reqwest::get(self.url("http", "/health")).await
                && answer.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server did not come up");
    }

    fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
    }

    /// Waits up to `within` for the process to exit; true if it did.
    async fn exited_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.child.try_wait().expect("child status").is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

fn start_server(gemini_url: &str, database_url: &str, dir: &std::path::Path) -> Server {
    let port = free_port();
    let log = std::fs::File::create(dir.join("server.log")).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_gemini-phone"))
        .env_clear()
        .envs([
            ("GEMINI_API_KEY", TEST_API_KEY),
            ("GEMINI_LIVE_URL", gemini_url),
            ("PUBLIC_URL", "https://phone.example.com"),
            (
                "PROMPTS_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/prompts"),
            ),
            ("DATABASE_URL", database_url),
            ("HOST", "127.0.0.1"),
            ("PORT", &port.to_string()),
            ("SHUTDOWN_DRAIN_SECS", &DRAIN.as_secs().to_string()),
            ("RUST_LOG", "info"),
        ])
        // No stray .env is read from the test's working directory.
        .current_dir(dir)
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("start the server binary");
    Server { child, port }
}

#[tokio::test]
async fn sigterm_mid_call_exits_within_the_drain_deadline_and_records_the_call() {
    gemini_phone::telephony::rest::install_crypto_provider();
    let mut gemini = FakeGemini::start(Behaviour::Normal).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = format!("sqlite://{}/records.db", dir.path().display());
    let mut server = start_server(&gemini.url(), &database_url, dir.path());
    server.wait_healthy().await;

    // A call in progress: the answer webhook, then the stream with what the answer gave.
    let call_sid = "CA00000000000000000000000000000042";
    let xml = reqwest::Client::new()
        .post(server.url("http", "/twilio/answer"))
        .form(&[
            ("CallSid", call_sid),
            ("From", "+15550001111"),
            ("To", "+15550002222"),
            ("Direction", "inbound"),
        ])
        .send()
        .await
        .expect("answer webhook")
        .text()
        .await
        .expect("answer XML");
    let params = stream_params(&xml);
    let record_id = params
        .iter()
        .find(|(name, _)| name == "record")
        .map(|(_, id)| id.clone())
        .unwrap_or_else(|| panic!("no record parameter in {xml}"));
    let mut caller = TwilioCaller::connect(&server.url("ws", "/twilio/stream"), WAIT).await;
    assert!(caller.send_connected().await);
    let custom: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert!(caller.send_start(call_sid, "MZ42", &custom).await);
    // The session opens at the answer webhook; the greeting cue shows the stream took it.
    let mut session = gemini.next_session(WAIT).await;
    assert!(session.recv(WAIT).await.is_some(), "no greeting cue");

    // And a client that sent half a request and went quiet.
    let mut half_open = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("connect");
    half_open
        .write_all(b"GET /health HTTP/1.1\r\nHost: phone\r\n")
        .await
        .expect("send half a request");

    let signalled = Instant::now();
    server.terminate();
    let exited = server.exited_within(DRAIN + EXIT_GRACE).await;
    let took = signalled.elapsed();
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    assert!(exited, "still running {took:?} after SIGTERM; log:\n{log}");

    let store = CallStore::connect(&database_url)
        .await
        .expect("open the records");
    let record = store
        .get(&record_id)
        .await
        .expect("read the record")
        .expect("the call's record");
    let reason = record.end_reason.unwrap_or_default();
    assert!(
        reason.contains("server shutdown"),
        "end reason {reason:?}; log:\n{log}"
    );
    assert!(record.status.is_final(), "status {}", record.status);
}

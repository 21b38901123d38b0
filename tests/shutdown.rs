//! The real binary, stopped with SIGTERM while a call is in progress and a client holds a
//! half-sent request open: the process exits within the drain deadline plus two seconds, and
//! the call's record says the server shut it down.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use gemini_phone::calls::CallStore;
use support::binary::{Logs, ServerProcess};
use support::gemini::{Behaviour, FakeGemini};
use support::phone::TwilioCaller;
use support::{TEST_API_KEY, stream_params};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);
const DRAIN: Duration = Duration::from_secs(2);
/// What the process may take beyond the drain deadline to write records and exit.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// The binary with the drain this test measures, logging to `server.log` in `dir`.
async fn start_server(gemini_url: &str, database_url: &str, dir: &Path) -> ServerProcess {
    let drain = DRAIN.as_secs().to_string();
    let vars = [
        ("GEMINI_API_KEY", TEST_API_KEY),
        ("GEMINI_LIVE_URL", gemini_url),
        ("DATABASE_URL", database_url),
        ("SHUTDOWN_DRAIN_SECS", drain.as_str()),
        ("RUST_LOG", "info"),
    ];
    let logs = Logs::File {
        dir,
        name: "server.log",
    };
    ServerProcess::start(&vars, logs).await
}

#[tokio::test]
async fn sigterm_mid_call_exits_within_the_drain_deadline_and_records_the_call() {
    gemini_phone::telephony::rest::install_crypto_provider();
    let mut gemini = FakeGemini::start(Behaviour::Normal).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = format!("sqlite://{}/records.db", dir.path().display());
    let mut server = start_server(&gemini.url(), &database_url, dir.path()).await;

    // A call in progress: the answer webhook, then the stream with what the answer gave.
    let call_sid = "CA00000000000000000000000000000042";
    let xml = reqwest::Client::new()
        .post(server.http("/twilio/answer"))
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
    let mut caller = TwilioCaller::connect(&server.ws("/twilio/stream"), WAIT).await;
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
    let mut half_open = TcpStream::connect(("127.0.0.1", server.port()))
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

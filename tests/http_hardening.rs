//! The real server on a loopback socket, against clients that misbehave the way attackers
//! and bad networks do: half-sent headers, idle connections, bodies announced and never sent
//! or sent a byte at a time, bursts of dial-outs and of API requests.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::rest::FakeRest;
use support::{API_TOKEN, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Long enough for any answer the server gives at once.
const PROMPT: Duration = Duration::from_secs(2);

/// Opens a connection to `server` and sends `bytes` on it.
async fn send_raw(server: &TestServer, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream.write_all(bytes).await.expect("send");
    stream
}

/// Everything the server sends until it closes the connection, and when it closed it; None
/// if it is still open after `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<(String, Instant)> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => {
                return Some((
                    String::from_utf8_lossy(&received).into_owned(),
                    Instant::now(),
                ));
            }
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

/// The status line's code of a raw HTTP answer.
fn status_of(answer: &str) -> Option<u16> {
    answer.split(' ').nth(1)?.parse().ok()
}

/// Reads one HTTP answer's head (up to the blank line), without waiting for the close.
async fn read_head(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut received = Vec::new();
    let mut byte = [0u8; 1];
    let deadline = tokio::time::Instant::now() + within;
    while !received.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, stream.read(&mut byte)).await {
            Ok(Ok(1)) => received.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&received).into_owned())
}

fn calls_request(token: &str, content_length: usize) -> String {
    format!(
        "POST /calls HTTP/1.1\r\nHost: phone\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n"
    )
}

#[tokio::test]
async fn half_sent_headers_are_closed_at_the_header_timeout_and_health_keeps_answering() {
    let server = TestServer::start(&[("HTTP_HEADER_TIMEOUT_SECS", "1")]).await;
    let opened = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..100 {
        stalled.push(send_raw(&server, b"GET /health HTTP/1.1\r\nHost: phone\r\nX-Wait: ").await);
    }
    // All hundred are open, and the server still answers everyone else.
    let health = tokio::time::timeout(PROMPT, server.health())
        .await
        .expect("/health answers while 100 half-sent requests are open");
    assert_eq!(health["status"], "ok");

    for (i, stream) in stalled.iter_mut().enumerate() {
        let (_, closed_at) = read_until_closed(stream, Duration::from_secs(4))
            .await
            .unwrap_or_else(|| panic!("connection {i} still open after 4 s"));
        let held = closed_at - opened;
        assert!(
            held < Duration::from_secs(3),
            "connection {i} held {held:?}"
        );
    }
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_at_the_idle_timeout() {
    let server = TestServer::start(&[
        ("HTTP_HEADER_TIMEOUT_SECS", "10"),
        ("HTTP_IDLE_TIMEOUT_SECS", "1"),
    ])
    .await;
    let mut stream = send_raw(&server, b"GET /health HTTP/1.1\r\nHost: phone\r\n\r\n").await;
    let head = read_head(&mut stream, PROMPT).await.expect("an answer");
    assert_eq!(status_of(&head), Some(200), "{head}");
    let answered = Instant::now();
    let (_, closed_at) = read_until_closed(&mut stream, Duration::from_secs(4))
        .await
        .expect("the idle connection is closed");
    let idle = closed_at - answered;
    assert!(
        (Duration::from_millis(800)..Duration::from_secs(3)).contains(&idle),
        "closed after {idle:?} idle"
    );
}

#[tokio::test]
async fn an_unauthenticated_dial_out_is_refused_before_its_body_is_read() {
    let server =
        TestServer::start(&[("API_TOKEN", API_TOKEN), ("HTTP_BODY_TIMEOUT_SECS", "30")]).await;
    let announce_2_mb = calls_request("wrong-token", 2_000_000);
    let sent = Instant::now();
    let mut stream = send_raw(&server, format!("{announce_2_mb}{{\"to\":").as_bytes()).await;
    let (answer, closed_at) = read_until_closed(&mut stream, PROMPT)
        .await
        .expect("answered and closed at once, not at the body timeout");
    assert_eq!(status_of(&answer), Some(401), "{answer}");
    assert!(closed_at - sent < Duration::from_secs(1));
}

/// Resident memory of this process (the server runs in it), from /proc.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[tokio::test]
async fn unauthenticated_bodies_do_not_grow_memory() {
    let server = TestServer::start(&[("API_TOKEN", API_TOKEN)]).await;
    let Some(before) = resident_bytes() else {
        return; // no /proc here; the 401 test above still holds
    };
    // 150 clients each announce 2 MB and push 1 MB of it: the old server buffered it all.
    let payload: &'static [u8] = Box::leak(vec![b' '; 1 << 20].into_boxed_slice());
    let head = calls_request("wrong-token", 2_000_000);
    let clients: Vec<_> = (0..150)
        .map(|_| {
            let head = head.clone();
            let addr = server.addr;
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.ok()?;
                stream.write_all(head.as_bytes()).await.ok()?;
                // The server answers and closes early; a write error then is expected.
                let _ = stream.write_all(payload).await;
                let mut answer = String::new();
                let _ = tokio::time::timeout(PROMPT, stream.read_to_string(&mut answer)).await;
                Some(answer)
            })
        })
        .collect();
    let mut refused = 0;
    for client in clients {
        if let Ok(Some(answer)) = client.await
            && status_of(&answer) == Some(401)
        {
            refused += 1;
        }
    }
    let grown = resident_bytes().unwrap_or(before).saturating_sub(before);
    assert!(refused > 0, "no client was answered 401");
    assert!(
        grown < 40 << 20,
        "resident memory grew by {} MiB",
        grown >> 20
    );
}

#[tokio::test]
async fn a_body_that_trickles_is_cut_at_the_body_timeout() {
    let server =
        TestServer::start(&[("API_TOKEN", API_TOKEN), ("HTTP_BODY_TIMEOUT_SECS", "1")]).await;
    let mut stream = send_raw(&server, calls_request(API_TOKEN, 100).as_bytes()).await;
    let started = Instant::now();
    // A byte every 200 ms: never quiet long enough for a per-chunk timer to fire.
    let (mut reader, mut writer) = stream.split();
    let trickle = async {
        for _ in 0..100 {
            if writer.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let answer = async {
        let mut received = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), reader.read_to_string(&mut received))
            .await;
        received
    };
    let answer = tokio::select! {
        answer = answer => answer,
        () = trickle => String::new(),
    };
    let cut_after = started.elapsed();
    assert_eq!(status_of(&answer), Some(408), "{answer}");
    assert!(answer.contains("did not arrive within 1 s"), "{answer}");
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(3)).contains(&cut_after),
        "{cut_after:?}"
    );
}

#[tokio::test]
async fn a_webhook_body_that_trickles_is_cut_too() {
    let server = TestServer::start(&[("HTTP_BODY_TIMEOUT_SECS", "1")]).await;
    let head = "POST /twilio/answer HTTP/1.1\r\nHost: phone\r\n\
                Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nCallSid=CA";
    let mut stream = send_raw(&server, head.as_bytes()).await;
    let started = Instant::now();
    let (answer, closed_at) = read_until_closed(&mut stream, Duration::from_secs(4))
        .await
        .expect("the webhook request is given up");
    assert!(
        status_of(&answer).is_some_and(|code| (400..500).contains(&code)),
        "{answer}"
    );
    assert!(closed_at - started < Duration::from_secs(3));
}

#[tokio::test]
async fn dial_outs_over_max_concurrent_calls_get_429_and_are_not_dialled() {
    const MAX: usize = 3;
    let rest = FakeRest::start().await;
    let server = TestServer::with_providers(
        &rest.url(),
        "ws://127.0.0.1:1",
        &[("MAX_CONCURRENT_CALLS", "3"), ("API_RATE_LIMIT", "1000")],
    )
    .await;
    let http = reqwest::Client::new();
    let body = json!({
        "to": "+15551234567",
        "provider": "twilio",
        "vars": {"name": "Asha", "company": "Acme", "reason": "your order"},
    });
    let attempts = (0..MAX + 7).map(|_| {
        http.post(server.http("/calls"))
            .bearer_auth(API_TOKEN)
            .json(&body)
            .send()
    });
    let answers = futures_util::future::join_all(attempts).await;
    let mut placed = 0;
    let mut refused = 0;
    for answer in answers {
        let answer = answer.expect("POST /calls");
        match answer.status().as_u16() {
            201 => placed += 1,
            429 => {
                refused += 1;
                assert_eq!(answer.headers()["retry-after"], "30");
                let error: Value = answer.json().await.unwrap();
                assert!(
                    error["error"]
                        .as_str()
                        .unwrap()
                        .contains("all 3 call slots are taken"),
                    "{error}"
                );
            }
            other => panic!("unexpected {other}: {}", answer.text().await.unwrap()),
        }
    }
    assert_eq!((placed, refused), (MAX, 7));
    let dials = rest
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/Calls.json"))
        .count();
    assert_eq!(dials, MAX, "the provider saw {dials} dials");
    let health = server.health().await;
    assert_eq!(health["status"], "degraded", "{health}");
}

#[tokio::test]
async fn the_api_rate_limit_answers_429() {
    let server = TestServer::start(&[("API_TOKEN", API_TOKEN), ("API_RATE_LIMIT", "2")]).await;
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..3 {
        let answer = http
            .get(server.http("/calls"))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        statuses.push(answer.status().as_u16());
        retry_after = answer.headers().get("retry-after").cloned();
    }
    assert_eq!(statuses, [200, 200, 429]);
    let wait: u64 = retry_after
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&wait), "Retry-After: {wait}");
}

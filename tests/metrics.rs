//! `GET /metrics`: scripted calls against the fakes, then a scrape parsed with a real
//! Prometheus text parser, whose counts must equal what happened; and who may scrape.

mod support;

use std::time::Duration;

use prometheus_parse::{Sample, Scrape, Value};
use serde_json::json;
use support::gemini::{Behaviour, FakeGemini, GeminiSession};
use support::phone::{Provider, pcm_tone_24k};
use support::rest::FakeRest;
use support::{Caller, TestServer};

const WAIT: Duration = Duration::from_secs(5);
const METRICS_TOKEN: &str = "metrics-token-0123456789";

/// `GET /metrics` with an optional bearer token: status and body.
async fn get_metrics(server: &TestServer, token: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(server.http("/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("GET /metrics");
    let status = response.status().as_u16();
    (status, response.text().await.expect("metrics body"))
}

/// Scrapes and parses; the scrape must succeed.
async fn scrape(server: &TestServer) -> Scrape {
    let (status, body) = get_metrics(server, None).await;
    assert_eq!(status, 200, "{body}");
    if std::env::var_os("SHOW_METRICS").is_some() {
        println!("{body}");
    }
    Scrape::parse(body.lines().map(|line| Ok(line.to_owned()))).expect("Prometheus text")
}

fn labels_match(sample: &Sample, labels: &[(&str, &str)]) -> bool {
    labels
        .iter()
        .all(|(name, value)| sample.labels.get(name) == Some(*value))
}

/// The value of the sample `name` with `labels` (0 when absent: an unset label set of a
/// counter family is simply not listed yet).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels_match(s, labels))
        .filter_map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            _ => None,
        })
        .collect();
    assert!(
        found.len() <= 1,
        "{name} {labels:?} is ambiguous: {found:?}"
    );
    found.first().copied().unwrap_or(0.0)
}

/// A histogram's observation count, from its `+Inf` bucket (so the buckets themselves are
/// checked to be there), which must equal its `_count` sample.
fn histogram_count(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let from_buckets = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels_match(s, labels))
        .and_then(|s| match &s.value {
            Value::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map(|b| b.count),
            _ => None,
        })
        .unwrap_or_else(|| panic!("histogram {name} {labels:?} is not exposed"));
    let count = value(scrape, &format!("{name}_count"), labels);
    assert_eq!(
        from_buckets, count,
        "{name}: +Inf bucket and _count disagree"
    );
    count
}

/// POSTs a provider-style form to `path` with no signature.
async fn post_unsigned(server: &TestServer, path: &str, form: &[(&str, &str)]) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(server.http(path))
        .form(form)
        .send()
        .await
        .expect("webhook request");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// A loopback-bound server with both providers (webhooks signature-checked) and Gemini.
async fn server(rest: &FakeRest, gemini: &FakeGemini, extra: &[(&str, &str)]) -> TestServer {
    let mut vars = vec![("HOST", "127.0.0.1")];
    vars.extend_from_slice(extra);
    TestServer::with_providers(&rest.url(), &gemini.url(), &vars).await
}

/// Reads client messages until one that is not audio arrives.
async fn next_non_audio(session: &mut GeminiSession) -> serde_json::Value {
    loop {
        let msg = session.recv(WAIT).await.expect("a message from the bridge");
        if msg.pointer("/realtimeInput/audio").is_none() {
            return msg;
        }
    }
}

#[tokio::test]
async fn a_scrape_counts_what_the_calls_did() {
    let rest = FakeRest::start().await;
    let mut gemini = FakeGemini::start(Behaviour::Normal).await;
    let server = server(&rest, &gemini, &[]).await;

    // Before any call: every metric is registered, the counters at zero.
    let empty = scrape(&server).await;
    assert_eq!(
        histogram_count(&empty, "gemini_phone_response_latency_seconds", &[]),
        0.0
    );
    assert_eq!(value(&empty, "gemini_phone_calls_active", &[]), 0.0);

    // A Twilio call: the agent greets, calls a tool it does not have, is resumed after a
    // goAway, and the caller hangs up.
    let mut twilio = Caller::start(&server, Provider::Twilio, "CAm1").await;
    let mut session = gemini.next_session(WAIT).await;
    let _greeting_cue = next_non_audio(&mut session).await;
    assert!(server.wait_active_calls(1, WAIT).await);
    assert_eq!(
        value(&scrape(&server).await, "gemini_phone_calls_active", &[]),
        1.0
    );
    session.send_audio(&pcm_tone_24k(440.0, 200, 8_000));
    session.send_turn_complete();
    assert_eq!(twilio.recv_audio(10, WAIT).await.media_count(), 10);
    session.send_tool_call("fc-1", "launch_rockets", json!({}));
    let answer = next_non_audio(&mut session).await;
    assert!(answer.pointer("/toolResponse").is_some(), "{answer}");
    session.send_resumption_update("handle-1");
    session.send_go_away("30s");
    let _resumed = gemini.next_session(WAIT).await;
    assert!(session.wait_closed(WAIT).await);

    // A Plivo call the caller hangs up on at once.
    let mut plivo = Caller::start(&server, Provider::Plivo, "plivo-m2").await;
    let mut plivo_session = gemini.next_session(WAIT).await;
    // Opened at the answer webhook; the greeting cue shows the call took it.
    let _greeting_cue = next_non_audio(&mut plivo_session).await;
    assert!(server.wait_active_calls(2, WAIT).await);
    twilio.hang_up().await;
    plivo.hang_up().await;

    // A stream that never went through the answer webhook is refused.
    let mut forged = Caller::start_with(&server, Provider::Twilio, "CAforged", &[]).await;
    assert!(forged.wait_closed(WAIT).await);

    // A webhook without a signature is refused.
    let (status, _) = post_unsigned(&server, "/twilio/status", &[("CallSid", "CAm1")]).await;
    assert_eq!(status, 403);

    assert!(server.wait_active_calls(0, WAIT).await);
    // The ended calls' records are written behind the calls; on a busy machine the writer
    // may still be at it, so scrape until it has caught up (and fail if it never does).
    let deadline = tokio::time::Instant::now() + WAIT;
    let scrape = loop {
        let scrape = scrape(&server).await;
        let queued = value(&scrape, "gemini_phone_record_queue_depth", &[]);
        if queued == 0.0 || tokio::time::Instant::now() > deadline {
            break scrape;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let calls = |provider, direction, outcome| {
        value(
            &scrape,
            "gemini_phone_calls_total",
            &[
                ("provider", provider),
                ("direction", direction),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(calls("twilio", "inbound", "caller_hung_up"), 1.0);
    assert_eq!(calls("plivo", "inbound", "caller_hung_up"), 1.0);
    assert_eq!(calls("twilio", "unknown", "refused"), 1.0);
    let all_calls: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "gemini_phone_calls_total")
        .map(|s| value(&scrape, &s.metric, &labels_of(s)))
        .sum();
    assert_eq!(all_calls, 3.0, "no other call was counted");
    assert_eq!(value(&scrape, "gemini_phone_calls_active", &[]), 0.0);
    assert_eq!(
        histogram_count(&scrape, "gemini_phone_call_duration_seconds", &[]),
        2.0,
        "only admitted calls have a duration"
    );
    assert_eq!(
        histogram_count(&scrape, "gemini_phone_greeting_latency_seconds", &[]),
        1.0,
        "only the Twilio call heard the agent"
    );
    let greeting_seconds = value(&scrape, "gemini_phone_greeting_latency_seconds_sum", &[]);
    assert!(
        greeting_seconds > 0.0 && greeting_seconds < WAIT.as_secs_f64(),
        "greeting latency {greeting_seconds} s"
    );
    assert_eq!(
        value(
            &scrape,
            "gemini_phone_gemini_sessions_total",
            &[("outcome", "opened")]
        ),
        3.0,
        "two calls and one resumption"
    );
    assert_eq!(
        value(
            &scrape,
            "gemini_phone_gemini_resumptions_total",
            &[("reason", "go_away")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &scrape,
            "gemini_phone_tool_calls_total",
            &[("tool", "unknown"), ("outcome", "error")]
        ),
        1.0,
        "a tool that is not offered is labelled `unknown`, not by the model's text"
    );
    assert_eq!(
        histogram_count(
            &scrape,
            "gemini_phone_tool_duration_seconds",
            &[("tool", "unknown")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &scrape,
            "gemini_phone_webhooks_rejected_total",
            &[("provider", "twilio"), ("reason", "bad_signature")]
        ),
        1.0
    );
    let frames = |direction| {
        value(
            &scrape,
            "gemini_phone_frames_total",
            &[("direction", direction)],
        )
    };
    assert!(
        frames("to_phone") >= 10.0,
        "to_phone {}",
        frames("to_phone")
    );
    // Per stream: connected (Twilio) or not, start, stop.
    assert!(
        frames("from_phone") >= 6.0,
        "from_phone {}",
        frames("from_phone")
    );
    assert!(
        frames("from_gemini") >= 4.0,
        "from_gemini {}",
        frames("from_gemini")
    );
    assert!(
        frames("to_gemini") >= 3.0,
        "to_gemini {}",
        frames("to_gemini")
    );
    assert_eq!(value(&scrape, "gemini_phone_record_queue_depth", &[]), 0.0);
    assert!(value(&scrape, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(value(&scrape, "process_cpu_seconds_total", &[]) > 0.0);
    server.stop().await;
}

fn labels_of(sample: &Sample) -> Vec<(&str, &str)> {
    ["provider", "direction", "outcome"]
        .into_iter()
        .filter_map(|name| sample.labels.get(name).map(|value| (name, value)))
        .collect()
}

#[tokio::test]
async fn unsigned_and_unknown_provider_webhooks_are_counted_apart() {
    let rest = FakeRest::start().await;
    let gemini = FakeGemini::start(Behaviour::Normal).await;
    let server = server(&rest, &gemini, &[]).await;
    for _ in 0..2 {
        let (status, _) = post_unsigned(&server, "/plivo/answer", &[("CallUUID", "x")]).await;
        assert_eq!(status, 403);
    }
    let (status, _) = post_unsigned(&server, "/skype/answer", &[("CallSid", "x")]).await;
    assert_eq!(status, 404);
    let scrape = scrape(&server).await;
    let rejected = |provider, reason| {
        value(
            &scrape,
            "gemini_phone_webhooks_rejected_total",
            &[("provider", provider), ("reason", reason)],
        )
    };
    assert_eq!(rejected("plivo", "bad_signature"), 2.0);
    assert_eq!(rejected("unknown", "no_such_provider"), 1.0);
    assert_eq!(rejected("twilio", "bad_signature"), 0.0);
    server.stop().await;
}

#[tokio::test]
async fn with_a_token_only_its_holders_may_scrape() {
    let rest = FakeRest::start().await;
    let gemini = FakeGemini::start(Behaviour::Normal).await;
    // Listening everywhere: the token is what guards the metrics.
    let server = server(
        &rest,
        &gemini,
        &[("HOST", "0.0.0.0"), ("METRICS_TOKEN", METRICS_TOKEN)],
    )
    .await;
    let (status, body) = get_metrics(&server, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("METRICS_TOKEN"), "{body}");
    assert_eq!(get_metrics(&server, Some("wrong-token")).await.0, 401);
    let (status, body) = get_metrics(&server, Some(METRICS_TOKEN)).await;
    assert_eq!(status, 200);
    assert!(body.contains("gemini_phone_calls_active"), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn without_a_token_metrics_are_open_on_loopback_and_off_elsewhere() {
    let rest = FakeRest::start().await;
    let gemini = FakeGemini::start(Behaviour::Normal).await;
    let loopback = server(&rest, &gemini, &[]).await;
    let response = reqwest::get(loopback.http("/metrics")).await.expect("GET");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap_or("");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    loopback.stop().await;

    let everywhere = server(&rest, &gemini, &[("HOST", "0.0.0.0")]).await;
    let (status, body) = get_metrics(&everywhere, Some("anything")).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("METRICS_TOKEN") && body.contains("HOST"),
        "the refusal says how to turn metrics on: {body}"
    );
    everywhere.stop().await;
}

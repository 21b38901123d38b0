//! The routes as a service, without a socket (`tower::ServiceExt::oneshot`): who may use the
//! API, how much and how fast it may send, what a saturated server answers, and the webhooks'
//! signature gate.

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode, header};
use gemini_phone::admission;
use gemini_phone::app::App;
use gemini_phone::config::Config;
use gemini_phone::server;
use gemini_phone::signature;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use support::rest::TWILIO_TOKEN;
use support::{API_TOKEN, TEST_API_KEY, provider_vars};
use tower::ServiceExt as _;

/// Nothing listens here: a dial to it fails at once.
const NO_PROVIDER: &str = "http://127.0.0.1:1";

/// The routes of a server configured with both providers plus `vars`, and its state.
struct Routes {
    router: Router,
    app: Arc<App>,
    _data: tempfile::TempDir,
}

impl Routes {
    async fn new(vars: &[(&str, &str)]) -> Routes {
        let data = tempfile::tempdir().expect("temp dir");
        let mut all: Vec<(String, String)> = vec![
            ("GEMINI_API_KEY".into(), TEST_API_KEY.into()),
            ("PUBLIC_URL".into(), "https://phone.example.com".into()),
            (
                "PROMPTS_DIR".into(),
                concat!(env!("CARGO_MANIFEST_DIR"), "/prompts").into(),
            ),
            (
                "DATABASE_URL".into(),
                format!("sqlite://{}/records.db", data.path().display()),
            ),
        ];
        all.extend(
            provider_vars(NO_PROVIDER)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v)),
        );
        all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = Config::from_lookup(|name| {
            all.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
        .expect("test configuration is valid");
        let app = Arc::new(App::new(config).await.expect("app state"));
        Routes {
            router: server::router(Arc::clone(&app)),
            app,
            _data: data,
        }
    }

    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|never: Infallible| match never {});
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("response body")
            .to_bytes();
        Answer {
            status,
            headers,
            json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// `GET path` with `Authorization: {authorization}` when given.
    async fn get(&self, path: &str, authorization: Option<&str>) -> Answer {
        let mut request = Request::get(path);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        self.send(request.body(Body::empty()).unwrap()).await
    }

    async fn post_calls(&self, body: Body) -> Answer {
        self.send(
            Request::post("/calls")
                .header(header::AUTHORIZATION, bearer())
                .header(header::CONTENT_TYPE, "application/json")
                .body(body)
                .unwrap(),
        )
        .await
    }

    async fn health(&self) -> Value {
        self.get("/health", None).await.json
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    json: Value,
    text: String,
}

impl Answer {
    fn retry_after(&self) -> Option<u64> {
        self.headers
            .get(header::RETRY_AFTER)?
            .to_str()
            .ok()?
            .parse()
            .ok()
    }
}

fn bearer() -> String {
    format!("Bearer {API_TOKEN}")
}

/// A body that announces itself and never sends a byte.
fn body_that_never_arrives() -> Body {
    Body::from_stream(futures_util::stream::pending::<Result<Bytes, Infallible>>())
}

fn a_call() -> Body {
    let vars = json!({"name": "Asha", "company": "Acme", "reason": "your order"});
    Body::from(json!({"to": "+15551234567", "provider": "twilio", "vars": vars}).to_string())
}

#[tokio::test]
async fn the_api_needs_the_bearer_token_and_reads_no_body_without_it() {
    let routes = Routes::new(&[]).await;
    for authorization in [
        None,
        Some("Bearer wrong-token".to_owned()),
        Some(format!("Basic {API_TOKEN}")),
        Some(API_TOKEN.to_owned()),
        Some(format!("Bearer {API_TOKEN}x")),
        Some(format!("Bearer {}", &API_TOKEN[..API_TOKEN.len() - 1])),
    ] {
        let answer = routes.get("/calls", authorization.as_deref()).await;
        assert_eq!(answer.status, 401, "{authorization:?}");
        assert_eq!(answer.headers[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(answer.json["error"], "missing or wrong bearer token");
    }

    // The scheme is case-insensitive (RFC 7235); the token is not.
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let answer = routes
            .get("/calls", Some(&format!("{scheme} {API_TOKEN}")))
            .await;
        assert_eq!(answer.status, 200, "{scheme}: {}", answer.text);
    }
    let answer = routes
        .get(
            "/calls",
            Some(&format!("Bearer {}", API_TOKEN.to_uppercase())),
        )
        .await;
    assert_eq!(answer.status, 401);

    // Refused before the body is read: a body that never comes does not hold the answer up.
    let started = Instant::now();
    let answer = routes
        .send(
            Request::post("/calls")
                .header(header::AUTHORIZATION, "Bearer wrong-token")
                .header(header::CONTENT_LENGTH, "2000000")
                .body(body_that_never_arrives())
                .unwrap(),
        )
        .await;
    assert_eq!(answer.status, 401);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn without_api_token_the_api_is_closed() {
    // An empty value is read as unset.
    let closed = Routes::new(&[("API_TOKEN", "")]).await;
    let answer = closed.get("/calls", Some(&bearer())).await;
    assert_eq!(answer.status, 503);
    let error = answer.json["error"].as_str().unwrap();
    assert!(error.contains("set API_TOKEN"), "{error}");
}

#[tokio::test]
async fn the_token_is_rate_limited_with_retry_after() {
    let routes = Routes::new(&[("API_RATE_LIMIT", "3")]).await;
    // Requests without the token do not spend the token's budget.
    for _ in 0..5 {
        assert_eq!(routes.get("/calls", Some("Bearer nope")).await.status, 401);
    }
    for _ in 0..3 {
        assert_eq!(routes.get("/calls", Some(&bearer())).await.status, 200);
    }
    let refused = routes.get("/calls", Some(&bearer())).await;
    assert_eq!(refused.status, 429, "{}", refused.text);
    // Three a minute: the next one is free within 20 s.
    let wait = refused.retry_after().expect("Retry-After in whole seconds");
    assert!((1..=20).contains(&wait), "Retry-After: {wait}");
    let error = refused.json["error"].as_str().unwrap();
    assert!(error.contains("3 a minute"), "{error}");
    // Every API route shares the budget.
    assert_eq!(
        routes
            .get("/calls/cnosuchcall", Some(&bearer()))
            .await
            .status,
        429
    );
}

#[tokio::test]
async fn a_calls_body_is_small_and_must_arrive_in_time() {
    let routes = Routes::new(&[("HTTP_BODY_TIMEOUT_SECS", "1")]).await;
    let big = json!({"to": "+15551234567", "vars": {"notes": "x".repeat(100 * 1024)}});
    let answer = routes.post_calls(Body::from(big.to_string())).await;
    assert_eq!(answer.status, 413, "{}", answer.text);
    assert!(
        answer.json["error"].as_str().unwrap().contains("64 KiB"),
        "{}",
        answer.text
    );

    let started = Instant::now();
    let answer = routes.post_calls(body_that_never_arrives()).await;
    let waited = started.elapsed();
    assert_eq!(answer.status, 408, "{}", answer.text);
    assert!(
        answer.json["error"].as_str().unwrap().contains("1 s"),
        "{}",
        answer.text
    );
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(3)).contains(&waited),
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_saturated_server_refuses_dial_outs_and_says_degraded() {
    let routes = Routes::new(&[("MAX_CONCURRENT_CALLS", "1")]).await;
    assert_eq!(routes.health().await["status"], "ok");
    routes
        .app
        .admission
        .reserve("CAinbound", Instant::now(), admission::ANSWER_TO_START)
        .expect("the one slot");

    let health = routes.health().await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["max_concurrent_calls"], 1);

    let refused = routes.post_calls(a_call()).await;
    assert_eq!(refused.status, 429, "{}", refused.text);
    assert_eq!(refused.retry_after(), Some(30));
    let error = refused.json["error"].as_str().unwrap();
    assert!(
        error.contains("all 1 call slots are taken") && error.contains("nothing was dialled"),
        "{error}"
    );
    // A refused request leaves no record behind.
    let records = routes.get("/calls", Some(&bearer())).await;
    assert_eq!(records.json["calls"], json!([]), "{}", records.text);

    routes.app.admission.release("CAinbound");
    assert_eq!(routes.health().await["status"], "ok");
}

#[tokio::test]
async fn a_dial_that_fails_gives_its_slot_back() {
    let routes = Routes::new(&[("MAX_CONCURRENT_CALLS", "1")]).await;
    let failed = routes.post_calls(a_call()).await;
    assert_eq!(failed.status, 502, "{}", failed.text);
    assert!(failed.json["id"].is_string(), "the failed attempt's record");
    assert_eq!(routes.health().await["status"], "ok");
    // Bad input takes no slot either.
    let bad = routes
        .post_calls(Body::from(json!({"to": "12"}).to_string()))
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(routes.health().await["status"], "ok");
}

fn signed_twilio_answer(form: &[(&str, &str)], signed: bool) -> Request<Body> {
    let pairs: Vec<(String, String)> = form
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let body = serde_urlencoded::to_string(&pairs).unwrap();
    let mut request = Request::post("/twilio/answer")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if signed {
        let url = "https://phone.example.com/twilio/answer";
        request = request.header(
            "X-Twilio-Signature",
            signature::twilio_signature(TWILIO_TOKEN, url, &pairs),
        );
    }
    request.body(Body::from(body)).unwrap()
}

#[tokio::test]
async fn webhooks_need_the_providers_signature() {
    let routes = Routes::new(&[]).await;
    let form = [
        ("CallSid", "CA00000000000000000000000000000001"),
        ("From", "+15550001111"),
        ("To", "+15550002222"),
    ];
    let unsigned = routes.send(signed_twilio_answer(&form, false)).await;
    assert_eq!(unsigned.status, 403, "{}", unsigned.text);

    let signed = routes.send(signed_twilio_answer(&form, true)).await;
    assert_eq!(signed.status, 200, "{}", signed.text);
    assert_eq!(signed.headers[header::CONTENT_TYPE], "application/xml");
    assert!(
        signed
            .text
            .contains("wss://phone.example.com/twilio/stream"),
        "{}",
        signed.text
    );

    let nobody = routes
        .send(Request::post("/skype/answer").body(Body::empty()).unwrap())
        .await;
    assert_eq!(nobody.status, 404);
}

#[tokio::test]
async fn a_webhook_body_that_never_arrives_is_given_up_at_the_body_timeout() {
    let routes = Routes::new(&[("HTTP_BODY_TIMEOUT_SECS", "1")]).await;
    let started = Instant::now();
    let answer = routes
        .send(
            Request::post("/twilio/answer")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body_that_never_arrives())
                .unwrap(),
        )
        .await;
    let waited = started.elapsed();
    assert!(answer.status.is_client_error(), "{}", answer.status);
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(3)).contains(&waited),
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_call_is_found_by_the_providers_call_id_too() {
    let routes = Routes::new(&[]).await;
    let record = routes
        .app
        .store
        .create(gemini_phone::calls::NewCall {
            provider: "twilio".into(),
            provider_call_id: Some("CA0000000000000000000000000000c0de".into()),
            direction: gemini_phone::telephony::Direction::Inbound,
            from: "+15550001111".into(),
            to: "+15550002222".into(),
            campaign: None,
            prompt: None,
            vars: serde_json::Map::new(),
            status: gemini_phone::calls::CallStatus::InProgress,
        })
        .await
        .expect("record");
    let auth = bearer();
    let by_ours = routes
        .get(&format!("/calls/{}", record.id), Some(&auth))
        .await;
    let by_sid = routes
        .get("/calls/CA0000000000000000000000000000c0de", Some(&auth))
        .await;
    assert_eq!(by_sid.status, StatusCode::OK, "{}", by_sid.text);
    assert_eq!(by_sid.json["id"], record.id.as_str());
    assert_eq!(by_sid.json, by_ours.json);
    let unknown = routes
        .get("/calls/CA0000000000000000000000000000dead", Some(&auth))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

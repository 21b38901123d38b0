//! Campaigns end to end: the real server, its dialer and the fake provider's phone network,
//! which answers each number as told (answered, busy, no-answer, failed, machine) and sends
//! the callbacks Twilio would. Time in calling windows and back-offs is a manual clock the
//! tests move; the two-instance test runs the real binary twice on one PostgreSQL (skipped
//! when `TEST_POSTGRES_URL` is unset).

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gemini_phone::app::App;
use gemini_phone::campaigns::clock::{Clock, ManualClock, SystemClock};
use gemini_phone::config::Config;
use gemini_phone::server;
use gemini_phone::telephony::rest::install_crypto_provider;
use serde_json::{Value, json};
use sqlx::Connection as _;
use support::binary::{Logs, ServerProcess};
use support::rest::{CallScript, FakeRest, Outcome};
use support::{API_TOKEN, provider_vars};
use tokio::sync::oneshot;

/// The campaign's time zone in these tests, and the instant its clock starts at: Tuesday
/// 2026-12-01 10:00 in New York, inside a 09:00–20:00 window. It is already midnight in Tokyo.
const CAMPAIGN_ZONE: &str = "America/New_York";
const START_MS: i64 = 1_796_137_200_000; // 2026-12-01T15:00:00Z
const MINUTE_MS: i64 = 60_000;

/// Longest a test waits for the dialer to reach a state.
const WITHIN: Duration = Duration::from_secs(20);

/// The real server in-process on loopback, with the dialer's clock given.
struct CampaignServer {
    addr: SocketAddr,
    app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    _data: tempfile::TempDir,
}

impl CampaignServer {
    async fn start(rest: &FakeRest, clock: Arc<dyn Clock>) -> CampaignServer {
        Self::start_with(rest, clock, &[]).await
    }

    /// [`Self::start`] with `extra` variables (they win over the test's own).
    async fn start_with(
        rest: &FakeRest,
        clock: Arc<dyn Clock>,
        extra: &[(&str, &str)],
    ) -> CampaignServer {
        let data = tempfile::tempdir().expect("a temp dir");
        let mut vars: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        vars.extend::<Vec<(String, String)>>(vec![
            ("GEMINI_API_KEY".into(), "test-key".into()),
            ("PUBLIC_URL".into(), "https://phone.example.com".into()),
            (
                "PROMPTS_DIR".into(),
                concat!(env!("CARGO_MANIFEST_DIR"), "/prompts").into(),
            ),
            ("API_RATE_LIMIT".into(), "100000".into()),
            ("CAMPAIGN_POLL_MS".into(), "20".into()),
            (
                "DATABASE_URL".into(),
                format!("sqlite://{}/records.db", data.path().display()),
            ),
        ]);
        vars.extend(
            provider_vars(&rest.url())
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v)),
        );
        let config = Config::from_lookup(|name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
        .expect("a valid configuration");
        let app = Arc::new(
            App::with_clock(config, None, clock)
                .await
                .expect("the app starts"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("an address");
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(server::serve(listener, Arc::clone(&app), async {
            let _ = stopped.await;
        }));
        CampaignServer {
            addr,
            app,
            stop: Some(stop),
            _data: data,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for CampaignServer {
    fn drop(&mut self) {
        self.app.shutdown.begin();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The user's side of the API, against one server.
#[derive(Clone)]
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(base: String) -> Api {
        Api {
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("the API answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn post(&self, path: &str) -> (u16, Value) {
        self.send(self.http.post(format!("{}{path}", self.base)))
            .await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn upload_csv(&self, query: &str, csv: String) -> (u16, Value) {
        let request = self
            .http
            .post(format!("{}/campaigns?{query}", self.base))
            .header("content-type", "text/csv")
            .body(csv);
        self.send(request).await
    }

    async fn campaign(&self, id: &str) -> Value {
        let (status, campaign) = self.get(&format!("/campaigns/{id}")).await;
        assert_eq!(status, 200, "{campaign}");
        campaign
    }

    /// Polls the campaign until `done` holds for it; panics with it after [`WITHIN`].
    async fn wait_for(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WITHIN;
        loop {
            let campaign = self.campaign(id).await;
            if done(&campaign) {
                return campaign;
            }
            assert!(Instant::now() < deadline, "waited for {what}: {campaign:#}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn results(&self, id: &str) -> Vec<HashMap<String, String>> {
        let response = self
            .http
            .get(format!("{}/campaigns/{id}/results.csv", self.base))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("results.csv");
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .to_owned();
        assert!(content_type.starts_with("text/csv"), "{content_type}");
        let body = response.bytes().await.expect("a body");
        let mut reader = csv::Reader::from_reader(body.as_ref());
        let header = reader.headers().expect("a header").clone();
        reader
            .records()
            .map(|row| {
                let row = row.expect("a CSV row");
                header
                    .iter()
                    .zip(row.iter())
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .collect()
    }
}

fn count(campaign: &Value, state: &str) -> u64 {
    campaign["counts"][state].as_u64().unwrap_or(u64::MAX)
}

fn number(i: usize) -> String {
    format!("+1555010{i:04}")
}

const FAST: CallScript = CallScript {
    ring: Duration::from_millis(5),
    talk: Duration::from_millis(60),
};

/// A CSV of contacts `range`, with the variables the shipped outbound prompt needs.
fn contacts_csv(range: std::ops::Range<usize>, zone_of: impl Fn(usize) -> &'static str) -> String {
    let mut csv = String::from("to,name,company,reason,timezone\n");
    for i in range {
        csv.push_str(&format!(
            "{},Contact {i},Acme,a delivery,{}\n",
            number(i),
            zone_of(i)
        ));
    }
    csv
}

/// What each of the 50 contacts does, and what should become of it.
#[derive(Debug, Clone, Copy)]
struct Expected {
    state: &'static str,
    attempts: usize,
    last_status: &'static str,
}

fn fifty_contacts_plan(i: usize) -> (&'static [Outcome], Expected) {
    use Outcome::*;
    let expect = |state, attempts, last_status| Expected {
        state,
        attempts,
        last_status,
    };
    match i {
        0..30 => (&[Answered], expect("done", 1, "completed")),
        30..34 => (&[Busy], expect("failed", 3, "busy")),
        34..38 => (&[NoAnswer, Answered], expect("done", 2, "completed")),
        38..40 => (&[Failed], expect("failed", 1, "failed")),
        40..42 => (&[Machine], expect("failed", 1, "machine")),
        42..45 => (&[Answered], expect("skipped", 0, "")),
        _ => (&[Answered], expect("done", 1, "completed")),
    }
}

#[tokio::test]
async fn a_fifty_contact_campaign_paces_retries_waits_for_windows_and_skips_do_not_call() {
    let rest = FakeRest::start().await;
    let clock = Arc::new(ManualClock::at(START_MS));
    let server = CampaignServer::start(&rest, clock.clone()).await;
    rest.simulate_calls(vec![server.url("")], FAST);
    let api = Api::new(server.url(""));
    for i in 0..50 {
        rest.set_outcomes(&number(i), fifty_contacts_plan(i).0);
    }
    for i in 42..45 {
        let (status, listed) = api.post(&format!("/dnc/{}", number(i))).await;
        assert_eq!(status, 201, "{listed}");
    }
    // Contacts 45..50 live in Tokyo, where it is midnight: outside the window.
    let csv = contacts_csv(0..50, |i| if i >= 45 { "Asia/Tokyo" } else { "" });
    let query = format!(
        "name=spring&provider=twilio&max_concurrent=3&window_start=09:00&window_end=20:00&days=all&timezone={CAMPAIGN_ZONE}&max_attempts=3&retry_on=busy,no-answer&backoff_minutes=30"
    );
    let (status, created) = api.upload_csv(&query, csv).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("an id").to_owned();
    assert_eq!(created["contacts"], 50);
    assert_eq!(created["pacing"]["max_concurrent"], 3);

    // The first pass: everyone in the window is called once; busy and unanswered numbers wait
    // for their back-off, Tokyo for its morning, and the listed numbers are skipped.
    let first = api
        .wait_for(&id, "the first pass", |c| {
            count(c, "calling") == 0 && count(c, "retry-scheduled") == 8 && count(c, "pending") == 5
        })
        .await;
    assert_eq!(count(&first, "skipped"), 3, "{first:#}");
    assert_eq!(rest.dials().len(), 30 + 4 + 4 + 2 + 2);
    assert!(
        (45..50).all(|i| rest.dials_to(&number(i)) == 0),
        "Tokyo waits"
    );
    assert!(
        (42..45).all(|i| rest.dials_to(&number(i)) == 0),
        "DNC skipped"
    );
    let (_, page) = api
        .get(&format!("/campaigns/{id}/contacts?state=pending"))
        .await;
    let tokyo_opens = "2026-12-02T00:00:00.000Z"; // 09:00 in Tokyo
    assert!(
        page["contacts"]
            .as_array()
            .expect("contacts")
            .iter()
            .all(|c| c["next_attempt_at"] == tokyo_opens),
        "{page:#}"
    );

    // Not a retry before the back-off has passed…
    clock.advance_ms(29 * MINUTE_MS);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rest.dials().len(), 42, "no retry before 30 minutes");
    // …and each after it.
    clock.advance_ms(MINUTE_MS);
    api.wait_for(&id, "the second attempts", |c| {
        count(c, "calling") == 0 && count(c, "retry-scheduled") == 4 && count(c, "done") == 34
    })
    .await;
    clock.advance_ms(30 * MINUTE_MS);
    api.wait_for(&id, "the third attempts", |c| {
        count(c, "calling") == 0 && count(c, "retry-scheduled") == 0 && count(c, "failed") == 8
    })
    .await;
    assert!(
        (45..50).all(|i| rest.dials_to(&number(i)) == 0),
        "still night in Tokyo"
    );

    clock.set_ms(1_796_169_600_000); // 2026-12-02T00:00:00Z, 09:00 in Tokyo
    let finished = api
        .wait_for(&id, "the end", |c| c["state"] == "finished")
        .await;
    assert_eq!(count(&finished, "done"), 39, "{finished:#}");
    assert_eq!(count(&finished, "failed"), 8);
    assert_eq!(count(&finished, "skipped"), 3);
    assert_eq!(finished["attempts"], 59);
    assert!(finished["finished_at"].is_string());

    assert!(
        rest.max_live_calls() <= 3,
        "{} calls were live at once",
        rest.max_live_calls()
    );
    assert_eq!(rest.max_live_calls(), 3, "the pace used all three lines");
    let rows = api.results(&id).await;
    assert_eq!(rows.len(), 50);
    for (i, row) in rows.iter().enumerate() {
        let expected = fifty_contacts_plan(i).1;
        assert_eq!(row["line"], (i + 2).to_string(), "the header is line 1");
        assert_eq!(row["to"], number(i));
        assert_eq!(row["state"], expected.state, "{row:?}");
        assert_eq!(row["attempts"], expected.attempts.to_string(), "{row:?}");
        assert_eq!(row["last_status"], expected.last_status, "{row:?}");
        let calls = row["call_ids"].split(';').filter(|c| !c.is_empty()).count();
        assert_eq!(calls, expected.attempts, "{row:?}");
        assert_eq!(rest.dials_to(&number(i)), expected.attempts, "{row:?}");
    }
    let (_, calls) = api.get(&format!("/calls?campaign={id}&limit=500")).await;
    assert_eq!(calls["calls"].as_array().map(Vec::len), Some(59));
}

/// A campaign of `n` contacts, any time of day, `max_concurrent` lines.
async fn any_time_campaign(api: &Api, first: usize, n: usize, max_concurrent: u32) -> String {
    let query = format!(
        "name=control&provider=twilio&max_concurrent={max_concurrent}&window_start=00:00&window_end=24:00&days=all&max_attempts=1"
    );
    let (status, created) = api
        .upload_csv(&query, contacts_csv(first..first + n, |_| ""))
        .await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().expect("an id").to_owned()
}

async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WITHIN;
    while !done() {
        assert!(Instant::now() < deadline, "waited for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn pause_resume_and_cancel_take_effect_within_a_second() {
    let rest = FakeRest::start().await;
    let server = CampaignServer::start(&rest, Arc::new(SystemClock)).await;
    rest.simulate_calls(
        vec![server.url("")],
        CallScript {
            ring: Duration::from_millis(5),
            talk: Duration::from_millis(300),
        },
    );
    let api = Api::new(server.url(""));
    let id = any_time_campaign(&api, 0, 20, 2).await;
    wait_until("the first calls", || rest.dials().len() >= 2).await;

    let (status, paused) = api.post(&format!("/campaigns/{id}/pause")).await;
    assert_eq!((status, paused["state"].as_str()), (200, Some("paused")));
    let paused_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let dials = rest.dials();
    let late: Vec<_> = dials
        .iter()
        .filter(|(_, at)| at.saturating_duration_since(paused_at) > Duration::from_secs(1))
        .collect();
    assert!(late.is_empty(), "dialled after the pause: {late:?}");
    assert!(dials.len() < 20, "the campaign stopped short of its end");
    let (status, refused) = api.post(&format!("/campaigns/{id}/pause")).await;
    assert_eq!(status, 409, "{refused}");

    let (status, _) = api.post(&format!("/campaigns/{id}/resume")).await;
    assert_eq!(status, 200);
    let resumed_at = Instant::now();
    let before = dials.len();
    wait_until("a call after resuming", || rest.dials().len() > before).await;
    assert!(resumed_at.elapsed() < Duration::from_secs(1));

    // Cancel without hanging up: the live calls go on to their end, nothing new is dialled.
    wait_until("two live calls", || rest.live_calls() == 2).await;
    let (status, canceled) = api.post(&format!("/campaigns/{id}/cancel")).await;
    assert_eq!(status, 200, "{canceled}");
    let canceled_at = Instant::now();
    assert_eq!(canceled["state"], "canceled");
    assert_eq!(canceled["hung_up"], json!([]));
    let settled = api
        .wait_for(&id, "the live calls to end", |c| {
            c["finished_at"].is_string()
        })
        .await;
    assert_eq!(count(&settled, "calling"), 0, "{settled:#}");
    assert!(rest.hung_up().is_empty(), "no call was hung up");
    let after_cancel = rest
        .dials()
        .iter()
        .filter(|(_, at)| at.saturating_duration_since(canceled_at) > Duration::from_secs(1))
        .count();
    assert_eq!(after_cancel, 0);
    let dialled = u64::try_from(rest.dials().len()).expect("a count");
    assert_eq!(count(&settled, "done"), dialled, "{settled:#}");
    assert_eq!(count(&settled, "canceled"), 20 - dialled);
}

#[tokio::test]
async fn cancel_with_hangup_ends_the_live_calls() {
    let rest = FakeRest::start().await;
    let server = CampaignServer::start(&rest, Arc::new(SystemClock)).await;
    rest.simulate_calls(
        vec![server.url("")],
        CallScript {
            ring: Duration::from_millis(5),
            talk: Duration::from_secs(60),
        },
    );
    let api = Api::new(server.url(""));
    let id = any_time_campaign(&api, 100, 5, 2).await;
    wait_until("two answered calls", || rest.live_calls() == 2).await;
    // Answered: their records are in progress before the cancel.
    let deadline = Instant::now() + WITHIN;
    loop {
        let (_, answered) = api
            .get(&format!("/calls?campaign={id}&status=in-progress"))
            .await;
        if answered["calls"].as_array().map(Vec::len) == Some(2) {
            break;
        }
        assert!(Instant::now() < deadline, "the calls were not answered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let started = Instant::now();
    let (status, canceled) = api
        .post(&format!("/campaigns/{id}/cancel?hangup=true"))
        .await;
    assert_eq!(status, 200, "{canceled}");
    assert_eq!(
        canceled["hung_up"].as_array().map(Vec::len),
        Some(2),
        "{canceled:#}"
    );
    assert_eq!(rest.hung_up().len(), 2);
    assert!(started.elapsed() < Duration::from_secs(1));
    let settled = api
        .wait_for(&id, "the hung-up calls to settle", |c| {
            count(c, "calling") == 0
        })
        .await;
    assert_eq!(count(&settled, "canceled"), 3, "{settled:#}");
    assert_eq!(rest.dials().len(), 2, "nothing dialled after the cancel");
}

#[tokio::test]
async fn a_bad_row_is_reported_by_line_and_nothing_is_created() {
    let rest = FakeRest::start().await;
    let server = CampaignServer::start(&rest, Arc::new(ManualClock::at(START_MS))).await;
    rest.simulate_calls(vec![server.url("")], FAST);
    let api = Api::new(server.url(""));
    let query = "name=bad&provider=twilio";

    let mut csv = contacts_csv(0..5, |_| "");
    csv.push_str("555-0100,Dana,Acme,a delivery,\n"); // line 7
    let (status, refused) = api.upload_csv(query, csv).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["line"], 7);
    let message = refused["error"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("line 7: `to` must be an E.164 number"),
        "{message}"
    );

    let csv = "to,name,company\n+15550100001,Asha,Acme\n+15550100002,,Acme\n".to_owned();
    let (status, refused) = api.upload_csv(query, csv).await;
    assert_eq!(status, 400);
    assert_eq!(refused["line"], 2, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .contains("needs values for: reason"),
        "{refused}"
    );

    let mut csv = contacts_csv(0..3, |_| "");
    csv.push_str(&format!("{},Eve,Acme,a delivery,Mars/Base\n", number(9)));
    let (status, refused) = api.upload_csv(query, csv).await;
    assert_eq!(
        (status, refused["line"].as_u64()),
        (400, Some(5)),
        "{refused}"
    );

    let duplicate = format!(
        "{}{},Bo,Acme,a delivery,\n",
        contacts_csv(0..2, |_| ""),
        number(0)
    );
    let (status, refused) = api.upload_csv(query, duplicate).await;
    assert_eq!(
        (status, refused["line"].as_u64()),
        (400, Some(4)),
        "{refused}"
    );

    let (status, refused) = api
        .send(
            api.http
                .post(format!("{}/campaigns", api.base))
                .json(&json!({
                    "name": "json", "provider": "twilio",
                    "contacts": [
                        {"to": number(1), "vars": {"name": "A", "company": "B", "reason": "C"}},
                        {"to": "+1", "vars": {"name": "A", "company": "B", "reason": "C"}}
                    ]
                })),
        )
        .await;
    assert_eq!(
        (status, refused["line"].as_u64()),
        (400, Some(2)),
        "{refused}"
    );

    let (status, refused) = api
        .upload_csv(
            "name=bad&provider=twilio&window_start=20:00&window_end=09:00",
            contacts_csv(0..1, |_| ""),
        )
        .await;
    assert_eq!(status, 400, "{refused}");

    let (_, listed) = api.get("/campaigns").await;
    assert_eq!(listed["campaigns"], json!([]), "nothing was created");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(rest.dials().is_empty(), "nothing was dialled");
}

#[tokio::test]
async fn a_json_campaign_and_the_do_not_call_list_guard_post_calls_too() {
    let rest = FakeRest::start().await;
    let server = CampaignServer::start(&rest, Arc::new(ManualClock::at(START_MS))).await;
    rest.simulate_calls(vec![server.url("")], FAST);
    let api = Api::new(server.url(""));
    let listed = number(7);

    let (status, _) = api.post(&format!("/dnc/{listed}")).await;
    assert_eq!(status, 201);
    let (status, _) = api.post(&format!("/dnc/{listed}")).await;
    assert_eq!(status, 200, "listed already");
    let (status, entry) = api
        .get(&format!("/dnc/{}", listed.trim_start_matches('+')))
        .await;
    assert_eq!(
        (status, entry["number"].as_str()),
        (200, Some(listed.as_str()))
    );

    let vars = json!({"name": "Asha", "company": "Acme", "reason": "a delivery"});
    let (status, refused) = api
        .send(
            api.http
                .post(format!("{}/calls", api.base))
                .json(&json!({"to": listed, "provider": "twilio", "vars": vars})),
        )
        .await;
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .contains("is on the do-not-call list: nothing was dialled"),
        "{refused}"
    );
    assert!(rest.dials().is_empty());

    let (status, created) = api
        .send(api.http.post(format!("{}/campaigns", api.base)).json(&json!({
            "name": "json", "provider": "twilio", "timezone": CAMPAIGN_ZONE,
            "window": {"start": "09:00", "end": "17:00", "days": ["mon", "tue", "wed", "thu", "fri"]},
            "pacing": {"max_concurrent": 2, "calls_per_minute": 600},
            "retry": {"on": ["busy"], "max_attempts": 2, "backoff_minutes": 5},
            "contacts": [
                {"to": number(1), "vars": vars},
                {"to": listed, "vars": vars},
            ]
        })))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created["window"]["days"],
        json!(["mon", "tue", "wed", "thu", "fri"])
    );
    assert_eq!(created["retry"]["on"], json!(["busy"]));
    let id = created["id"].as_str().expect("an id");
    let done = api
        .wait_for(id, "the campaign to finish", |c| c["state"] == "finished")
        .await;
    assert_eq!(
        (count(&done, "done"), count(&done, "skipped")),
        (1, 1),
        "{done:#}"
    );
    let (_, page) = api.get(&format!("/campaigns/{id}/contacts")).await;
    let first = &page["contacts"][0];
    assert_eq!(first["calls"][0]["status"], "completed", "{page:#}");
    assert_eq!(first["calls"][0]["duration_seconds"], 7);

    let (status, _) = api
        .send(api.http.delete(format!("{}/dnc/{listed}", api.base)))
        .await;
    assert_eq!(status, 204);
    let (status, _) = api
        .send(api.http.delete(format!("{}/dnc/{listed}", api.base)))
        .await;
    assert_eq!(status, 404);
}

// ---- Two instances of the real binary on one PostgreSQL ----

/// A fresh schema on `TEST_POSTGRES_URL`, dropped when this is.
struct PostgresSchema {
    server: String,
    schema: String,
    url: String,
}

impl PostgresSchema {
    async fn create(test: &str) -> Option<PostgresSchema> {
        let Ok(server) = std::env::var("TEST_POSTGRES_URL") else {
            eprintln!(
                "SKIPPED {test}: set TEST_POSTGRES_URL=postgres://user:password@127.0.0.1:5432/database to run it"
            );
            return None;
        };
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let schema = format!(
            "gp_campaigns_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = sqlx::PgConnection::connect(&server)
            .await
            .expect("TEST_POSTGRES_URL accepts connections");
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await
            .expect("create a test schema");
        admin.close().await.ok();
        let joiner = if server.contains('?') { '&' } else { '?' };
        let url = format!("{server}{joiner}options=-c%20search_path%3D{schema}");
        Some(PostgresSchema {
            server,
            schema,
            url,
        })
    }

    async fn drop_schema(self) {
        if let Ok(mut admin) = sqlx::PgConnection::connect(&self.server).await {
            let _ = sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
                .execute(&mut admin)
                .await;
            admin.close().await.ok();
        }
    }
}

/// The binary with a fast dialer, sharing `database_url` with other instances.
async fn start_binary(rest: &FakeRest, database_url: &str) -> ServerProcess {
    let providers = provider_vars(&rest.url());
    let mut vars = vec![
        ("GEMINI_API_KEY", "test-key"),
        ("DATABASE_URL", database_url),
        ("API_RATE_LIMIT", "100000"),
        ("CAMPAIGN_POLL_MS", "50"),
        ("CAMPAIGN_LEASE_SECS", "2"),
        ("PROVIDER_TIMEOUT_SECS", "1"),
        ("RUST_LOG", "warn"),
    ];
    vars.extend(
        providers
            .iter()
            .map(|(name, value)| (*name, value.as_str())),
    );
    ServerProcess::start(&vars, Logs::Inherit).await
}

#[tokio::test]
async fn two_instances_on_postgres_dial_each_contact_once_and_survive_a_sigkill() {
    install_crypto_provider();
    let Some(db) = PostgresSchema::create("two_instances_on_postgres").await else {
        return;
    };
    let rest = FakeRest::start().await;
    let mut first = start_binary(&rest, &db.url).await;
    let second = start_binary(&rest, &db.url).await;
    rest.simulate_calls(
        vec![first.http(""), second.http("")],
        CallScript {
            ring: Duration::from_millis(5),
            talk: Duration::from_millis(100),
        },
    );
    let api = Api::new(first.http(""));
    let survivor = Api::new(second.http(""));
    // `failed` is retried once: a call whose record the killed instance made but never got
    // to dial is settled `failed` once its lease runs out, and then dialled for the first time.
    let query = "name=fleet&provider=twilio&max_concurrent=8&window_start=00:00&window_end=24:00&days=all&retry_on=failed&max_attempts=2&backoff_minutes=0";
    let (status, created) = api
        .upload_csv(query, contacts_csv(1000..1200, |_| ""))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("an id").to_owned();

    wait_until("a third of the contacts dialled", || {
        rest.dials().len() >= 70
    })
    .await;
    first.kill();
    let killed_at = Instant::now();
    let finished = {
        let deadline = Instant::now() + WITHIN;
        loop {
            let campaign = survivor.campaign(&id).await;
            if campaign["state"] == "finished" {
                break campaign;
            }
            assert!(
                Instant::now() < deadline,
                "the survivor did not finish: {campaign:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    eprintln!(
        "the survivor finished {:?} after the SIGKILL; {} dials",
        killed_at.elapsed(),
        rest.dials().len()
    );
    assert_eq!(count(&finished, "done"), 200, "{finished:#}");
    let (_, retried) = survivor
        .get(&format!("/campaigns/{id}/contacts?limit=1000"))
        .await;
    for contact in retried["contacts"].as_array().into_iter().flatten() {
        if contact["attempts"] != 1 {
            let first_call = contact["calls"][0]["call_id"].as_str().unwrap_or_default();
            let (_, call) = survivor.get(&format!("/calls/{first_call}")).await;
            eprintln!(
                "line {} took {} attempts; the first call ended {} ({})",
                contact["line"], contact["attempts"], call["status"], call["end_reason"]
            );
        }
    }
    let twice: Vec<String> = (1000..1200)
        .map(number)
        .filter(|n| rest.dials_to(n) != 1)
        .collect();
    assert!(twice.is_empty(), "not dialled exactly once: {twice:?}");
    assert!(
        rest.max_live_calls() <= 8,
        "{} calls live at once across both instances",
        rest.max_live_calls()
    );
    drop(second);
    db.drop_schema().await;
}

// ---- Benchmark (run by hand; figures in the notes) ----

/// Enqueues 10,000 contacts through the API, then measures what the dialer's bookkeeping
/// costs the database per dial by driving the store as the dialer does (claim, bind, placed,
/// settle) around the call-record writes every outbound call makes (create, provider id,
/// final status). On SQLite, and on PostgreSQL when `TEST_POSTGRES_URL` is set.
#[tokio::test]
#[ignore = "a benchmark: cargo test --release --test campaigns bench_ -- --ignored --nocapture"]
async fn bench_enqueue_and_database_cost_per_dial() {
    bench_on("sqlite", None).await;
    if let Some(db) = PostgresSchema::create("bench").await {
        bench_on("postgres", Some(db.url.as_str())).await;
        db.drop_schema().await;
    }
}

async fn bench_on(backend: &str, database_url: Option<&str>) {
    use gemini_phone::calls::{CallStatus, NewCall};
    use gemini_phone::campaigns::store::ClaimLimits;
    use gemini_phone::telephony::Direction;

    let rest = FakeRest::start().await;
    let mut extra = vec![("CAMPAIGN_DIALER", "false")];
    if let Some(url) = database_url {
        extra.push(("DATABASE_URL", url));
    }
    let server = CampaignServer::start_with(&rest, Arc::new(SystemClock), &extra).await;
    let api = Api::new(server.url(""));
    let query = "name=bench&provider=twilio&max_concurrent=100&window_start=00:00&window_end=24:00&days=all&max_attempts=1";

    let csv = contacts_csv(
        0..10_000,
        |i| if i % 2 == 0 { "America/Chicago" } else { "" },
    );
    let bytes = csv.len();
    let started = Instant::now();
    let (status, created) = api.upload_csv(query, csv).await;
    let enqueue = started.elapsed();
    assert_eq!(status, 201, "{created}");
    eprintln!(
        "{backend}: POST /campaigns with 10,000 contacts ({bytes} bytes of CSV): {enqueue:?}"
    );

    let app = &server.app;
    let store = &app.campaigns.store;
    let (mut claim_t, mut bind_t, mut settle_t) = Default::default();
    let (mut create_t, mut provider_id_t, mut final_t) = Default::default();
    let mut dials = 0u32;
    let limits = ClaimLimits {
        owner: &app.instance_id,
        now_ms: SystemClock.now_ms(),
        lease_ms: 60_000,
        max_live: 1_000,
    };
    let cycle_started = Instant::now();
    while dials < 2_000 {
        let t = Instant::now();
        let claims = store.claim(&limits).await.expect("claim");
        claim_t += t.elapsed();
        assert!(!claims.is_empty(), "contacts left to claim");
        for claim in &claims {
            let t = Instant::now();
            let record = app
                .store
                .create(NewCall {
                    provider: "twilio".into(),
                    provider_call_id: None,
                    direction: Direction::Outbound,
                    from: claim.from.clone(),
                    to: claim.to.clone(),
                    campaign: Some(claim.campaign_id.clone()),
                    prompt: Some(claim.prompt.clone()),
                    vars: claim.vars.clone(),
                    status: CallStatus::Queued,
                })
                .await
                .expect("create");
            create_t += t.elapsed();
            let t = Instant::now();
            assert!(
                store
                    .bind(claim, &app.instance_id, &record.id, limits.now_ms)
                    .await
                    .expect("bind")
            );
            bind_t += t.elapsed();
            let t = Instant::now();
            app.store
                .set_provider_call_id(&record.id, &format!("CA{dials:032x}"))
                .await
                .expect("provider id");
            provider_id_t += t.elapsed();
            let t = Instant::now();
            app.store
                .record_status(&record.id, CallStatus::Completed)
                .await
                .expect("final status");
            final_t += t.elapsed();
            dials += 1;
        }
        let t = Instant::now();
        let settled = store.settle_ended(limits.now_ms).await.expect("settle");
        settle_t += t.elapsed();
        assert_eq!(settled.len(), claims.len());
    }
    let total = cycle_started.elapsed();
    let per = |d: Duration| d / dials;
    eprintln!(
        "{backend}: {dials} dials in batches of 100: dialer bookkeeping {:?} per dial (claim {:?}, bind {:?}, settle {:?}); the call record's own writes {:?} (create {:?}, provider id {:?}, final status {:?}); all {:?} per dial",
        per(claim_t + bind_t + settle_t),
        per(claim_t),
        per(bind_t),
        per(settle_t),
        per(create_t + provider_id_t + final_t),
        per(create_t),
        per(provider_id_t),
        per(final_t),
        per(total),
    );
}

//! Crash reconciliation, end to end: records left unfinished by a server that died are
//! settled by the next one to start on the same database (the provider's final status when
//! it knows the call, else `failed` with `server stopped`), while calls a live instance looks
//! after, or that the provider still has, are left alone.

mod support;

use std::sync::Arc;
use std::time::Duration;

use gemini_phone::calls::reconcile::{self, PassReport, Reconciler, Settings};
use gemini_phone::calls::{CallRecord, CallStatus, CallStore, NewCall};
use gemini_phone::config::Config;
use gemini_phone::telephony::Direction;
use gemini_phone::telephony::registry::Registry;
use gemini_phone::telephony::rest::{http_client, install_crypto_provider};
use serde_json::{Value, json};
use sqlx::Connection as _;
use support::binary::{Logs, ServerProcess};
use support::rest::{FakeRest, fake_call_sid, fake_uuid};
use support::{API_TOKEN, TestServer, provider_vars};

/// Longest a test waits for a restarted server to settle records. The server's first pass
/// runs one second after start-up.
const SETTLE_WITHIN: Duration = Duration::from_secs(10);

/// A SQLite file shared by the servers of one test.
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

    async fn store(&self) -> CallStore {
        CallStore::connect(&self.url)
            .await
            .expect("the store opens")
    }

    /// Moves an instance's last heartbeat `ago` into the past: "it died that long ago",
    /// without the test waiting out the real dead-after window.
    async fn backdate_heartbeat(&self, instance: &str, ago: Duration) {
        let mut db = sqlx::SqliteConnection::connect(&self.url)
            .await
            .expect("open the SQLite file");
        let ago_ms = i64::try_from(ago.as_millis()).expect("a short duration");
        let changed =
            sqlx::query("UPDATE instances SET heartbeat_ms = heartbeat_ms - ? WHERE id = ?")
                .bind(ago_ms)
                .bind(instance)
                .execute(&mut db)
                .await
                .expect("backdate the heartbeat")
                .rows_affected();
        assert_eq!(changed, 1, "instance {instance} has a heartbeat row");
        db.close().await.ok();
    }
}

fn call(provider: &str, provider_call_id: Option<String>) -> NewCall {
    NewCall {
        provider: provider.to_owned(),
        provider_call_id,
        direction: Direction::Outbound,
        from: "+15550009999".into(),
        to: "+15551234567".into(),
        campaign: None,
        prompt: Some("outbound".into()),
        vars: serde_json::Map::new(),
        status: CallStatus::Queued,
    }
}

/// A record created by `store`'s instance and moved to `status`.
async fn record(
    store: &CallStore,
    provider: &str,
    provider_call_id: Option<String>,
    status: CallStatus,
) -> String {
    let id = store
        .create(call(provider, provider_call_id))
        .await
        .expect("create")
        .id;
    if status != CallStatus::Queued {
        store.record_status(&id, status).await.expect("status");
    }
    id
}

async fn get(store: &CallStore, id: &str) -> CallRecord {
    store
        .get(id)
        .await
        .expect("get")
        .expect("the record exists")
}

/// Polls until every record in `ids` is final; returns them.
async fn wait_final(store: &CallStore, ids: &[&str], within: Duration) -> Vec<CallRecord> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut records = Vec::new();
        for id in ids {
            records.push(get(store, id).await);
        }
        if records.iter().all(|r| r.status.is_final()) || tokio::time::Instant::now() >= deadline {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status_and_reason(record: &CallRecord) -> (CallStatus, Option<&str>) {
    (record.status, record.end_reason.as_deref())
}

#[tokio::test]
async fn a_server_started_after_a_crash_settles_the_dead_instances_calls() {
    let rest = FakeRest::start().await;
    let db = SharedDb::new();
    let plain = db.store().await;

    // The instance that died: it had beaten, then went silent a minute ago.
    let dead = plain.clone().owned_by("i-dead");
    dead.heartbeat().await.expect("beat");
    let ended_sid = fake_call_sid(0xe1);
    rest.set_call_status(&ended_sid, "completed");
    let ended = record(&dead, "twilio", Some(ended_sid), CallStatus::InProgress).await;
    let busy_uuid = fake_uuid(0xb1);
    rest.set_call_status(&busy_uuid, "busy");
    let busy = record(&dead, "plivo", Some(busy_uuid), CallStatus::Ringing).await;
    let unknown = record(
        &dead,
        "twilio",
        Some(fake_call_sid(0xdead)),
        CallStatus::InProgress,
    )
    .await;
    let never_dialled = record(&dead, "twilio", None, CallStatus::Queued).await;
    let machine_sid = fake_call_sid(0xa1);
    rest.set_call_status(&machine_sid, "completed");
    let machine = record(&dead, "twilio", Some(machine_sid), CallStatus::Machine).await;
    let still_live_sid = fake_call_sid(0x11);
    rest.set_call_status(&still_live_sid, "in-progress");
    let still_live = record(
        &dead,
        "twilio",
        Some(still_live_sid),
        CallStatus::InProgress,
    )
    .await;
    db.backdate_heartbeat("i-dead", Duration::from_secs(60))
        .await;

    // Another instance, alive: its call is not ours to settle, whatever the provider says.
    let live = plain.clone().owned_by("i-live");
    live.heartbeat().await.expect("beat");
    let live_sid = fake_call_sid(0x1e);
    rest.set_call_status(&live_sid, "completed");
    let of_live = record(
        &live,
        "twilio",
        Some(live_sid.clone()),
        CallStatus::InProgress,
    )
    .await;
    // A record from before owners were kept, minutes old at most: possibly an older
    // server's live call, so left alone.
    let unowned = record(&plain, "twilio", None, CallStatus::InProgress).await;

    let started = std::time::Instant::now();
    let server = TestServer::with_providers(
        &rest.url(),
        "ws://127.0.0.1:9",
        &[("DATABASE_URL", db.url.as_str())],
    )
    .await;
    let settled = wait_final(
        &plain,
        &[&ended, &busy, &unknown, &never_dialled, &machine],
        SETTLE_WITHIN,
    )
    .await;
    let took = started.elapsed();
    let outcomes: Vec<_> = settled.iter().map(status_and_reason).collect();
    assert_eq!(
        outcomes,
        [
            (
                CallStatus::Completed,
                Some("server stopped; provider reports completed")
            ),
            (
                CallStatus::Busy,
                Some("server stopped; provider reports busy")
            ),
            (CallStatus::Failed, Some("server stopped")),
            (CallStatus::Failed, Some("server stopped")),
            // `machine` is already an outcome: nothing to settle.
            (CallStatus::Machine, None),
        ],
        "settled after {took:?}"
    );
    eprintln!("a restarted server settled 4 orphaned records in {took:?}");
    for record in &settled[..4] {
        assert_eq!(
            plain.owner_of(&record.id).await.expect("owner").as_deref(),
            Some(server.app.instance_id.as_str()),
            "the settling instance took the record over"
        );
    }
    // The history shows the jump to the final status, once.
    let history: Vec<CallStatus> = settled[0].history.iter().map(|c| c.status).collect();
    assert_eq!(
        history,
        [
            CallStatus::Queued,
            CallStatus::InProgress,
            CallStatus::Completed
        ]
    );

    // The pass that settled them also looked at the rest.
    assert_eq!(
        get(&plain, &still_live).await.status,
        CallStatus::InProgress
    );
    let untouched = get(&plain, &of_live).await;
    assert_eq!(
        (untouched.status, untouched.end_reason),
        (CallStatus::InProgress, None)
    );
    assert_eq!(get(&plain, &unowned).await.status, CallStatus::InProgress);
    assert!(
        !rest.requests().iter().any(|r| r.path.contains(&live_sid)),
        "a live instance's call is not even looked up"
    );
    server.stop().await;
}

/// Configuration with both providers on the fake REST API.
fn config(rest: &FakeRest, database_url: &str) -> Config {
    let prompts = concat!(env!("CARGO_MANIFEST_DIR"), "/prompts");
    let mut vars: Vec<(String, String)> = provider_vars(&rest.url())
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    vars.extend(
        [
            ("GEMINI_API_KEY", "test-key"),
            ("PUBLIC_URL", "https://phone.example.com"),
            ("PROMPTS_DIR", prompts),
            ("DATABASE_URL", database_url),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    Config::from_lookup(|name| {
        vars.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    })
    .expect("a valid configuration")
}

/// Timings for driving passes by hand: an instance is dead 300 ms after its last beat.
fn quick_settings(config: &Config) -> Settings {
    Settings {
        dead_after: Duration::from_millis(300),
        ..Settings::for_config(config)
    }
}

#[tokio::test]
async fn passes_settle_the_calls_of_a_peer_that_dies_later_once_the_provider_ends_them() {
    let rest = FakeRest::start().await;
    let db = SharedDb::new();
    let config = config(&rest, &db.url);
    let registry = Registry::from_config(
        &config,
        &http_client(config.provider_timeout).expect("HTTP client"),
    );
    let settings = quick_settings(&config);
    let me = db.store().await.owned_by("i-me");
    me.heartbeat().await.expect("beat");
    let reconciler = Reconciler::new(me.clone(), &registry, settings.clone());

    let peer = db.store().await.owned_by("i-peer");
    peer.heartbeat().await.expect("beat");
    let sid = fake_call_sid(0x77);
    rest.set_call_status(&sid, "in-progress");
    let id = record(&peer, "twilio", Some(sid.clone()), CallStatus::InProgress).await;

    assert_eq!(
        reconciler.pass().await.expect("pass"),
        PassReport::default()
    );

    // The peer dies; its call is still up at the provider: asked, and left for later.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let report = reconciler.pass().await.expect("pass");
    assert_eq!(
        report,
        PassReport {
            still_open: 1,
            ..PassReport::default()
        }
    );
    assert_eq!(get(&me, &id).await.status, CallStatus::InProgress);
    assert_eq!(
        me.owner_of(&id).await.expect("owner").as_deref(),
        Some("i-peer"),
        "given back, so the next pass asks again"
    );

    rest.set_call_status(&sid, "no-answer");
    let report = reconciler.pass().await.expect("pass");
    assert_eq!(report.ended, 1, "{report:?}");
    let settled = get(&me, &id).await;
    assert_eq!(
        status_and_reason(&settled),
        (
            CallStatus::NoAnswer,
            Some("server stopped; provider reports no-answer")
        )
    );
    assert_eq!(
        reconciler.pass().await.expect("pass"),
        PassReport::default()
    );
}

#[tokio::test]
async fn instances_reconciling_at_once_settle_each_call_once() {
    let rest = FakeRest::start().await;
    let db = SharedDb::new();
    let config = config(&rest, &db.url);
    let http = http_client(config.provider_timeout).expect("HTTP client");
    let registry = Registry::from_config(&config, &http);
    let settings = quick_settings(&config);
    let dead = db.store().await.owned_by("i-dead");
    let mut ids = Vec::new();
    for n in 0..12 {
        let sid = fake_call_sid(0x100 + n);
        // Half the calls ended at the provider, half it never heard of.
        if n % 2 == 0 {
            rest.set_call_status(&sid, "completed");
        }
        ids.push(record(&dead, "twilio", Some(sid), CallStatus::InProgress).await);
    }

    let mut reconcilers = Vec::new();
    for n in 0..3 {
        let store = db.store().await.owned_by(&format!("i-{n}"));
        store.heartbeat().await.expect("beat");
        reconcilers.push(Arc::new(Reconciler::new(
            store,
            &registry,
            settings.clone(),
        )));
    }
    let passes = reconcilers.iter().map(|r| {
        let r = Arc::clone(r);
        tokio::spawn(async move { r.pass().await })
    });
    let mut total = PassReport::default();
    for pass in futures_util::future::join_all(passes).await {
        let report = pass.expect("join").expect("pass");
        total.ended += report.ended;
        total.failed += report.failed;
        total.taken_elsewhere += report.taken_elsewhere;
        total.errors += report.errors;
    }
    assert_eq!(
        (total.ended, total.failed, total.errors),
        (6, 6, 0),
        "{total:?}"
    );

    let store = db.store().await;
    let lookups = rest.requests().iter().filter(|r| r.method == "GET").count();
    assert_eq!(lookups, 12, "each call's provider is asked once");
    for id in &ids {
        let record = get(&store, id).await;
        let finals = record
            .history
            .iter()
            .filter(|c| c.status.is_final())
            .count();
        assert_eq!(finals, 1, "{record:?}");
        assert!(
            record
                .end_reason
                .as_deref()
                .unwrap_or_default()
                .starts_with("server stopped")
        );
    }
}

// ---- The real binary: SIGKILL, then a restart on the same SQLite file. ----

/// The binary on `database_url`, taking webhooks unsigned.
async fn start_binary(rest: &FakeRest, database_url: &str) -> ServerProcess {
    let providers = provider_vars(&rest.url());
    let mut vars = vec![
        ("GEMINI_API_KEY", "test-key"),
        ("DATABASE_URL", database_url),
        ("VERIFY_WEBHOOKS", "false"),
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
async fn a_sigkilled_server_s_calls_are_settled_when_it_restarts() {
    install_crypto_provider();
    let rest = FakeRest::start().await;
    let db = SharedDb::new();
    let http = reqwest::Client::new();

    let first = start_binary(&rest, &db.url).await;
    let first_id = first.health().await.expect("health")["instance"]
        .as_str()
        .expect("an instance id")
        .to_owned();
    // An outbound call, dialled through the fake provider…
    let created: Value = http
        .post(first.http("/calls"))
        .bearer_auth(API_TOKEN)
        .json(&json!({"to": "+15551234567", "provider": "twilio",
                      "vars": {"name": "Asha", "company": "Acme", "reason": "a test"}}))
        .send()
        .await
        .expect("POST /calls")
        .json()
        .await
        .expect("JSON");
    let outbound = created["id"].as_str().expect("record id").to_owned();
    let sid = created["provider_call_id"]
        .as_str()
        .expect("sid")
        .to_owned();
    // …and an inbound call the provider will have forgotten.
    let inbound_sid = fake_call_sid(0xf00d);
    let answered = http
        .post(first.http("/twilio/answer"))
        .form(&[
            ("CallSid", inbound_sid.as_str()),
            ("From", "+15550001111"),
            ("To", "+15550009999"),
            ("Direction", "inbound"),
        ])
        .send()
        .await
        .expect("answer webhook");
    assert_eq!(answered.status(), 200);
    let store = db.store().await;
    let inbound = store
        .find_by_provider_call_id("twilio", &inbound_sid)
        .await
        .expect("find")
        .expect("the inbound record")
        .id;
    assert_eq!(get(&store, &inbound).await.status, CallStatus::InProgress);

    // kill -9: no drain, no final records, the heartbeat row stays behind.
    drop(first);
    rest.set_call_status(&sid, "completed");
    // Its last beat is at most a few seconds old; make it as old as a real restart would
    // find it after DEAD_AFTER, rather than wait that out.
    db.backdate_heartbeat(&first_id, reconcile::DEAD_AFTER * 2)
        .await;

    let started = std::time::Instant::now();
    let second = start_binary(&rest, &db.url).await;
    let settled = wait_final(&store, &[&outbound, &inbound], SETTLE_WITHIN).await;
    let took = started.elapsed();
    assert_eq!(
        settled.iter().map(status_and_reason).collect::<Vec<_>>(),
        [
            (
                CallStatus::Completed,
                Some("server stopped; provider reports completed")
            ),
            (CallStatus::Failed, Some("server stopped")),
        ],
        "after {took:?}"
    );
    eprintln!("the restarted binary settled the killed one's records in {took:?}");

    // The restarted instance registered itself before serving; the killed one is dead.
    let second_id = second.health().await.expect("health")["instance"]
        .as_str()
        .expect("an instance id")
        .to_owned();
    let alive = store
        .live_instances(reconcile::DEAD_AFTER)
        .await
        .expect("live");
    assert_eq!(alive, [second_id]);
    drop(second);
}

#[tokio::test]
async fn a_clean_exit_removes_the_instance_and_its_calls_stay_its_own_until_then() {
    let rest = FakeRest::start().await;
    let db = SharedDb::new();
    let server = TestServer::with_providers(
        &rest.url(),
        "ws://127.0.0.1:9",
        &[("DATABASE_URL", db.url.as_str())],
    )
    .await;
    let store = db.store().await;
    let me = server.app.instance_id.clone();
    let forever = Duration::from_secs(24 * 3600);
    assert_eq!(
        store.live_instances(forever).await.expect("live"),
        [me.as_str()]
    );
    // A call the server is running: its record is owned by the server, so a peer's look
    // finds nothing to settle.
    let sid = fake_call_sid(0x5);
    let answered = server
        .webhook(
            "twilio",
            "/twilio/answer",
            &[
                ("CallSid", sid.as_str()),
                ("From", "+15550001111"),
                ("To", "+15550009999"),
                ("Direction", "inbound"),
            ],
        )
        .await;
    assert_eq!(answered.0, 200);
    let id = store
        .find_by_provider_call_id("twilio", &sid)
        .await
        .expect("find")
        .expect("the record")
        .id;
    assert_eq!(store.owner_of(&id).await.expect("owner"), Some(me.clone()));
    let peer = store.clone().owned_by("i-peer");
    let grace = Duration::from_secs(3600);
    assert!(
        peer.orphaned_calls(reconcile::DEAD_AFTER, grace, 100)
            .await
            .expect("orphans")
            .is_empty()
    );

    server.app.leave().await;
    assert!(
        store
            .live_instances(forever)
            .await
            .expect("live")
            .is_empty()
    );
    // Gone, the server's unfinished calls are a peer's to settle.
    let orphans = peer
        .orphaned_calls(reconcile::DEAD_AFTER, grace, 100)
        .await
        .expect("orphans");
    assert_eq!(orphans.len(), 1);
    assert_eq!(orphans[0].id, id);
    server.stop().await;
}

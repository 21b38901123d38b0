//! Call-record store tests. Every scenario runs on SQLite (a file in a temp dir) and, when
//! `TEST_POSTGRES_URL` is set (e.g. `postgres://gemini_phone:gemini_phone@127.0.0.1:5432/gemini_phone_test`),
//! on PostgreSQL too, each run in a fresh schema that is dropped afterwards.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt as _;
use gemini_phone::calls::{CallFilter, CallRecord, CallStatus, CallStore, NewCall, StoreError};
use gemini_phone::telephony::Direction;
use serde_json::{Map, Value, json};
use sqlx::Connection as _;

/// A database for one test: a SQLite file in a temp dir, or a fresh Postgres schema.
struct TestDb {
    url: String,
    _dir: Option<tempfile::TempDir>,
    /// (server URL, schema) to drop at the end.
    postgres: Option<(String, String)>,
}

impl TestDb {
    fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("data").join("calls.db");
        TestDb {
            url: format!("sqlite://{}", path.display()),
            _dir: Some(dir),
            postgres: None,
        }
    }

    /// A fresh schema on `TEST_POSTGRES_URL`, or `None` (with a note) when it is unset.
    async fn postgres(test: &str) -> Option<TestDb> {
        let Ok(server) = std::env::var("TEST_POSTGRES_URL") else {
            eprintln!(
                "SKIPPED postgres::{test}: set TEST_POSTGRES_URL=postgres://user:password@127.0.0.1:5432/database to run it"
            );
            return None;
        };
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let schema = format!(
            "gp_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            test
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
        Some(TestDb {
            url: format!("{server}{joiner}options=-c%20search_path%3D{schema}"),
            _dir: None,
            postgres: Some((server, schema)),
        })
    }

    async fn cleanup(self) {
        if let Some((server, schema)) = self.postgres {
            let mut admin = sqlx::PgConnection::connect(&server)
                .await
                .expect("TEST_POSTGRES_URL accepts connections");
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&mut admin)
                .await
                .expect("drop the test schema");
            admin.close().await.ok();
        }
    }
}

/// Runs `scenario` on `db`'s URL, cleans up even when it panics, then passes the panic on.
async fn run<F, Fut>(db: TestDb, scenario: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let outcome = AssertUnwindSafe(scenario(db.url.clone()))
        .catch_unwind()
        .await;
    db.cleanup().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Declares each scenario as `sqlite::NAME` and `postgres::NAME`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::run(super::TestDb::sqlite(), super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(db) = super::TestDb::postgres(stringify!($name)).await {
                        super::run(db, super::$name).await;
                    }
                }
            )*
        }
    };
}

on_both_backends!(
    create_get_round_trip,
    status_history_keeps_order_and_final_status,
    fail_and_finish,
    transcript_keeps_order,
    an_interrupted_line_is_marked,
    concurrent_appends_all_land_in_order,
    tool_events_round_trip,
    list_filters_newest_first,
    find_by_provider_call_id,
    records_survive_restart_and_migrations_rerun,
    unknown_ids_are_not_found,
    a_stream_token_is_consumed_once,
    concurrent_uses_of_a_stream_token_have_one_winner,
    used_stream_tokens_survive_restart,
    expired_stream_tokens_are_pruned,
);

async fn open(url: &str) -> CallStore {
    let store = CallStore::connect(url).await.expect("the store opens");
    let expected = if url.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    };
    assert_eq!(store.backend(), expected);
    store
}

fn vars(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn new_call(campaign: Option<&str>) -> NewCall {
    NewCall {
        provider: "twilio".into(),
        provider_call_id: None,
        direction: Direction::Outbound,
        from: "+15550001111".into(),
        to: "+15552223333".into(),
        campaign: campaign.map(str::to_owned),
        prompt: Some("outbound".into()),
        vars: Map::new(),
        status: CallStatus::Queued,
    }
}

async fn get(store: &CallStore, id: &str) -> CallRecord {
    store
        .get(id)
        .await
        .expect("get works")
        .expect("the record exists")
}

fn statuses(record: &CallRecord) -> Vec<CallStatus> {
    record.history.iter().map(|change| change.status).collect()
}

async fn create_get_round_trip(url: String) {
    let store = open(&url).await;
    let call = NewCall {
        provider: "plivo".into(),
        provider_call_id: Some("a1b2-c3".into()),
        direction: Direction::Inbound,
        from: "+441234567890".into(),
        to: "+15557654321".into(),
        campaign: Some("spring".into()),
        prompt: Some("inbound".into()),
        vars: vars(json!({
            "name": "Asha",
            "count": 3,
            "nested": {"list": [1, "two", null], "ok": true},
            "quote": "it's \"fine\" ✓"
        })),
        status: CallStatus::Ringing,
    };
    let created = store.create(call.clone()).await.expect("create works");
    assert_eq!(created.id.len(), 25);
    assert!(created.id.starts_with('c'));
    assert!(
        created
            .id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    );

    let got = get(&store, &created.id).await;
    assert_eq!(got.id, created.id);
    assert_eq!(got.provider, "plivo");
    assert_eq!(got.provider_call_id.as_deref(), Some("a1b2-c3"));
    assert_eq!(got.direction, Direction::Inbound);
    assert_eq!(got.from, call.from);
    assert_eq!(got.to, call.to);
    assert_eq!(got.campaign.as_deref(), Some("spring"));
    assert_eq!(got.prompt.as_deref(), Some("inbound"));
    assert_eq!(got.vars, call.vars);
    assert_eq!(got.status, CallStatus::Ringing);
    assert_eq!(got.answered_by, None);
    assert_eq!(got.duration_seconds, None);
    assert_eq!(got.end_reason, None);
    assert_eq!(got.created_at, created.created_at);
    assert_eq!(got.history, created.history);
    assert_eq!(statuses(&got), [CallStatus::Ringing]);
    assert!(got.transcript.is_empty() && got.tool_events.is_empty());
    assert_rfc3339(&got.created_at);

    let json = serde_json::to_value(&got).expect("records serialize");
    assert_eq!(json["direction"], "inbound");
    assert_eq!(json["status"], "ringing");
    assert_eq!(json["vars"]["nested"]["list"][1], "two");
    assert_eq!(json["history"][0]["status"], "ringing");

    // Nullable fields stay null.
    let bare = store
        .create(NewCall {
            campaign: None,
            prompt: None,
            ..new_call(None)
        })
        .await
        .expect("create works");
    let got = get(&store, &bare.id).await;
    assert_eq!(
        (got.campaign, got.prompt, got.provider_call_id),
        (None, None, None)
    );
    assert_eq!(got.direction, Direction::Outbound);
    assert!(got.vars.is_empty());
    assert_eq!(
        store
            .get("cnosuchcall")
            .await
            .expect("get works")
            .map(|r| r.id),
        None
    );
    store.close().await;
}

async fn status_history_keeps_order_and_final_status(url: String) {
    let store = open(&url).await;
    let id = store.create(new_call(None)).await.expect("create").id;
    use CallStatus::*;
    for status in [Ringing, Ringing, InProgress, Machine, Completed] {
        store
            .record_status(&id, status)
            .await
            .expect("record_status");
    }
    // Late and repeated callbacks: ignored once the call is over.
    for status in [Ringing, InProgress, Completed, Failed, Queued] {
        store
            .record_status(&id, status)
            .await
            .expect("record_status");
    }
    let record = get(&store, &id).await;
    assert_eq!(
        record.status, Machine,
        "the hang-up's `completed` replaced `machine`"
    );
    assert_eq!(statuses(&record), [Queued, Ringing, InProgress, Machine]);
    assert!(record.history.windows(2).all(|w| w[0].at <= w[1].at));
    assert!(record.updated_at >= record.created_at);

    // Out of order before the end: in-progress arrives before ringing.
    let id = store.create(new_call(None)).await.expect("create").id;
    store
        .record_status(&id, InProgress)
        .await
        .expect("record_status");
    store
        .record_status(&id, Ringing)
        .await
        .expect("record_status");
    store
        .record_status(&id, NoAnswer)
        .await
        .expect("record_status");
    let record = get(&store, &id).await;
    assert_eq!(statuses(&record), [Queued, InProgress, NoAnswer]);
    assert_eq!(record.status, NoAnswer);

    // Detection's verdict after the hang-up's `completed`: the machine is still what it was.
    let id = store.create(new_call(None)).await.expect("create").id;
    for status in [InProgress, Completed, Machine, Completed, Failed] {
        store
            .record_status(&id, status)
            .await
            .expect("record_status");
    }
    let record = get(&store, &id).await;
    assert_eq!(record.status, Machine);
    assert_eq!(statuses(&record), [Queued, InProgress, Completed, Machine]);
    let machines = store
        .list(&CallFilter {
            status: Some(Machine),
            ..CallFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(machines.len(), 2, "both machine calls are found by status");
    store.close().await;
}

async fn fail_and_finish(url: String) {
    let store = open(&url).await;
    let id = store.create(new_call(None)).await.expect("create").id;
    store
        .record_status(&id, CallStatus::InProgress)
        .await
        .expect("status");
    store
        .fail(&id, "gemini session closed")
        .await
        .expect("fail");
    store
        .record_status(&id, CallStatus::Completed)
        .await
        .expect("status");
    store.finish(&id, Some(42), None).await.expect("finish");
    let record = get(&store, &id).await;
    assert_eq!(record.status, CallStatus::Failed);
    assert_eq!(
        statuses(&record),
        [
            CallStatus::Queued,
            CallStatus::InProgress,
            CallStatus::Failed
        ]
    );
    assert_eq!(record.end_reason.as_deref(), Some("gemini session closed"));
    assert_eq!(record.duration_seconds, Some(42));

    // A call that already ended keeps its status; fail only fills an empty end reason.
    let id = store.create(new_call(None)).await.expect("create").id;
    store
        .record_status(&id, CallStatus::Completed)
        .await
        .expect("status");
    store.fail(&id, "stream dropped").await.expect("fail");
    store.fail(&id, "second reason").await.expect("fail");
    let record = get(&store, &id).await;
    assert_eq!(record.status, CallStatus::Completed);
    assert_eq!(record.end_reason.as_deref(), Some("stream dropped"));

    // finish sets what is given and keeps the rest.
    store
        .finish(&id, None, Some("NORMAL_CLEARING"))
        .await
        .expect("finish");
    store.finish(&id, Some(7), None).await.expect("finish");
    store
        .set_answered_by(&id, "machine_end_beep")
        .await
        .expect("answered_by");
    let record = get(&store, &id).await;
    assert_eq!(record.end_reason.as_deref(), Some("NORMAL_CLEARING"));
    assert_eq!(record.duration_seconds, Some(7));
    assert_eq!(record.answered_by.as_deref(), Some("machine_end_beep"));
    store.close().await;
}

async fn an_interrupted_line_is_marked(url: String) {
    let store = open(&url).await;
    let id = store.create(new_call(None)).await.expect("create").id;
    store
        .append_transcript(&id, "caller", "what time do you open")
        .await
        .expect("append");
    store
        .append_interrupted_transcript(&id, "agent", "We open at nine, and on")
        .await
        .expect("append interrupted");
    store
        .append_transcript(&id, "caller", "thanks")
        .await
        .expect("append");
    let record = get(&store, &id).await;
    let flags: Vec<(&str, bool)> = record
        .transcript
        .iter()
        .map(|line| (line.text.as_str(), line.interrupted))
        .collect();
    assert_eq!(
        flags,
        [
            ("what time do you open", false),
            ("We open at nine, and on", true),
            ("thanks", false)
        ]
    );
    // In JSON the flag shows only where it is true.
    let json = serde_json::to_value(&record).expect("json");
    assert_eq!(json["transcript"][1]["interrupted"], true);
    assert!(json["transcript"][0].get("interrupted").is_none());
    store.close().await;
}

async fn transcript_keeps_order(url: String) {
    let store = open(&url).await;
    let id = store.create(new_call(None)).await.expect("create").id;
    store
        .record_status(&id, CallStatus::InProgress)
        .await
        .expect("status");
    let lines: Vec<(String, String)> = (0..30)
        .map(|i| {
            let who = if i % 2 == 0 { "agent" } else { "caller" };
            (who.to_owned(), format!("line {i}: ünïcode 'quotes' \"ok\""))
        })
        .collect();
    for (i, (who, text)) in lines.iter().enumerate() {
        store
            .append_transcript(&id, who, text)
            .await
            .expect("append");
        if i == 10 {
            store
                .append_tool_event(&id, "lookup", &json!({"i": i}))
                .await
                .expect("tool");
            store
                .record_status(&id, CallStatus::Completed)
                .await
                .expect("status");
        }
    }
    let record = get(&store, &id).await;
    let got: Vec<(String, String)> = record
        .transcript
        .iter()
        .map(|line| (line.who.clone(), line.text.clone()))
        .collect();
    assert_eq!(got, lines);
    assert!(record.transcript.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(
        statuses(&record),
        [
            CallStatus::Queued,
            CallStatus::InProgress,
            CallStatus::Completed
        ]
    );
    assert_eq!(record.tool_events.len(), 1);
    assert_rfc3339(&record.transcript[0].at);
    store.close().await;
}

async fn concurrent_appends_all_land_in_order(url: String) {
    let store = open(&url).await;
    let id = store.create(new_call(None)).await.expect("create").id;
    let mut tasks = Vec::new();
    for writer in 0..4 {
        let store = store.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..10 {
                store
                    .append_transcript(&id, &format!("w{writer}"), &n.to_string())
                    .await
                    .expect("concurrent append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer task");
    }
    let record = get(&store, &id).await;
    assert_eq!(record.transcript.len(), 40);
    for writer in 0..4 {
        let who = format!("w{writer}");
        let seen: Vec<String> = record
            .transcript
            .iter()
            .filter(|line| line.who == who)
            .map(|line| line.text.clone())
            .collect();
        let expected: Vec<String> = (0..10).map(|n: i32| n.to_string()).collect();
        assert_eq!(seen, expected, "{who}'s lines in the order written");
    }
    store.close().await;
}

async fn tool_events_round_trip(url: String) {
    let store = open(&url).await;
    let id = store.create(new_call(None)).await.expect("create").id;
    let call = json!({"call": {"args": {"date": "2026-05-21", "slots": [9, 10]}}});
    let result = json!({"result": {"booked": true, "note": null}});
    store
        .append_tool_event(&id, "book_slot", &call)
        .await
        .expect("tool");
    store
        .append_tool_event(&id, "book_slot", &result)
        .await
        .expect("tool");
    store
        .append_tool_event(&id, "end_call", &Value::String("bye".into()))
        .await
        .expect("tool");
    let record = get(&store, &id).await;
    let got: Vec<(&str, &Value)> = record
        .tool_events
        .iter()
        .map(|event| (event.name.as_str(), &event.detail))
        .collect();
    let bye = Value::String("bye".into());
    assert_eq!(
        got,
        [
            ("book_slot", &call),
            ("book_slot", &result),
            ("end_call", &bye)
        ]
    );
    assert!(record.transcript.is_empty());
    let json = serde_json::to_value(&record).expect("serialize");
    assert_eq!(
        json["tool_events"][0]["detail"]["call"]["args"]["slots"][1],
        10
    );
    store.close().await;
}

async fn list_filters_newest_first(url: String) {
    let store = open(&url).await;
    let mut ids = Vec::new();
    for (campaign, status) in [
        (Some("spring"), CallStatus::Completed),
        (Some("autumn"), CallStatus::Completed),
        (Some("spring"), CallStatus::Busy),
        (None, CallStatus::Completed),
        (Some("spring"), CallStatus::Completed),
    ] {
        let id = store.create(new_call(campaign)).await.expect("create").id;
        store
            .append_transcript(&id, "agent", "hello")
            .await
            .expect("append");
        store.record_status(&id, status).await.expect("status");
        ids.push(id);
    }
    let listed = |records: Vec<CallRecord>| records.into_iter().map(|r| r.id).collect::<Vec<_>>();

    let all = store.list(&CallFilter::default()).await.expect("list");
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0].created_at >= w[1].created_at));
    assert_eq!(
        listed(all.clone()),
        ids.iter().rev().cloned().collect::<Vec<_>>()
    );
    let last = &all[0];
    assert_eq!(statuses(last), [CallStatus::Queued, CallStatus::Completed]);
    assert!(last.transcript.is_empty(), "list leaves transcripts out");

    let spring = CallFilter {
        campaign: Some("spring".into()),
        ..CallFilter::default()
    };
    assert_eq!(
        listed(store.list(&spring).await.expect("list")),
        [ids[4].clone(), ids[2].clone(), ids[0].clone()]
    );
    let completed = CallFilter {
        status: Some(CallStatus::Completed),
        ..CallFilter::default()
    };
    assert_eq!(
        listed(store.list(&completed).await.expect("list")),
        [
            ids[4].clone(),
            ids[3].clone(),
            ids[1].clone(),
            ids[0].clone()
        ]
    );
    let spring_busy = CallFilter {
        campaign: Some("spring".into()),
        status: Some(CallStatus::Busy),
        limit: 10,
        ..CallFilter::default()
    };
    assert_eq!(
        listed(store.list(&spring_busy).await.expect("list")),
        [ids[2].clone()]
    );
    let two = CallFilter {
        limit: 2,
        ..CallFilter::default()
    };
    assert_eq!(
        listed(store.list(&two).await.expect("list")),
        [ids[4].clone(), ids[3].clone()]
    );
    let zero = CallFilter {
        limit: 0,
        ..CallFilter::default()
    };
    assert_eq!(
        listed(store.list(&zero).await.expect("list")),
        [ids[4].clone()]
    );
    let none = CallFilter {
        campaign: Some("winter".into()),
        ..CallFilter::default()
    };
    assert!(store.list(&none).await.expect("list").is_empty());
    store.close().await;
}

async fn find_by_provider_call_id(url: String) {
    let store = open(&url).await;
    let id = store.create(new_call(None)).await.expect("create").id;
    let other = store.create(new_call(None)).await.expect("create").id;
    assert!(
        store
            .find_by_provider_call_id("twilio", "CA123")
            .await
            .expect("find")
            .is_none()
    );
    store
        .set_provider_call_id(&id, "CA123")
        .await
        .expect("set id");
    store
        .set_provider_call_id(&other, "CA999")
        .await
        .expect("set id");
    store
        .append_transcript(&id, "caller", "hi")
        .await
        .expect("append");
    let found = store
        .find_by_provider_call_id("twilio", "CA123")
        .await
        .expect("find")
        .expect("found");
    assert_eq!(found.id, id);
    assert_eq!(found.provider_call_id.as_deref(), Some("CA123"));
    assert_eq!(found.transcript.len(), 1, "find returns the full record");
    assert!(
        store
            .find_by_provider_call_id("plivo", "CA123")
            .await
            .expect("find")
            .is_none()
    );
    store.close().await;
}

async fn records_survive_restart_and_migrations_rerun(url: String) {
    let store = open(&url).await;
    let id = store
        .create(new_call(Some("restart")))
        .await
        .expect("create")
        .id;
    store
        .record_status(&id, CallStatus::InProgress)
        .await
        .expect("status");
    store
        .append_transcript(&id, "agent", "before restart")
        .await
        .expect("append");
    let before = get(&store, &id).await;
    store.close().await;

    // A second start runs the migrator again; a third store opens alongside it.
    let store = open(&url).await;
    let alongside = open(&url).await;
    let after = get(&store, &id).await;
    assert_eq!(
        serde_json::to_value(&after).expect("serialize"),
        serde_json::to_value(&before).expect("serialize")
    );
    store
        .append_transcript(&id, "agent", "after restart")
        .await
        .expect("append");
    let seen = get(&alongside, &id).await;
    assert_eq!(seen.transcript.len(), 2);
    store.close().await;
    alongside.close().await;
}

async fn unknown_ids_are_not_found(url: String) {
    let store = open(&url).await;
    let missing = "cmissing";
    let results = [
        store.record_status(missing, CallStatus::Ringing).await,
        store.set_provider_call_id(missing, "x").await,
        store.set_answered_by(missing, "human").await,
        store.finish(missing, Some(1), Some("x")).await,
        store.fail(missing, "x").await,
        store.append_transcript(missing, "agent", "x").await,
        store.append_tool_event(missing, "t", &json!({})).await,
    ];
    for result in results {
        match result {
            Err(StoreError::NotFound { id }) => assert_eq!(id, missing),
            other => panic!("expected NotFound, got {other:?}"),
        }
    }
    store.close().await;
}

fn assert_rfc3339(at: &str) {
    // 2026-05-20T09:30:00.125Z
    let bytes = at.as_bytes();
    assert_eq!(bytes.len(), 24, "{at}");
    assert!(
        at.ends_with('Z') && bytes[10] == b'T' && bytes[19] == b'.',
        "{at}"
    );
}

// SQLite only.

#[tokio::test]
async fn sqlite_file_and_folder_are_created_with_wal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("deep").join("er").join("gemini-phone.db");
    assert!(!path.parent().is_some_and(Path::exists));
    let url = format!("sqlite://{}", path.display());
    let store = open(&url).await;
    assert_eq!(store.backend(), "sqlite");
    assert!(path.exists(), "the database file exists");
    store.create(new_call(None)).await.expect("create");
    store.close().await;

    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("open the file");
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .expect("pragma");
    assert_eq!(mode, "wal");
    let (calls,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM calls")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    assert_eq!(calls, 1);
}

#[tokio::test]
async fn sqlite_memory_url_works() {
    let store = open("sqlite::memory:").await;
    let id = store.create(new_call(None)).await.expect("create").id;
    store
        .append_transcript(&id, "agent", "in memory")
        .await
        .expect("append");
    assert_eq!(get(&store, &id).await.transcript.len(), 1);
    assert_eq!(
        store
            .list(&CallFilter::default())
            .await
            .expect("list")
            .len(),
        1
    );
}

#[tokio::test]
async fn bad_urls_are_typed_errors_without_passwords() {
    let err = CallStore::connect("mysql://me:hunter2@127.0.0.1/db")
        .await
        .expect_err("mysql is not supported");
    assert!(matches!(err, StoreError::UnsupportedUrl { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("sqlite://") && !text.contains("hunter2"),
        "{text}"
    );

    // Nothing listens on port 1 of loopback.
    let started = std::time::Instant::now();
    let err = CallStore::connect("postgres://me:hunter2@127.0.0.1:1/db?password=hunter2")
        .await
        .expect_err("nothing listens there");
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    let text = err.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("127.0.0.1:1/db"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn status_names_and_provider_spellings() {
    for status in CallStatus::ALL {
        assert_eq!(status.as_str().parse::<CallStatus>(), Ok(status));
        let json = serde_json::to_value(status).expect("serialize");
        assert_eq!(json, status.as_str());
        assert_eq!(status.to_string(), status.as_str());
    }
    for (spelling, status) in [
        ("initiated", CallStatus::Queued),
        ("in-progress", CallStatus::InProgress),
        ("no-answer", CallStatus::NoAnswer),
        ("timeout", CallStatus::NoAnswer),
        ("cancel", CallStatus::Canceled),
        ("Cancelled", CallStatus::Canceled),
        ("BUSY", CallStatus::Busy),
    ] {
        assert_eq!(spelling.parse::<CallStatus>(), Ok(status), "{spelling}");
    }
    assert!("answered-ish".parse::<CallStatus>().is_err());
    let finals: Vec<CallStatus> = CallStatus::ALL
        .into_iter()
        .filter(|s| s.is_final())
        .collect();
    assert_eq!(
        finals,
        [
            CallStatus::Machine,
            CallStatus::Completed,
            CallStatus::Busy,
            CallStatus::NoAnswer,
            CallStatus::Failed,
            CallStatus::Canceled
        ]
    );
    assert_eq!(CallFilter::default().limit, 50);
}

/// A stream token as the answer webhook issues them: `<expiry>t<32 hex>`.
fn stream_token(expires_at: u64, n: u64) -> String {
    format!("{expires_at}t{n:032x}")
}

/// An hour from now, in unix seconds.
fn in_an_hour() -> u64 {
    gemini_phone::signature::unix_now() + 3600
}

async fn a_stream_token_is_consumed_once(url: String) {
    let store = open(&url).await;
    let expires = in_an_hour();
    let token = stream_token(expires, 1);
    assert!(store.consume_stream_token(&token, expires).await.unwrap());
    assert!(
        !store.consume_stream_token(&token, expires).await.unwrap(),
        "a used token started a second stream"
    );
    let other = stream_token(expires, 2);
    assert!(store.consume_stream_token(&other, expires).await.unwrap());
    store.close().await;
}

async fn concurrent_uses_of_a_stream_token_have_one_winner(url: String) {
    let store = open(&url).await;
    let expires = in_an_hour();
    let token = stream_token(expires, 7);
    let attempts = (0..30).map(|_| store.consume_stream_token(&token, expires));
    let results = futures_util::future::join_all(attempts).await;
    let winners = results
        .into_iter()
        .map(|result| result.expect("consume_stream_token"))
        .filter(|first| *first)
        .count();
    assert_eq!(winners, 1, "30 concurrent starts with one token");
    store.close().await;
}

async fn used_stream_tokens_survive_restart(url: String) {
    let expires = in_an_hour();
    let token = stream_token(expires, 3);
    let first = open(&url).await;
    assert!(first.consume_stream_token(&token, expires).await.unwrap());
    first.close().await;
    // Another instance, or this one after a restart, on the same database.
    let second = open(&url).await;
    assert!(!second.consume_stream_token(&token, expires).await.unwrap());
    second.close().await;
}

async fn expired_stream_tokens_are_pruned(url: String) {
    let store = open(&url).await;
    let long_ago = gemini_phone::signature::unix_now() - 24 * 3600;
    let just_now = gemini_phone::signature::unix_now() - 1;
    let old = stream_token(long_ago, 1);
    let recent = stream_token(just_now, 2);
    assert!(store.consume_stream_token(&old, long_ago).await.unwrap());
    assert!(store.consume_stream_token(&recent, just_now).await.unwrap());

    // Consuming fresh tokens prunes now and then, with no one asking.
    let expires = in_an_hour();
    let mut consumed = 0;
    loop {
        consumed += 1;
        let fresh = stream_token(expires, 1000 + consumed);
        assert!(store.consume_stream_token(&fresh, expires).await.unwrap());
        if store.consume_stream_token(&old, long_ago).await.unwrap() {
            break; // Its row was gone: pruned, so the insert succeeded again.
        }
        assert!(consumed < 500, "500 consumptions never pruned");
    }
    // A token that expired a moment ago is kept for a grace period, so an instance whose
    // clock lags still finds it used.
    assert!(!store.consume_stream_token(&recent, just_now).await.unwrap());
    // Only the re-inserted long-expired token is due, unless its own insert was a prune turn
    // (one token in 32, by its hash) and took it already.
    let pruned = store.forget_expired_stream_tokens().await.unwrap();
    assert!(
        pruned <= 1,
        "{pruned} tokens pruned; only the long-expired one was due"
    );
    assert!(
        store.consume_stream_token(&old, long_ago).await.unwrap(),
        "the long-expired token is gone"
    );
    assert!(!store.consume_stream_token(&recent, just_now).await.unwrap());
    store.close().await;
}

/// Instances, ownership and orphans (crash reconciliation's store side), on both backends.
mod instances {
    use super::*;
    use gemini_phone::calls::store::OrphanedCall;

    /// Short enough that "dead" takes a fraction of a second to become true.
    const DEAD_AFTER: Duration = Duration::from_millis(300);
    /// Longer than [`DEAD_AFTER`]: a silent instance is dead after it.
    const SILENCE: Duration = Duration::from_millis(450);
    /// Records without an owner are never orphans within a test with this grace.
    const LONG_GRACE: Duration = Duration::from_secs(3600);

    on_both_backends!(
        owner_is_stamped_on_create_and_moves_with_the_stream,
        heartbeats_keep_an_instance_alive_until_it_leaves_or_falls_silent,
        orphans_are_open_calls_of_dead_or_vanished_owners,
        unowned_records_are_orphans_only_after_the_grace,
        one_instance_alone_claims_an_orphan,
        a_claim_fails_once_the_owner_beats_again_or_the_call_ended,
    );

    async fn in_progress(store: &CallStore, provider_call_id: Option<&str>) -> String {
        let mut call = new_call(None);
        call.provider_call_id = provider_call_id.map(str::to_owned);
        let id = store.create(call).await.expect("create").id;
        store
            .record_status(&id, CallStatus::InProgress)
            .await
            .expect("status");
        id
    }

    fn ids(orphans: &[OrphanedCall]) -> Vec<&str> {
        orphans.iter().map(|o| o.id.as_str()).collect()
    }

    async fn owner_is_stamped_on_create_and_moves_with_the_stream(url: String) {
        let plain = open(&url).await;
        let a = plain.clone().owned_by("i-a");
        let b = plain.clone().owned_by("i-b");
        let by_a = a.create(new_call(None)).await.expect("create").id;
        let by_nobody = plain.create(new_call(None)).await.expect("create").id;
        assert_eq!(
            a.owner_of(&by_a).await.expect("owner").as_deref(),
            Some("i-a")
        );
        assert_eq!(plain.owner_of(&by_nobody).await.expect("owner"), None);

        b.take_ownership(&by_a).await.expect("take over");
        assert_eq!(
            a.owner_of(&by_a).await.expect("owner").as_deref(),
            Some("i-b")
        );
        // Ownership is bookkeeping: the record the user sees does not change.
        assert_eq!(get(&a, &by_a).await.status, CallStatus::Queued);
        match b.take_ownership("cmissing").await {
            Err(StoreError::NotFound { id }) => assert_eq!(id, "cmissing"),
            other => panic!("expected NotFound, got {other:?}"),
        }
        plain.close().await;
    }

    async fn heartbeats_keep_an_instance_alive_until_it_leaves_or_falls_silent(url: String) {
        let plain = open(&url).await;
        let a = plain.clone().owned_by("i-a");
        let b = plain.clone().owned_by("i-b");
        assert!(
            plain
                .live_instances(DEAD_AFTER)
                .await
                .expect("live")
                .is_empty()
        );
        a.heartbeat().await.expect("beat");
        b.heartbeat().await.expect("beat");
        assert_eq!(
            plain.live_instances(DEAD_AFTER).await.expect("live"),
            ["i-a", "i-b"]
        );

        tokio::time::sleep(SILENCE).await;
        a.heartbeat().await.expect("beat");
        assert_eq!(
            plain.live_instances(DEAD_AFTER).await.expect("live"),
            ["i-a"],
            "b fell silent"
        );
        a.leave().await.expect("leave");
        assert!(
            plain
                .live_instances(DEAD_AFTER)
                .await
                .expect("live")
                .is_empty()
        );

        // b's row is still there, silent: pruning removes it, and only it.
        a.heartbeat().await.expect("beat");
        assert_eq!(plain.prune_instances(DEAD_AFTER).await.expect("prune"), 1);
        assert_eq!(
            plain
                .live_instances(Duration::from_secs(3600))
                .await
                .expect("live"),
            ["i-a"]
        );
        plain.close().await;
    }

    async fn orphans_are_open_calls_of_dead_or_vanished_owners(url: String) {
        let plain = open(&url).await;
        let me = plain.clone().owned_by("i-me");
        let live = plain.clone().owned_by("i-live");
        let dead = plain.clone().owned_by("i-dead");
        let vanished = plain.clone().owned_by("i-vanished");
        live.heartbeat().await.expect("beat");
        dead.heartbeat().await.expect("beat");

        let of_live = in_progress(&live, None).await;
        let of_dead = in_progress(&dead, Some("CA00000000000000000000000000000001")).await;
        let of_dead_ended = in_progress(&dead, None).await;
        dead.record_status(&of_dead_ended, CallStatus::Completed)
            .await
            .expect("status");
        let of_dead_ringing = dead.create(new_call(None)).await.expect("create").id;
        dead.record_status(&of_dead_ringing, CallStatus::Ringing)
            .await
            .expect("status");
        // Never beat: a crash before the first heartbeat, or a row already pruned.
        let of_vanished = in_progress(&vanished, None).await;
        // Mine, though I never beat in this test: an instance never settles its own calls.
        let of_mine = in_progress(&me, None).await;

        tokio::time::sleep(SILENCE).await;
        live.heartbeat().await.expect("beat");
        let orphans = me
            .orphaned_calls(DEAD_AFTER, LONG_GRACE, 100)
            .await
            .expect("orphans");
        assert_eq!(ids(&orphans), [&of_dead, &of_dead_ringing, &of_vanished]);
        assert_eq!(
            orphans[0],
            OrphanedCall {
                id: of_dead.clone(),
                provider: "twilio".into(),
                provider_call_id: Some("CA00000000000000000000000000000001".into()),
                status: CallStatus::InProgress,
                owner: Some("i-dead".into()),
            }
        );
        assert_eq!(orphans[1].status, CallStatus::Ringing);
        assert!(!ids(&orphans).contains(&of_live.as_str()));
        assert!(!ids(&orphans).contains(&of_mine.as_str()));
        assert_eq!(
            me.orphaned_calls(DEAD_AFTER, LONG_GRACE, 1)
                .await
                .expect("orphans")
                .len(),
            1,
            "the limit holds"
        );
        plain.close().await;
    }

    async fn unowned_records_are_orphans_only_after_the_grace(url: String) {
        let plain = open(&url).await;
        let me = plain.clone().owned_by("i-me");
        let old_version = in_progress(&plain, None).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            me.orphaned_calls(DEAD_AFTER, LONG_GRACE, 100)
                .await
                .expect("orphans")
                .is_empty(),
            "an unowned call may belong to an older server still running"
        );
        let orphans = me
            .orphaned_calls(DEAD_AFTER, Duration::from_millis(10), 100)
            .await
            .expect("orphans");
        assert_eq!(ids(&orphans), [&old_version]);
        assert_eq!(orphans[0].owner, None);
        assert!(
            me.claim_orphan(&orphans[0], DEAD_AFTER)
                .await
                .expect("claim")
        );
        assert_eq!(
            me.owner_of(&old_version).await.expect("owner").as_deref(),
            Some("i-me")
        );
        me.release_orphan(&orphans[0]).await.expect("release");
        assert_eq!(me.owner_of(&old_version).await.expect("owner"), None);
        plain.close().await;
    }

    async fn one_instance_alone_claims_an_orphan(url: String) {
        let plain = open(&url).await;
        let x = open(&url).await.owned_by("i-x");
        let y = open(&url).await.owned_by("i-y");
        let dead = plain.clone().owned_by("i-dead");
        let mut orphans = Vec::new();
        for _ in 0..5 {
            in_progress(&dead, None).await;
        }
        for orphan in x
            .orphaned_calls(DEAD_AFTER, LONG_GRACE, 100)
            .await
            .expect("orphans")
        {
            orphans.push(orphan);
        }
        assert_eq!(orphans.len(), 5);

        for orphan in &orphans {
            let (by_x, by_y) = tokio::join!(
                x.claim_orphan(orphan, DEAD_AFTER),
                y.claim_orphan(orphan, DEAD_AFTER)
            );
            let (by_x, by_y) = (by_x.expect("claim"), by_y.expect("claim"));
            assert!(by_x ^ by_y, "exactly one claims: x {by_x}, y {by_y}");
            let winner = if by_x { &x } else { &y };
            let loser = if by_x { &y } else { &x };
            assert!(winner.still_claimed(&orphan.id).await.expect("claimed"));
            assert!(!loser.still_claimed(&orphan.id).await.expect("claimed"));
            // A claimed orphan is no orphan to the others (its claimer is alive).
            winner.heartbeat().await.expect("beat");
            let left = loser
                .orphaned_calls(DEAD_AFTER, LONG_GRACE, 100)
                .await
                .expect("orphans");
            assert!(!ids(&left).contains(&orphan.id.as_str()));
            // Given back, it is the dead owner's again, for a later pass.
            winner.release_orphan(orphan).await.expect("release");
            assert_eq!(
                plain.owner_of(&orphan.id).await.expect("owner").as_deref(),
                Some("i-dead")
            );
        }
        x.close().await;
        y.close().await;
        plain.close().await;
    }

    async fn a_claim_fails_once_the_owner_beats_again_or_the_call_ended(url: String) {
        let plain = open(&url).await;
        let me = plain.clone().owned_by("i-me");
        let owner = plain.clone().owned_by("i-owner");
        owner.heartbeat().await.expect("beat");
        let resumed = in_progress(&owner, None).await;
        let ended = in_progress(&owner, None).await;
        let streamed_elsewhere = in_progress(&owner, None).await;
        tokio::time::sleep(SILENCE).await;
        let orphans = me
            .orphaned_calls(DEAD_AFTER, LONG_GRACE, 100)
            .await
            .expect("orphans");
        assert_eq!(ids(&orphans), [&resumed, &ended, &streamed_elsewhere]);

        // Between the look and the claim: the owner beats (a long pause, not a death), a
        // callback ends one call, another instance starts one's stream.
        owner.heartbeat().await.expect("beat");
        assert!(
            !me.claim_orphan(&orphans[0], DEAD_AFTER)
                .await
                .expect("claim")
        );
        tokio::time::sleep(SILENCE).await;
        owner
            .record_status(&ended, CallStatus::Completed)
            .await
            .expect("status");
        assert!(
            !me.claim_orphan(&orphans[1], DEAD_AFTER)
                .await
                .expect("claim")
        );
        plain
            .clone()
            .owned_by("i-elsewhere")
            .take_ownership(&streamed_elsewhere)
            .await
            .expect("take over");
        assert!(
            !me.claim_orphan(&orphans[2], DEAD_AFTER)
                .await
                .expect("claim")
        );
        for id in [&resumed, &ended] {
            assert_eq!(
                plain.owner_of(id).await.expect("owner").as_deref(),
                Some("i-owner")
            );
        }
        plain.close().await;
    }
}

/// The post-call webhook's outbox (its store side), on both backends.
mod post_call_outbox {
    use super::*;

    /// Deliveries wait for a record unchanged this long.
    const SETTLE: Duration = Duration::from_millis(200);
    /// Longer than [`SETTLE`].
    const QUIET: Duration = Duration::from_millis(300);
    /// A lease no test outlives.
    const LONG_LEASE: Duration = Duration::from_secs(3600);

    on_both_backends!(
        the_first_final_status_queues_one_delivery,
        a_delivery_waits_until_the_record_stops_changing,
        one_instance_alone_claims_a_delivery_until_its_lease_runs_out,
        a_failed_attempt_waits_for_its_retry_and_a_delivered_record_is_never_claimed_again,
        queued_deliveries_survive_restart,
    );

    async fn open_with_outbox(url: &str) -> CallStore {
        open(url).await.with_post_call_outbox()
    }

    async fn claim(store: &CallStore, owner: &str, lease: Duration) -> Vec<String> {
        store
            .claim_post_calls(owner, lease, SETTLE, 100)
            .await
            .expect("claim")
            .into_iter()
            .map(|delivery| delivery.call_id)
            .collect()
    }

    async fn the_first_final_status_queues_one_delivery(url: String) {
        let store = open_with_outbox(&url).await;
        let without = open(&url).await;
        let completed = store.create(new_call(None)).await.expect("create").id;
        let failed = store.create(new_call(None)).await.expect("create").id;
        let untracked = without.create(new_call(None)).await.expect("create").id;

        store
            .record_status(&completed, CallStatus::InProgress)
            .await
            .expect("status");
        assert_eq!(
            store.post_call_state(&completed).await.expect("state"),
            None
        );
        store
            .record_status(&completed, CallStatus::Completed)
            .await
            .expect("status");
        // A late machine verdict replaces `completed` but queues nothing more.
        store
            .record_status(&completed, CallStatus::Machine)
            .await
            .expect("status");
        store.fail(&failed, "no route").await.expect("fail");
        store.fail(&failed, "again").await.expect("fail");
        without
            .record_status(&untracked, CallStatus::Completed)
            .await
            .expect("status");

        for id in [&completed, &failed] {
            let state = store.post_call_state(id).await.expect("state");
            let state = state.expect("a delivery is queued");
            assert_eq!(state.attempts, 0);
            assert_eq!(state.delivered_ms, None);
        }
        assert_eq!(
            store.post_call_state(&untracked).await.expect("state"),
            None,
            "a store without the outbox queues nothing"
        );
        tokio::time::sleep(QUIET).await;
        let mut claimed = claim(&store, "i-a", LONG_LEASE).await;
        claimed.sort();
        let mut expected = vec![completed.clone(), failed.clone()];
        expected.sort();
        assert_eq!(claimed, expected, "one delivery per ended call");
        store.close().await;
    }

    async fn a_delivery_waits_until_the_record_stops_changing(url: String) {
        let store = open_with_outbox(&url).await;
        let id = store.create(new_call(None)).await.expect("create").id;
        store
            .record_status(&id, CallStatus::Completed)
            .await
            .expect("status");
        assert!(
            claim(&store, "i-a", LONG_LEASE).await.is_empty(),
            "too soon"
        );

        // The bridge's last transcript line, written after the provider's `completed`, once
        // that alone would have let the delivery go.
        tokio::time::sleep(QUIET).await;
        store
            .append_transcript(&id, "agent", "Goodbye!")
            .await
            .expect("transcript");
        assert!(
            claim(&store, "i-a", LONG_LEASE).await.is_empty(),
            "the transcript write pushed the delivery back"
        );
        tokio::time::sleep(QUIET).await;
        assert_eq!(claim(&store, "i-a", LONG_LEASE).await, [id.as_str()]);
        let state = store
            .post_call_state(&id)
            .await
            .expect("state")
            .expect("queued");
        assert_eq!(state.attempts, 1);
        store.close().await;
    }

    async fn one_instance_alone_claims_a_delivery_until_its_lease_runs_out(url: String) {
        let store = open_with_outbox(&url).await;
        let id = store.create(new_call(None)).await.expect("create").id;
        store
            .record_status(&id, CallStatus::Completed)
            .await
            .expect("status");
        tokio::time::sleep(QUIET).await;

        // Long enough that twenty claims on a busy machine all land inside it.
        let short = Duration::from_secs(2);
        let claims = (0..20).map(|n| {
            let store = store.clone();
            async move { claim(&store, &format!("i-{n}"), short).await }
        });
        let claimed: Vec<String> = futures_util::future::join_all(claims)
            .await
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(claimed, [id.as_str()], "20 racing instances, one claim");
        assert!(claim(&store, "i-late", short).await.is_empty(), "leased");

        // Its instance died mid-attempt: once the lease is over, another takes it over.
        tokio::time::sleep(short + Duration::from_millis(100)).await;
        let taken_over = store
            .claim_post_calls("i-late", short, SETTLE, 100)
            .await
            .expect("claim");
        assert_eq!(taken_over.len(), 1);
        assert_eq!(taken_over[0].attempt, 2);
        store.close().await;
    }

    async fn a_failed_attempt_waits_for_its_retry_and_a_delivered_record_is_never_claimed_again(
        url: String,
    ) {
        let store = open_with_outbox(&url).await;
        let id = store.create(new_call(None)).await.expect("create").id;
        store
            .record_status(&id, CallStatus::Completed)
            .await
            .expect("status");
        tokio::time::sleep(QUIET).await;
        assert_eq!(claim(&store, "i-a", LONG_LEASE).await, [id.as_str()]);

        let retry_in = Duration::from_millis(300);
        // Only the lease holder's verdict counts.
        store
            .retry_post_call(&id, "i-other", Duration::ZERO, "not mine")
            .await
            .expect("retry");
        assert!(claim(&store, "i-b", LONG_LEASE).await.is_empty());
        store
            .retry_post_call(&id, "i-a", retry_in, "the receiver answered 500")
            .await
            .expect("retry");
        let state = store
            .post_call_state(&id)
            .await
            .expect("state")
            .expect("queued");
        assert_eq!(
            state.last_error.as_deref(),
            Some("the receiver answered 500")
        );
        assert!(
            claim(&store, "i-b", LONG_LEASE).await.is_empty(),
            "not due yet"
        );
        tokio::time::sleep(retry_in + Duration::from_millis(100)).await;
        let again = store
            .claim_post_calls("i-b", LONG_LEASE, SETTLE, 100)
            .await
            .expect("claim");
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempt, 2);

        store
            .mark_post_call_delivered(&id)
            .await
            .expect("delivered");
        let state = store
            .post_call_state(&id)
            .await
            .expect("state")
            .expect("queued");
        assert!(state.delivered_ms.is_some());
        assert_eq!(state.last_error, None);
        // A stale instance's late verdict and a late final status change nothing.
        store
            .retry_post_call(&id, "i-b", Duration::ZERO, "late")
            .await
            .expect("retry");
        store
            .record_status(&id, CallStatus::Machine)
            .await
            .expect("status");
        tokio::time::sleep(QUIET).await;
        assert!(
            claim(&store, "i-c", LONG_LEASE).await.is_empty(),
            "sent once"
        );

        // Giving up settles a row too.
        let other = store.create(new_call(None)).await.expect("create").id;
        store.fail(&other, "no route").await.expect("fail");
        tokio::time::sleep(QUIET).await;
        assert_eq!(claim(&store, "i-a", LONG_LEASE).await, [other.as_str()]);
        store
            .give_up_post_call(&other, "i-a", "no answer within 10000 ms")
            .await
            .expect("give up");
        let state = store
            .post_call_state(&other)
            .await
            .expect("state")
            .expect("queued");
        assert!(state.gave_up_ms.is_some() && state.delivered_ms.is_none());
        assert!(claim(&store, "i-a", Duration::ZERO).await.is_empty());
        store.close().await;
    }

    async fn queued_deliveries_survive_restart(url: String) {
        let first = open_with_outbox(&url).await;
        let id = first.create(new_call(None)).await.expect("create").id;
        first
            .record_status(&id, CallStatus::Completed)
            .await
            .expect("status");
        tokio::time::sleep(QUIET).await;
        assert_eq!(claim(&first, "i-first", LONG_LEASE).await, [id.as_str()]);
        // Stopping before the attempt started hands the row back, uncounted.
        first
            .release_post_call(&id, "i-first")
            .await
            .expect("release");
        first.close().await;

        let second = open_with_outbox(&url).await;
        let claimed = second
            .claim_post_calls("i-second", LONG_LEASE, SETTLE, 100)
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1);
        assert_eq!(
            (claimed[0].call_id.as_str(), claimed[0].attempt),
            (id.as_str(), 1)
        );
        second.close().await;
    }
}

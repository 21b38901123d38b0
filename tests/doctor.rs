//! `gemini-phone doctor`, run as the real binary against the fakes: its exit status and the
//! cause and fix on each line, for a working setup and for each way a first call fails.

mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use support::gemini::{Behaviour, DEFAULT_TIMEOUT, FakeGemini};
use support::{API_TOKEN, TEST_API_KEY, TestServer};

/// Each check's time limit in these runs; the "never answers" cases wait this long.
const CHECK_LIMIT_SECS: &str = "1";
/// No run may take longer than this, whatever it waits for.
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// One finished doctor run.
struct Run {
    status: i32,
    stdout: String,
}

impl Run {
    /// The report lines of `area`, in order, each as printed.
    fn lines(&self, area: &str) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|line| line.get(6..).is_some_and(|rest| rest.starts_with(area)))
            .collect()
    }

    /// The only line of `area`.
    fn line(&self, area: &str) -> &str {
        match self.lines(area).as_slice() {
            [only] => only,
            other => panic!(
                "expected one `{area}` line, got {other:?} in:\n{}",
                self.stdout
            ),
        }
    }

    fn summary(&self) -> &str {
        self.stdout.lines().last().unwrap_or_default()
    }
}

/// Asserts that `line` has `outcome` and mentions every one of `words`.
#[track_caller]
fn assert_line(line: &str, outcome: &str, words: &[&str]) {
    assert!(
        line.starts_with(&format!("{outcome:<4}  ")),
        "expected {outcome}: {line}"
    );
    for word in words {
        assert!(line.contains(word), "expected {word:?} in: {line}");
    }
}

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// A working configuration against `gemini`: no provider (a warning), no server running on
/// `PORT` (the public URL check skips), records in a fresh SQLite file.
fn base_vars(gemini: &FakeGemini, data: &tempfile::TempDir) -> Vec<(String, String)> {
    [
        ("GEMINI_API_KEY", TEST_API_KEY.to_owned()),
        ("GEMINI_LIVE_URL", gemini.url()),
        ("PUBLIC_URL", "https://phone.example.com".to_owned()),
        (
            "PROMPTS_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/prompts").to_owned(),
        ),
        (
            "DATABASE_URL",
            format!("sqlite://{}/records.db", data.path().display()),
        ),
        ("API_TOKEN", API_TOKEN.to_owned()),
        ("PORT", free_port().to_string()),
        ("DOCTOR_TIMEOUT_SECS", CHECK_LIMIT_SECS.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// `vars` with `name` set to `value` (or removed, for `None`).
fn with(mut vars: Vec<(String, String)>, name: &str, value: Option<&str>) -> Vec<(String, String)> {
    vars.retain(|(k, _)| k != name);
    if let Some(value) = value {
        vars.push((name.to_owned(), value.to_owned()));
    }
    vars
}

/// Runs `gemini-phone doctor` with exactly `vars` as its environment, in an empty folder
/// (so no `.env` is read).
async fn doctor(vars: &[(String, String)]) -> Run {
    let folder = tempfile::tempdir().expect("temp dir");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gemini-phone"))
        .arg("doctor")
        .env_clear()
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .current_dir(folder.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start gemini-phone doctor");
    let output = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .expect("doctor finished in time")
        .expect("doctor ran");
    let run = Run {
        status: output.status.code().expect("doctor exited"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
    };
    eprintln!(
        "--- doctor (exit {}):\n{}{}",
        run.status,
        run.stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    run
}

#[tokio::test]
async fn a_working_setup_passes_with_gemini_timed_and_set_up_as_a_call() {
    let mut gemini = FakeGemini::start(Behaviour::AnswerText).await;
    let data = tempfile::tempdir().unwrap();
    let run = doctor(&base_vars(&gemini, &data)).await;

    assert_eq!(run.status, 0);
    let configuration = run.lines("configuration");
    assert_line(
        configuration[0],
        "ok",
        &["gemini-3.8-live", "providers: none"],
    );
    assert_line(
        configuration[1],
        "warn",
        &["no provider configured", "TWILIO_ACCOUNT_SID"],
    );
    assert_eq!(configuration.len(), 2, "only the provider warning");
    assert_line(run.line("prompt"), "ok", &["inbound.md"]);
    assert_line(run.line("records"), "ok", &["sqlite", "migrations current"]);
    assert_line(run.line("tools"), "ok", &["end_call"]);
    assert_line(
        run.line("gemini"),
        "ok",
        &["handshake", " ms, setup ", " ms, first audio "],
    );
    assert_line(run.line("public url"), "skip", &["start it"]);
    assert!(
        run.summary().ends_with("ready for a first call"),
        "{}",
        run.summary()
    );

    // The session was set up as a call's is, and asked to speak with a 3.x text turn.
    let mut session = gemini.next_session(DEFAULT_TIMEOUT).await;
    assert_eq!(session.api_key().as_deref(), Some(TEST_API_KEY));
    let setup = &session.setup()["setup"];
    assert_eq!(setup["model"], "models/gemini-3.8-live");
    let prompt =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/prompts/inbound.md"))
            .unwrap();
    assert_eq!(setup["systemInstruction"]["parts"][0]["text"], prompt);
    assert_eq!(
        setup["tools"][0]["functionDeclarations"][0]["name"],
        "end_call"
    );
    let turn = session.recv(DEFAULT_TIMEOUT).await.expect("a text turn");
    assert!(turn["realtimeInput"]["text"].is_string(), "{turn}");
}

#[tokio::test]
async fn a_2_5_model_is_asked_to_speak_with_client_content() {
    let mut gemini = FakeGemini::start(Behaviour::AnswerText).await;
    let data = tempfile::tempdir().unwrap();
    let vars = with(
        base_vars(&gemini, &data),
        "GEMINI_MODEL",
        Some("gemini-2.5-flash-native-audio-latest"),
    );
    let run = doctor(&vars).await;

    assert_eq!(run.status, 0);
    assert_line(
        run.line("gemini"),
        "ok",
        &["gemini-2.5-flash-native-audio-latest"],
    );
    let mut session = gemini.next_session(DEFAULT_TIMEOUT).await;
    let turn = session.recv(DEFAULT_TIMEOUT).await.expect("a text turn");
    assert_eq!(turn["clientContent"]["turnComplete"], json!(true), "{turn}");
}

#[tokio::test]
async fn a_refused_key_is_named_with_where_to_get_one() {
    let gemini = FakeGemini::start(Behaviour::RejectHandshake(401)).await;
    let data = tempfile::tempdir().unwrap();
    for status in [401, 403] {
        gemini.set_behaviour(Behaviour::RejectHandshake(status));
        let run = doctor(&base_vars(&gemini, &data)).await;

        assert_eq!(run.status, 1);
        assert_line(
            run.line("gemini"),
            "FAIL",
            &[
                &format!("HTTP {status}"),
                "GEMINI_API_KEY is invalid",
                "Generative Language API is not enabled",
                "aistudio.google.com/apikey",
            ],
        );
        assert!(run.summary().contains("1 FAIL"), "{}", run.summary());
    }
}

#[tokio::test]
async fn close_1008_names_the_model_the_key_cannot_use() {
    let reason = "models/gemini-3.8-live is not found for API version v1beta, or is not supported for bidiGenerateContent.";
    let gemini = FakeGemini::start(Behaviour::CloseOnSetup(1008, reason.to_owned())).await;
    let data = tempfile::tempdir().unwrap();
    let run = doctor(&base_vars(&gemini, &data)).await;

    assert_eq!(run.status, 1);
    assert_line(
        run.line("gemini"),
        "FAIL",
        &[
            "the key cannot use model `gemini-3.8-live`",
            "close 1008",
            "is not found for API version v1beta",
            "set GEMINI_MODEL",
        ],
    );
}

#[tokio::test]
async fn close_1007_says_the_setup_is_invalid_and_why() {
    let reason = "* BidiGenerateContentRequest.setup.tools[0].function_declarations[1].name: Invalid function name.";
    let gemini = FakeGemini::start(Behaviour::CloseOnSetup(1007, reason.to_owned())).await;
    let data = tempfile::tempdir().unwrap();
    let run = doctor(&base_vars(&gemini, &data)).await;

    assert_eq!(run.status, 1);
    assert_line(
        run.line("gemini"),
        "FAIL",
        &["setup as invalid", "close 1007", reason, "TOOLS_FILE"],
    );
}

#[tokio::test]
async fn a_gemini_that_never_answers_is_a_network_problem_found_within_the_time_limit() {
    let gemini = FakeGemini::start(Behaviour::NeverCompleteSetup).await;
    let data = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let run = doctor(&base_vars(&gemini, &data)).await;

    assert_eq!(run.status, 1);
    assert_line(
        run.line("gemini"),
        "FAIL",
        &["no setupComplete", "within 1s", "network"],
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // Set up, but silent after the text turn.
    gemini.set_behaviour(Behaviour::Normal);
    let run = doctor(&base_vars(&gemini, &data)).await;
    assert_eq!(run.status, 1);
    assert_line(
        run.line("gemini"),
        "FAIL",
        &["no audio came within 1s of a text turn", "network"],
    );
}

#[tokio::test]
async fn a_refused_configuration_is_one_line_naming_the_variable_and_the_rest_skip() {
    let gemini = FakeGemini::start(Behaviour::AnswerText).await;
    let data = tempfile::tempdir().unwrap();
    let run = doctor(&with(base_vars(&gemini, &data), "PUBLIC_URL", None)).await;

    assert_eq!(run.status, 1);
    assert_line(
        run.line("configuration"),
        "FAIL",
        &["PUBLIC_URL: missing", "https://abc123.ngrok.app"],
    );
    for area in [
        "prompt",
        "records",
        "tools",
        "gemini",
        "providers",
        "public url",
    ] {
        assert_line(run.line(area), "skip", &["configuration is fixed"]);
    }
    assert_eq!(gemini.connection_count(), 0, "Gemini is not tried");

    let run = doctor(&with(
        base_vars(&gemini, &data),
        "DOCTOR_TIMEOUT_SECS",
        Some("soon"),
    ))
    .await;
    assert_eq!(run.status, 1);
    assert_line(run.line("configuration"), "FAIL", &["DOCTOR_TIMEOUT_SECS"]);
}

#[tokio::test]
async fn a_public_url_that_reaches_another_server_is_caught() {
    let gemini = FakeGemini::start(Behaviour::AnswerText).await;
    let data = tempfile::tempdir().unwrap();
    let local = TestServer::with_gemini(&gemini.url()).await;
    let elsewhere = TestServer::with_gemini(&gemini.url()).await;
    let vars = with(
        base_vars(&gemini, &data),
        "PORT",
        Some(&local.addr.port().to_string()),
    );

    let stale = with(vars.clone(), "PUBLIC_URL", Some(&elsewhere.http("")));
    let run = doctor(&stale).await;
    assert_eq!(run.status, 1);
    assert_line(
        run.line("public url"),
        "FAIL",
        &[
            "reaches another gemini-phone server",
            &elsewhere.app.instance_id,
            &local.app.instance_id,
            "stale tunnel URL",
            "PUBLIC_URL",
        ],
    );

    let current = with(vars, "PUBLIC_URL", Some(&local.http("")));
    let run = doctor(&current).await;
    assert_eq!(run.status, 0);
    assert_line(
        run.line("public url"),
        "ok",
        &["reaches this server", &local.app.instance_id],
    );
    assert!(
        run.lines("configuration")
            .iter()
            .any(|line| line.starts_with("warn") && line.contains("is not https")),
        "plain http is a warning"
    );
}

#[tokio::test]
async fn a_tool_host_that_does_not_resolve_is_named() {
    let gemini = FakeGemini::start(Behaviour::AnswerText).await;
    let data = tempfile::tempdir().unwrap();
    let tools = data.path().join("tools.json");
    let file = json!({"tools": [
        {"name": "lookup_order", "description": "Finds an order.", "url": "https://orders.invalid/lookup"},
        {"name": "opening_hours", "description": "Says when we are open.", "url": "http://127.0.0.1:9/hours"}
    ]});
    std::fs::write(&tools, file.to_string()).unwrap();
    let vars = with(
        base_vars(&gemini, &data),
        "TOOLS_FILE",
        Some(tools.to_str().unwrap()),
    );
    let run = doctor(&vars).await;

    assert_eq!(run.status, 1);
    assert_line(
        run.line("tools"),
        "FAIL",
        &["tool `lookup_order`", "host orders.invalid", "TOOLS_FILE"],
    );
    assert_line(run.line("gemini"), "ok", &["3 tool(s) declared"]);
}

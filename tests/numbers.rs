//! Automatic number set-up against the fake REST API: `configure` sends exactly the documented
//! updates and nothing on a second run, fails in plain words for a missing number or wrong
//! credentials, runs at start-up with `AUTO_CONFIGURE_NUMBERS`, and `doctor`'s provider lines
//! say what is wrong and how to fix it.

mod support;

use std::time::Duration;

use gemini_phone::config::Config;
use gemini_phone::doctor::{Check, Outcome, providers};
use gemini_phone::numbers::{self, Report};
use gemini_phone::telephony::registry::Registry;
use gemini_phone::telephony::rest::http_client;
use serde_json::json;
use support::TestServer;
use support::rest::{FakeRest, PLIVO_ID, PLIVO_TOKEN, TWILIO_SID, TWILIO_TOKEN};

const PUBLIC: &str = "https://phone.example.com";
const TWILIO_NUMBER: &str = "+15550009999";
const PLIVO_NUMBER: &str = "15550008888";
const WAIT: Duration = Duration::from_secs(5);

/// Which accounts a test configures.
#[derive(Clone, Copy, PartialEq)]
enum Accounts {
    Twilio,
    Plivo,
    Both,
}

/// Variables for `accounts` on the fake at `rest`, plus `extra` (later entries win).
fn vars(rest: &FakeRest, accounts: Accounts, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars = vec![
        ("AGENT", "echo".to_owned()),
        ("PUBLIC_URL", PUBLIC.to_owned()),
        ("PROVIDER_TIMEOUT_SECS", "2".to_owned()),
    ];
    if accounts != Accounts::Plivo {
        vars.extend([
            ("TWILIO_ACCOUNT_SID", TWILIO_SID.to_owned()),
            ("TWILIO_AUTH_TOKEN", TWILIO_TOKEN.to_owned()),
            ("TWILIO_PHONE_NUMBER", TWILIO_NUMBER.to_owned()),
            ("TWILIO_API_URL", rest.url()),
        ]);
    }
    if accounts != Accounts::Twilio {
        vars.extend([
            ("PLIVO_AUTH_ID", PLIVO_ID.to_owned()),
            ("PLIVO_AUTH_TOKEN", PLIVO_TOKEN.to_owned()),
            ("PLIVO_PHONE_NUMBER", PLIVO_NUMBER.to_owned()),
            ("PLIVO_API_URL", rest.url()),
        ]);
    }
    vars.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn config(rest: &FakeRest, accounts: Accounts, extra: &[(&str, &str)]) -> Config {
    let vars = vars(rest, accounts, extra);
    Config::from_lookup(|name| {
        vars.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    })
    .expect("test configuration is valid")
}

async fn configure(rest: &FakeRest, accounts: Accounts, extra: &[(&str, &str)]) -> Report {
    numbers::configure_all(&config(rest, accounts, extra)).await
}

async fn doctor(rest: &FakeRest, accounts: Accounts, extra: &[(&str, &str)]) -> Vec<Check> {
    let config = config(rest, accounts, extra);
    providers::checks(
        &config,
        &http_client(Duration::from_secs(2)).expect("HTTP client"),
    )
    .await
}

fn line(checks: &[Check], area: &str) -> Check {
    checks
        .iter()
        .find(|c| c.area == area)
        .cloned()
        .unwrap_or_else(|| panic!("no `{area}` line in {checks:#?}"))
}

fn form(request: &support::rest::Recorded) -> Vec<(&str, &str)> {
    request
        .form
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn twilio_number_path(sid: &str) -> String {
    format!("/2010-04-01/Accounts/{TWILIO_SID}/IncomingPhoneNumbers/{sid}.json")
}

fn plivo_path(rest: &str) -> String {
    format!("/v1/Account/{PLIVO_ID}/{rest}")
}

// ---------------------------------------------------------------------------------------
// configure

#[tokio::test]
async fn twilio_receives_exactly_the_documented_update_then_nothing() {
    let rest = FakeRest::start().await;
    // Twilio's filter matches partial numbers: this one contains ours and is listed first.
    let neighbour = rest.seed_twilio_number("+115550009999", Some("https://other.example/voice"));
    let sid = rest.seed_twilio_number(TWILIO_NUMBER, Some("https://old.example/voice"));

    let report = configure(&rest, Accounts::Twilio, &[]).await;
    assert!(report.succeeded(), "{report}");
    let updates = rest.updates();
    assert_eq!(updates.len(), 1, "{updates:#?}");
    assert_eq!(updates[0].path, twilio_number_path(&sid));
    assert_eq!(
        form(&updates[0]),
        [
            ("VoiceUrl", "https://phone.example.com/twilio/answer"),
            ("VoiceMethod", "POST"),
            ("StatusCallback", "https://phone.example.com/twilio/status"),
            ("StatusCallbackMethod", "POST"),
        ]
    );
    let printed = report.to_string();
    assert!(
        printed.contains(
            "twilio: +1 555 000 9999 now sends calls to https://phone.example.com/twilio/answer"
        ),
        "{printed}"
    );
    assert!(
        printed.contains("VoiceUrl was https://old.example/voice"),
        "{printed}"
    );
    assert!(
        printed.ends_with("Ready: call +1 555 000 9999 to talk to the agent\n"),
        "{printed}"
    );
    let neighbour_now = rest.twilio_number("+115550009999").expect("still there");
    assert_eq!(
        neighbour_now["voice_url"], "https://other.example/voice",
        "another number ({neighbour}) was changed"
    );

    let again = configure(&rest, Accounts::Twilio, &[]).await;
    assert!(again.succeeded(), "{again}");
    assert_eq!(rest.updates().len(), 1, "a second run sent an update");
    assert!(
        again.to_string().contains(
            "twilio: +1 555 000 9999 already pointing at https://phone.example.com/twilio/answer, nothing to change"
        ),
        "{again}"
    );
}

#[tokio::test]
async fn twilio_detaches_a_twiml_app_that_would_answer_instead() {
    let rest = FakeRest::start().await;
    let sid = rest.seed_twilio_number(TWILIO_NUMBER, None);
    let app = "AP0123456789abcdef0123456789abcdef";
    rest.edit_twilio_number(
        TWILIO_NUMBER,
        json!({"voice_url": "https://phone.example.com/twilio/answer",
               "status_callback": "https://phone.example.com/twilio/status",
               "voice_application_sid": app}),
    );
    let report = configure(&rest, Accounts::Twilio, &[]).await;
    assert!(report.succeeded(), "{report}");
    let updates = rest.updates();
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].path, twilio_number_path(&sid));
    assert_eq!(updates[0].field("VoiceApplicationSid"), Some(""));
    assert!(
        report
            .to_string()
            .contains(&format!("TwiML app {app} detached"))
    );
    assert_eq!(
        rest.twilio_number(TWILIO_NUMBER).unwrap()["voice_application_sid"],
        ""
    );
}

#[tokio::test]
async fn plivo_creates_the_application_once_then_reuses_it() {
    let rest = FakeRest::start().await;
    let other = rest.seed_plivo_app("someone-else", "https://other.example/a", "");
    rest.seed_plivo_number(PLIVO_NUMBER, None);

    let report = configure(&rest, Accounts::Plivo, &[]).await;
    assert!(report.succeeded(), "{report}");
    let updates = rest.updates();
    assert_eq!(updates.len(), 2, "{updates:#?}");
    assert_eq!(updates[0].path, plivo_path("Application/"));
    assert_eq!(
        updates[0].json,
        Some(json!({
            "app_name": "gemini-phone",
            "answer_url": "https://phone.example.com/plivo/answer",
            "answer_method": "POST",
            "hangup_url": "https://phone.example.com/plivo/hangup",
            "hangup_method": "POST",
        }))
    );
    let apps = rest.plivo_apps();
    assert_eq!(apps.len(), 2);
    let ours = apps[1]["app_id"].as_str().unwrap().to_owned();
    assert_ne!(ours, other);
    assert_eq!(
        updates[1].path,
        plivo_path(&format!("Number/{PLIVO_NUMBER}/"))
    );
    assert_eq!(updates[1].json, Some(json!({"app_id": ours})));
    assert!(
        report
            .to_string()
            .contains("created application \"gemini-phone\""),
        "{report}"
    );
    assert!(report.to_string().contains("Ready: call +1 555 000 8888"));

    let again = configure(&rest, Accounts::Plivo, &[]).await;
    assert!(again.succeeded(), "{again}");
    assert_eq!(rest.updates().len(), 2, "a second run changed something");
    assert_eq!(
        rest.plivo_apps().len(),
        2,
        "a second application was created"
    );
    assert!(
        again.to_string().contains("plivo: +1 555 000 8888 already pointing at https://phone.example.com/plivo/answer, nothing to change"),
        "{again}"
    );
}

#[tokio::test]
async fn plivo_updates_its_application_found_on_a_later_page() {
    let rest = FakeRest::start().await;
    for n in 0..21 {
        rest.seed_plivo_app(&format!("app-{n}"), "https://x.example/a", "");
    }
    let ours = rest.seed_plivo_app("gemini-phone", "https://old.ngrok.app/plivo/answer", "");
    let elsewhere = rest.plivo_apps()[3]["app_id"].as_str().unwrap().to_owned();
    rest.seed_plivo_number(PLIVO_NUMBER, Some(&elsewhere));

    let report = configure(&rest, Accounts::Plivo, &[]).await;
    assert!(report.succeeded(), "{report}");
    let updates = rest.updates();
    assert_eq!(updates.len(), 2, "{updates:#?}");
    assert_eq!(updates[0].path, plivo_path(&format!("Application/{ours}/")));
    assert_eq!(
        updates[0].json,
        Some(json!({
            "answer_url": "https://phone.example.com/plivo/answer",
            "answer_method": "POST",
            "hangup_url": "https://phone.example.com/plivo/hangup",
            "hangup_method": "POST",
        }))
    );
    assert_eq!(updates[1].json, Some(json!({"app_id": ours})));
    assert_eq!(rest.plivo_apps().len(), 22, "no application was created");
    assert!(
        report
            .to_string()
            .contains("its answer URL was https://old.ngrok.app/plivo/answer (POST)"),
        "{report}"
    );
    assert!(
        report
            .to_string()
            .contains(&format!("was application {elsewhere}"))
    );
}

#[tokio::test]
async fn plivo_only_reattaches_the_number_when_its_application_is_right() {
    let rest = FakeRest::start().await;
    let ours = rest.seed_plivo_app(
        "gemini-phone",
        "https://phone.example.com/plivo/answer",
        "https://phone.example.com/plivo/hangup",
    );
    let other = rest.seed_plivo_app("other", "https://x.example/a", "");
    rest.seed_plivo_number(PLIVO_NUMBER, Some(&other));
    let report = configure(&rest, Accounts::Plivo, &[]).await;
    assert!(report.succeeded(), "{report}");
    let updates = rest.updates();
    assert_eq!(updates.len(), 1, "{updates:#?}");
    assert_eq!(
        updates[0].path,
        plivo_path(&format!("Number/{PLIVO_NUMBER}/"))
    );
    assert_eq!(updates[0].json, Some(json!({"app_id": ours})));
}

#[tokio::test]
async fn a_number_not_on_the_account_fails_naming_it_and_changes_nothing() {
    let rest = FakeRest::start().await;
    rest.seed_twilio_number("+15550001234", None);
    let report = configure(&rest, Accounts::Both, &[]).await;
    assert!(!report.succeeded());
    assert_eq!(report.ready_line(), None);
    let printed = report.to_string();
    assert!(
        printed.contains("twilio: FAILED: +1 555 000 9999 is not a number on this Twilio account: check TWILIO_PHONE_NUMBER"),
        "{printed}"
    );
    assert!(
        printed.contains("plivo: FAILED: +1 555 000 8888 is not a number on this Plivo account: check PLIVO_PHONE_NUMBER"),
        "{printed}"
    );
    assert!(rest.updates().is_empty(), "{:#?}", rest.updates());
    assert!(
        rest.plivo_apps().is_empty(),
        "an application was left behind"
    );
}

#[tokio::test]
async fn wrong_credentials_fail_naming_the_variables() {
    let rest = FakeRest::start().await;
    rest.seed_twilio_number(TWILIO_NUMBER, None);
    rest.seed_plivo_number(PLIVO_NUMBER, None);
    let report = configure(
        &rest,
        Accounts::Both,
        &[
            ("TWILIO_AUTH_TOKEN", "wrong"),
            ("PLIVO_AUTH_TOKEN", "wrong"),
        ],
    )
    .await;
    assert!(!report.succeeded());
    let printed = report.to_string();
    for expected in [
        "twilio: FAILED: Twilio refused the credentials (HTTP 401): check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
        "plivo: FAILED: Plivo refused the credentials (HTTP 401): check PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN",
    ] {
        assert!(printed.contains(expected), "{printed}");
    }
    assert!(rest.updates().is_empty());
}

#[tokio::test]
async fn a_local_public_url_or_no_provider_is_refused_before_any_request() {
    let rest = FakeRest::start().await;
    rest.seed_twilio_number(TWILIO_NUMBER, None);
    let report = configure(
        &rest,
        Accounts::Twilio,
        &[("PUBLIC_URL", "http://localhost:8000")],
    )
    .await;
    assert!(!report.succeeded());
    assert!(report.to_string().contains("PUBLIC_URL"), "{report}");
    assert!(rest.requests().is_empty());

    let config = Config::from_lookup(|name| match name {
        "AGENT" => Some("echo".into()),
        "PUBLIC_URL" => Some(PUBLIC.into()),
        _ => None,
    })
    .unwrap();
    let none = numbers::configure_all(&config).await;
    assert!(!none.succeeded());
    assert!(
        none.to_string().contains("no provider is configured"),
        "{none}"
    );
}

/// Runs `gemini-phone configure` with exactly `vars` in an empty directory (so no `.env` is
/// read), off the runtime that serves the fake.
async fn run_configure(vars: Vec<(String, String)>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let workdir = tempfile::tempdir().expect("temp dir");
        std::process::Command::new(env!("CARGO_BIN_EXE_gemini-phone"))
            .arg("configure")
            .env_clear()
            .envs(vars)
            .current_dir(workdir.path())
            .output()
            .expect("run gemini-phone configure")
    })
    .await
    .expect("configure finished")
}

#[tokio::test]
async fn the_configure_command_prints_the_lines_and_exits_by_the_outcome() {
    let rest = FakeRest::start().await;
    rest.seed_twilio_number(TWILIO_NUMBER, None);

    let ok = run_configure(vars(&rest, Accounts::Twilio, &[])).await;
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("Ready: call +1 555 000 9999 to talk to the agent"),
        "{stdout}"
    );
    assert_eq!(rest.updates().len(), 1);

    let failed = run_configure(vars(
        &rest,
        Accounts::Twilio,
        &[("TWILIO_PHONE_NUMBER", "+15550000000")],
    ))
    .await;
    let stdout = String::from_utf8_lossy(&failed.stdout);
    assert_eq!(failed.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("+1 555 000 0000 is not a number on this Twilio account"),
        "{stdout}"
    );
    assert!(!stdout.contains("Ready"), "{stdout}");
}

// ---------------------------------------------------------------------------------------
// AUTO_CONFIGURE_NUMBERS at start-up

async fn start_server(rest: &FakeRest, extra: &[(&str, &str)]) -> TestServer {
    let vars = vars(rest, Accounts::Both, extra);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TestServer::start(&vars).await
}

async fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

#[tokio::test]
async fn auto_configure_points_both_numbers_here_at_start_up() {
    let rest = FakeRest::start().await;
    rest.seed_twilio_number(TWILIO_NUMBER, Some("https://old.example/voice"));
    rest.seed_plivo_number(PLIVO_NUMBER, None);
    let server = start_server(&rest, &[("AUTO_CONFIGURE_NUMBERS", "true")]).await;
    let twilio_set = wait_for(|| {
        rest.twilio_number(TWILIO_NUMBER)
            .is_some_and(|n| n["voice_url"] == "https://phone.example.com/twilio/answer")
    })
    .await;
    assert!(twilio_set, "{:#?}", rest.requests());
    let plivo_set = wait_for(|| {
        rest.plivo_number(PLIVO_NUMBER)
            .is_some_and(|n| n["application"].is_string())
    })
    .await;
    assert!(plivo_set, "{:#?}", rest.requests());
    assert_eq!(server.health().await["status"], "ok");
    server.stop().await;
}

#[tokio::test]
async fn a_start_up_failure_is_logged_and_the_server_keeps_serving() {
    let rest = FakeRest::start().await;
    let server = start_server(
        &rest,
        &[
            ("AUTO_CONFIGURE_NUMBERS", "true"),
            ("TWILIO_AUTH_TOKEN", "wrong"),
        ],
    )
    .await;
    // The job ran: it asked for both numbers (Twilio with the wrong token).
    let asked = wait_for(|| {
        let requests = rest.requests();
        requests
            .iter()
            .any(|r| r.path.contains("IncomingPhoneNumbers"))
            && requests.iter().any(|r| r.path.contains("/Number/"))
    })
    .await;
    assert!(asked, "{:#?}", rest.requests());
    assert!(rest.updates().is_empty());
    assert_eq!(server.health().await["status"], "ok");
    server.stop().await;
}

#[tokio::test]
async fn without_auto_configure_start_up_leaves_the_numbers_alone() {
    let rest = FakeRest::start().await;
    rest.seed_twilio_number(TWILIO_NUMBER, Some("https://old.example/voice"));
    let server = start_server(&rest, &[]).await;
    assert_eq!(server.health().await["status"], "ok");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rest.requests().is_empty(), "{:#?}", rest.requests());
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// doctor's provider lines

fn outcomes(checks: &[Check]) -> Vec<(String, Outcome)> {
    checks.iter().map(|c| (c.area.clone(), c.outcome)).collect()
}

#[tokio::test]
async fn doctor_is_ok_when_both_numbers_point_here() {
    let rest = FakeRest::start().await;
    rest.seed_twilio_number(TWILIO_NUMBER, None);
    rest.seed_plivo_number(PLIVO_NUMBER, None);
    assert!(configure(&rest, Accounts::Both, &[]).await.succeeded());
    let checks = doctor(&rest, Accounts::Both, &[]).await;
    let expected: Vec<(String, Outcome)> = [
        "twilio account",
        "twilio number",
        "twilio webhook",
        "plivo account",
        "plivo number",
        "plivo webhook",
    ]
    .iter()
    .map(|a| (a.to_string(), Outcome::Ok))
    .collect();
    assert_eq!(outcomes(&checks), expected, "{checks:#?}");
    assert!(
        line(&checks, "twilio webhook")
            .detail
            .contains("calls to +1 555 000 9999 reach https://phone.example.com/twilio/answer")
    );
    let updates = rest.updates().len();
    let _ = doctor(&rest, Accounts::Both, &[]).await;
    assert_eq!(rest.updates().len(), updates, "doctor changed something");
}

#[tokio::test]
async fn doctor_fails_on_wrong_credentials_and_skips_what_depends_on_them() {
    let rest = FakeRest::start().await;
    rest.seed_twilio_number(TWILIO_NUMBER, None);
    let checks = doctor(&rest, Accounts::Twilio, &[("TWILIO_AUTH_TOKEN", "wrong")]).await;
    let account = line(&checks, "twilio account");
    assert_eq!(account.outcome, Outcome::Fail);
    assert!(
        account
            .detail
            .contains("check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"),
        "{}",
        account.detail
    );
    assert_eq!(line(&checks, "twilio number").outcome, Outcome::Skip);
    assert_eq!(line(&checks, "twilio webhook").outcome, Outcome::Skip);
    let plivo = line(&checks, "plivo account");
    assert_eq!(plivo.outcome, Outcome::Skip, "unconfigured provider");
    assert!(plivo.detail.contains("not configured"));
}

#[tokio::test]
async fn doctor_fails_on_a_missing_number_naming_it() {
    let rest = FakeRest::start().await;
    let checks = doctor(&rest, Accounts::Both, &[]).await;
    assert_eq!(line(&checks, "twilio account").outcome, Outcome::Ok);
    for (provider, number, variable) in [
        ("twilio", "+1 555 000 9999", "TWILIO_PHONE_NUMBER"),
        ("plivo", "+1 555 000 8888", "PLIVO_PHONE_NUMBER"),
    ] {
        let line_ = line(&checks, &format!("{provider} number"));
        assert_eq!(line_.outcome, Outcome::Fail, "{}", line_.detail);
        assert!(
            line_.detail.contains(number) && line_.detail.contains(variable),
            "{}",
            line_.detail
        );
        assert_eq!(
            line(&checks, &format!("{provider} webhook")).outcome,
            Outcome::Skip
        );
    }
}

#[tokio::test]
async fn doctor_says_where_a_webhook_points_instead_and_how_to_fix_it() {
    let rest = FakeRest::start().await;
    rest.seed_twilio_number(TWILIO_NUMBER, Some("https://old.ngrok.app/twilio/answer"));
    let stale = rest.seed_plivo_app("mine", "https://old.ngrok.app/plivo/answer", "");
    rest.seed_plivo_number(PLIVO_NUMBER, Some(&stale));
    let checks = doctor(&rest, Accounts::Both, &[]).await;

    let twilio = line(&checks, "twilio webhook");
    assert_eq!(twilio.outcome, Outcome::Fail);
    assert!(
        twilio.detail.contains(
            "go to https://old.ngrok.app/twilio/answer (POST) instead of https://phone.example.com/twilio/answer (POST)"
        ),
        "{}",
        twilio.detail
    );
    assert!(twilio.detail.contains("gemini-phone configure"));

    let plivo = line(&checks, "plivo webhook");
    assert_eq!(plivo.outcome, Outcome::Fail);
    assert!(
        plivo.detail.contains(&format!(
            "application \"mine\" ({stale}): https://old.ngrok.app/plivo/answer (POST)"
        )),
        "{}",
        plivo.detail
    );
    assert!(plivo.detail.contains("gemini-phone configure"));
    assert!(rest.updates().is_empty(), "doctor changed something");
}

#[tokio::test]
async fn doctor_notes_a_trial_account_and_a_number_with_no_application() {
    let rest = FakeRest::start().await;
    rest.set_twilio_account_type("Trial");
    rest.seed_twilio_number(TWILIO_NUMBER, None);
    rest.seed_plivo_number(PLIVO_NUMBER, None);
    let checks = doctor(&rest, Accounts::Both, &[]).await;
    let account = line(&checks, "twilio account");
    assert_eq!(account.outcome, Outcome::Warn);
    assert!(account.detail.contains("trial"), "{}", account.detail);
    let plivo = line(&checks, "plivo webhook");
    assert_eq!(plivo.outcome, Outcome::Fail);
    assert!(
        plivo.detail.contains("no application attached"),
        "{}",
        plivo.detail
    );
}

#[test]
fn the_registry_offers_number_set_up_per_configured_provider() {
    gemini_phone::telephony::rest::install_crypto_provider();
    let config = Config::from_lookup(|name| match name {
        "AGENT" => Some("echo".into()),
        "PUBLIC_URL" => Some(PUBLIC.into()),
        "PLIVO_AUTH_ID" => Some(PLIVO_ID.into()),
        "PLIVO_AUTH_TOKEN" => Some(PLIVO_TOKEN.into()),
        _ => None,
    })
    .unwrap();
    let registry = Registry::from_config(
        &config,
        &http_client(Duration::from_secs(1)).expect("HTTP client"),
    );
    assert!(registry.number_setup("twilio").is_none());
    let plivo = registry.number_setup("plivo").expect("plivo");
    assert_eq!(plivo.provider(), "plivo");
    assert_eq!(
        plivo.wanted(PUBLIC).answer.url,
        "https://phone.example.com/plivo/answer"
    );
    assert_eq!(registry.number_setups().len(), 1);
}
